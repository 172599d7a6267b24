use serde_json::{Value, json};

use super::*;

/// A CRD in the shape operators ship: one served storage version with a status and scale
/// subresource and a printer column.
fn widget_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": [
                    "size"
                ],
                "properties": {
                    "size": {
                        "type": "string",
                        "enum": [
                            "small",
                            "large"
                        ]
                    },
                    "replicas": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 10,
                        "default": 1
                    },
                    "name": {
                        "type": "string",
                        "pattern": "^[a-z]+$",
                        "maxLength": 8
                    },
                    "port": {
                        "x-kubernetes-int-or-string": true
                    },
                    "tags": {
                        "type": "array",
                        "maxItems": 2,
                        "items": {
                            "type": "string",
                            "minLength": 1
                        }
                    },
                    "labels": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "string"
                        }
                    },
                    "options": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true
                    },
                    "policy": {
                        "type": "object",
                        "default": {},
                        "properties": {
                            "mode": {
                                "type": "string",
                                "default": "strict"
                            }
                        }
                    },
                    "template": {
                        "type": "object",
                        "x-kubernetes-embedded-resource": true,
                        "x-kubernetes-preserve-unknown-fields": true
                    },
                    "created": {
                        "type": "string",
                        "format": "date-time"
                    },
                    "ports": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": [
                            "name"
                        ],
                        "items": {
                            "type": "object",
                            "required": [
                                "name"
                            ],
                            "properties": {
                                "name": {
                                    "type": "string"
                                }
                            }
                        }
                    }
                }
            },
            "status": {
                "type": "object",
                "properties": {
                    "replicas": {
                        "type": "integer"
                    }
                }
            }
        }
    })
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wg"]},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
                },
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "string", "jsonPath": ".spec.size"}
                ],
                "schema": {"openAPIV3Schema": widget_schema()}
            }]
        }
    })
}

fn widget(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})
}

fn definition() -> Definition {
    Definition::parse(&widget_crd()).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// Prepares and validates a custom resource: (errors as text, pruned paths, the result).
fn check(object: Value) -> (Vec<String>, Vec<String>, Value) {
    let d = definition();
    let v = d.served("v1").unwrap();
    let mut object = object;
    let pruned = d.prepare(v, &mut object);
    let errors = d.validate(v, &object);
    (
        errors.iter().map(ToString::to_string).collect(),
        pruned.iter().map(ToString::to_string).collect(),
        object,
    )
}

fn crd_errors(crd: &Value) -> Vec<String> {
    match Definition::parse(crd) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_definition_is_read_with_kubernetes_defaults() {
    let d = definition();
    assert_eq!(d.name, "widgets.example.com");
    assert_eq!(d.names.singular, "widget");
    assert_eq!(d.names.list_kind, "WidgetList");
    assert!(d.namespaced);
    let v = d.storage();
    assert!(v.status);
    assert_eq!(
        v.scale.as_ref().unwrap().spec_replicas_path,
        ".spec.replicas"
    );
    assert_eq!(v.printer_columns[0].json_path, ".spec.size");
    assert_eq!(d.api_version("v1"), "example.com/v1");
}

#[test]
fn a_valid_resource_gets_its_defaults_and_loses_unknown_fields() {
    let (errors, pruned, object) = check(widget(json!({
        "size": "small",
        "bogus": 1,
        "options": {"anything": {"goes": true}},
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1}, "spec": {"x": 1}},
        "port": "http",
        "labels": {"a": "b"},
        "created": "2026-12-07T12:00:00Z",
    })));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(pruned, ["spec.template.metadata.junk", "spec.bogus"]);
    assert_eq!(object["spec"]["replicas"], 1);
    assert_eq!(object["spec"]["policy"], json!({"mode": "strict"}));
    assert_eq!(object["spec"]["options"]["anything"]["goes"], true);
    assert_eq!(object["spec"]["template"]["spec"]["x"], 1);
    assert!(object["spec"].get("bogus").is_none());
    assert_eq!(object["metadata"]["name"], "w");
}

#[test]
fn null_fields_take_their_default_or_go() {
    let (errors, _, object) = check(widget(
        json!({"size": "large", "replicas": null, "name": null}),
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(object["spec"]["replicas"], 1);
    assert!(object["spec"].get("name").is_none());
}

#[test]
fn every_violation_is_named_with_its_field_in_kubernetes_words() {
    let (errors, _, _) = check(widget(json!({
        "replicas": "two",
        "name": "Has-Upper-And-Long",
        "port": true,
        "tags": ["a", "", "c"],
        "labels": {"a": 1},
        "created": "yesterday",
        "ports": [{"name": "a"}, {"name": "a"}],
    })));
    let expected = [
        "spec.size: Required value",
        "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        "spec.name: Too long: may not be more than 8 bytes",
        "spec.name: Invalid value: \"Has-Upper-And-Long\": spec.name in body should match '^[a-z]+$'",
        "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
        "spec.tags: Too many: 3: must have at most 2 items",
        "spec.tags[1]: Invalid value: \"\": spec.tags[1] in body should be at least 1 chars long",
        "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
        "spec.created: Invalid value: \"yesterday\": spec.created in body must be of type date-time: \"yesterday\"",
        "spec.ports[1]: Duplicate value: \"a\"",
    ];
    assert_eq!(errors, expected);
}

#[test]
fn enums_bounds_and_embedded_resources() {
    let (errors, _, _) = check(widget(json!({
        "size": "huge",
        "replicas": 11,
        "template": {"metadata": {"name": "Bad_Name"}},
    })));
    assert_eq!(
        errors,
        [
            "spec.size: Unsupported value: \"huge\": supported values: \"small\", \"large\"",
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
            "spec.template.apiVersion: Required value",
            "spec.template.kind: Required value",
            "spec.template.metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        ]
    );
    let (errors, _, _) = check(widget(json!({"size": "small", "replicas": -1})));
    assert_eq!(
        errors,
        [
            "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"
        ]
    );
}

#[test]
fn the_resource_itself_must_name_its_kind_version_and_a_valid_name() {
    let (errors, _, _) = check(json!({
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "Not Valid"},
        "spec": {"size": "small"}
    }));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("kind: Invalid value: \"Gadget\": must be Widget"));
    assert!(errors[1].starts_with("metadata.name: Invalid value: \"Not Valid\""));
    let (errors, _, _) = check(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}, "spec": {"size": "small"}}),
    );
    assert_eq!(
        errors,
        ["metadata.name: Required value: name or generateName is required"]
    );
}

#[test]
fn junctors_validate_values() {
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["choice"] = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        "not": {"required": ["a", "b"]}
    });
    let d = Definition::parse(&crd).unwrap_or_else(|e| panic!("{e:#?}"));
    let v = d.served("v1").unwrap();
    let ok = widget(json!({"size": "small", "choice": {"a": "x"}}));
    assert!(d.validate(v, &ok).is_empty());
    let both = widget(json!({"size": "small", "choice": {"a": "x", "b": "y"}}));
    let errors: Vec<String> = d
        .validate(v, &both)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("must validate one and only one schema (oneOf)"));
    assert!(errors[1].contains("must not validate the schema (not)"));
    let neither = widget(json!({"size": "small", "choice": {}}));
    assert_eq!(d.validate(v, &neither).len(), 1);
}

#[test]
fn formats_that_are_cheap_are_checked() {
    use super::value::validate;
    for (format, good, bad) in [
        ("date", "2026-12-07", "2026-13-01"),
        ("byte", "aGVsbG8=", "not base64!"),
        ("ipv4", "10.0.0.1", "10.0.0"),
        ("ipv6", "fd00::1", "fd00:::1"),
        ("cidr", "10.0.0.0/8", "10.0.0.0/33"),
        ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567"),
        ("hostname", "db.internal", "DB_internal"),
        ("duration", "1h30m", "90 minutes"),
        ("email", "a@example.com", "nobody"),
        ("uri", "https://example.com/x", "example.com"),
        ("mac", "00:1a:2b:3c:4d:5e", "00:1a:2b"),
    ] {
        let schema = Schema::parse(
            &json!({"type": "object", "properties": {"f": {"type": "string", "format": format}}}),
            &FieldPath::default(),
        )
        .unwrap();
        let at = FieldPath::default();
        assert!(
            validate(&schema, &json!({"f": good}), &at).is_empty(),
            "{format} {good}"
        );
        assert_eq!(
            validate(&schema, &json!({"f": bad}), &at).len(),
            1,
            "{format} {bad}"
        );
    }
}

#[test]
fn a_definition_with_wrong_names_is_refused_with_every_reason() {
    let mut crd = widget_crd();
    crd["metadata"]["name"] = json!("widget.example.com");
    crd["spec"]["group"] = json!("example");
    crd["spec"]["names"]["plural"] = json!("Widgets");
    crd["spec"]["names"]["listKind"] = json!("Widget");
    crd["spec"]["names"]["shortNames"] = json!(["w g"]);
    crd["spec"]["scope"] = json!("Global");
    let errors = crd_errors(&crd);
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.group",
            "spec.names.plural",
            "spec.names.listKind",
            "spec.names.shortNames[0]",
            "metadata.name",
            "spec.scope"
        ],
        "{errors:#?}"
    );
    assert!(errors[0].contains("should be a domain with at least one dot"));
    assert!(errors[4].contains("must be spec.names.plural+\".\"+spec.group (`Widgets.example`)"));
}

#[test]
fn exactly_one_storage_version() {
    let mut crd = widget_crd();
    let mut v2 = crd["spec"]["versions"][0].clone();
    v2["name"] = json!("v2");
    crd["spec"]["versions"].as_array_mut().unwrap().push(v2);
    let errors = crd_errors(&crd);
    assert_eq!(
        errors,
        [
            "spec.versions: Invalid value: 2: must have exactly one version marked as storage version (found 2)"
        ]
    );
    crd["spec"]["versions"][1]["storage"] = json!(false);
    crd["spec"]["versions"][1]["served"] = json!(false);
    let d = Definition::parse(&crd).unwrap();
    assert_eq!(d.served_names(), ["v1"]);
    assert!(d.served("v2").is_none());
    crd["spec"]["versions"][1]["name"] = json!("v1");
    assert!(crd_errors(&crd)[0].starts_with("spec.versions[1].name: Duplicate value: \"v1\""));
}

#[test]
fn schemas_must_be_structural() {
    let base = "spec.versions[0].schema.openAPIV3Schema";
    let cases = [
        (
            json!(null),
            format!("{base}: Required value: schemas are required"),
        ),
        (
            json!({"type": "array", "items": {"type": "string"}}),
            format!("{base}.type: Invalid value: \"array\": must be object at the root"),
        ),
        (
            json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}}),
            format!(
                "{base}.properties.spec.type: Required value: must not be empty for specified fields"
            ),
        ),
        (
            json!({"type": "object", "properties": {"spec": {"$ref": "#/definitions/x", "type": "object"}}}),
            format!(
                "{base}.properties.spec[\"$ref\"]: Forbidden: $ref is not supported in CustomResourceDefinitions"
            ),
        ),
        (
            json!({"type": "object", "properties": {"spec": {"type": "object", "additionalProperties": false}}}),
            format!(
                "{base}.properties.spec.additionalProperties: Forbidden: additionalProperties cannot be set to false"
            ),
        ),
        (
            json!({"type": "object", "properties": {"l": {"type": "array"}}}),
            format!("{base}.properties.l.items: Required value: must be specified"),
        ),
        (
            json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}),
            format!(
                "{base}.properties.metadata.properties.labels: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
            ),
        ),
        (
            json!({"type": "object", "properties": {"s": {"type": "object", "anyOf": [{"type": "object", "required": ["a"]}]}}}),
            format!("{base}.properties.s.anyOf[0].type: Forbidden: must be empty to be structural"),
        ),
        (
            json!({"type": "object", "properties": {"n": {"type": "integer", "default": "one"}}}),
            format!(
                "{base}.properties.n.default: Invalid value: \"one\": Invalid value: \"string\": <root> in body must be of type integer: \"string\""
            ),
        ),
        (
            json!({"type": "object", "properties": {"o": {"type": "object", "default": {"x": 1}, "properties": {"y": {"type": "integer"}}}}}),
            format!(
                "{base}.properties.o.default: Invalid value: {{\"x\":1}}: must not have fields the schema does not specify (`x` would be pruned)"
            ),
        ),
        (
            json!({"type": "object", "properties": {"s": {"type": "string", "pattern": "(["}}}),
            format!(
                "{base}.properties.s.pattern: Invalid value: \"([\": must be a valid regular expression"
            ),
        ),
        (
            json!({"type": "object", "properties": {"l": {"type": "array", "uniqueItems": true, "items": {"type": "string"}}}}),
            format!(
                "{base}.properties.l.uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic; use x-kubernetes-list-type: set"
            ),
        ),
    ];
    for (schema, expected) in cases {
        let mut crd = widget_crd();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema.clone();
        let errors = crd_errors(&crd);
        assert_eq!(errors, [expected], "{schema}");
    }
    // The int-or-string pattern is allowed inside anyOf.
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({
        "type": "object",
        "properties": {"port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}}
    });
    assert!(crd_errors(&crd).is_empty());
}

#[test]
fn printer_columns_and_scale_paths_are_checked() {
    let mut crd = widget_crd();
    let v = &mut crd["spec"]["versions"][0];
    v["additionalPrinterColumns"] = json!([
        {"name": "Size", "type": "text", "jsonPath": "spec.size"},
        {"name": "Size", "type": "string", "jsonPath": ".spec.size", "format": "fancy"}
    ]);
    v["subresources"]["scale"] =
        json!({"specReplicasPath": ".status.replicas", "statusReplicasPath": ".status.replicas"});
    let fields: Vec<String> = crd_errors(&crd)
        .iter()
        .map(|e| e.split(':').next().unwrap().to_string())
        .collect();
    let at = "spec.versions[0]";
    assert_eq!(
        fields,
        [
            format!("{at}.subresources.scale.specReplicasPath"),
            format!("{at}.additionalPrinterColumns[0].type"),
            format!("{at}.additionalPrinterColumns[0].jsonPath"),
            format!("{at}.additionalPrinterColumns[1].format"),
            format!("{at}.additionalPrinterColumns[1].name"),
        ]
    );
}

#[test]
fn a_catalog_finds_by_version_and_refuses_a_second_claim_on_a_kind() {
    let mut catalog = Catalog::default();
    catalog.add(definition()).unwrap();
    assert!(
        matches!(catalog.lookup("example.com/v1", "Widget"), Lookup::Found(_, v) if v.name == "v1")
    );
    assert!(matches!(
        catalog.lookup("example.com/v2", "Widget"),
        Lookup::VersionNotServed(_)
    ));
    assert!(matches!(
        catalog.lookup("other.com/v1", "Widget"),
        Lookup::Unknown
    ));
    let mut again = widget_crd();
    again["metadata"]["name"] = json!("gizmos.example.com");
    again["spec"]["names"]["plural"] = json!("gizmos");
    let err = catalog.add(Definition::parse(&again).unwrap()).unwrap_err();
    assert!(err.contains("as widgets.example.com already does"), "{err}");
    // The same definition again replaces it.
    catalog.add(definition()).unwrap();
    assert_eq!(catalog.definitions().count(), 1);
}
