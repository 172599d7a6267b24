//! A CustomResourceDefinition version's `openAPIV3Schema`, read into a tree and checked against
//! the rules of a structural schema (every specified field has a type, no `$ref`, value
//! validation only inside `allOf`/`anyOf`/`oneOf`/`not`, `metadata` limited to `name` and
//! `generateName`, defaults that validate and survive pruning).

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::error::{ErrorKind, FieldError};
use crate::manifest::report::FieldPath;

/// The JSON types a structural schema may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Type {
    fn parse(s: &str) -> Option<Type> {
        Some(match s {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
        }
    }
}

/// What `additionalProperties` says.
#[derive(Debug, Clone, Default)]
pub enum Additional {
    /// Not given: only `properties` are known.
    #[default]
    Unset,
    /// `true`: any value (a map of anything).
    Any,
    /// A map whose values follow this schema.
    Schema(Box<Schema>),
}

/// One node of a structural schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub ty: Option<Type>,
    pub format: Option<String>,
    pub description: Option<String>,
    pub properties: BTreeMap<String, Schema>,
    pub additional: Additional,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    pub enumeration: Option<Vec<Value>>,
    pub pattern: Option<Regex>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub nullable: bool,
    pub default: Option<Value>,
    pub int_or_string: bool,
    pub preserve_unknown_fields: bool,
    pub embedded_resource: bool,
    /// `x-kubernetes-list-type`: `atomic`, `set` or `map`.
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
}

/// Keywords a structural schema must not use anywhere.
const FORBIDDEN: &[(&str, &str)] = &[
    ("$ref", "$ref is not supported in CustomResourceDefinitions"),
    ("$schema", "$schema is not supported"),
    ("id", "id is not supported"),
    ("definitions", "definitions are not supported"),
    ("dependencies", "dependencies are not supported"),
    ("patternProperties", "patternProperties are not supported"),
    ("additionalItems", "additionalItems are not supported"),
];

/// Where in the tree a node sits, for the rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The root of the schema.
    Root,
    /// `properties.metadata` of the root (or of an embedded resource).
    Metadata,
    /// Inside `metadata`: only `name` and `generateName` are allowed there.
    InMetadata,
    /// A property, `items` or `additionalProperties` of the structural part.
    Field,
    /// Inside `allOf`/`anyOf`/`oneOf`/`not`: value validation only.
    Junctor,
}

impl Schema {
    /// Reads an `openAPIV3Schema` and checks that it is structural, its defaults not yet
    /// (`Schema::parse` in `value.rs` does both). `at` is where the schema sits in its
    /// CustomResourceDefinition (errors name fields from there).
    pub(super) fn parse_structure(
        value: &Value,
        at: &FieldPath,
    ) -> Result<Schema, Vec<FieldError>> {
        let mut errors = Vec::new();
        let schema = read(value, at, Place::Root, false, &mut errors);
        if errors.is_empty() {
            match schema.ty {
                Some(Type::Object) => {}
                Some(other) => errors.push(FieldError::invalid(
                    &at.child("type"),
                    &Value::String(other.name().into()),
                    "must be object at the root".into(),
                )),
                None => errors.push(FieldError::required(
                    &at.child("type"),
                    "must be object at the root",
                )),
            }
        }
        if errors.is_empty() {
            Ok(schema)
        } else {
            Err(errors)
        }
    }

    /// The schema of the property `name` of an object node: a declared property or the
    /// `additionalProperties` schema.
    pub fn property(&self, name: &str) -> Option<&Schema> {
        self.properties.get(name).or(match &self.additional {
            Additional::Schema(s) => Some(s),
            _ => None,
        })
    }
}

fn read(
    value: &Value,
    at: &FieldPath,
    place: Place,
    in_int_or_string: bool,
    errors: &mut Vec<FieldError>,
) -> Schema {
    let Some(obj) = value.as_object() else {
        errors.push(FieldError::invalid(
            at,
            value,
            "must be a schema object".into(),
        ));
        return Schema::default();
    };
    let mut s = Schema::default();
    for (key, why) in FORBIDDEN {
        if obj.contains_key(*key) {
            errors.push(FieldError::forbidden(&at.child(key), why));
        }
    }
    let flag = |key: &str, errors: &mut Vec<FieldError>| -> bool {
        match obj.get(key) {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(other) => {
                errors.push(FieldError::invalid(
                    &at.child(key),
                    other,
                    "must be a boolean".into(),
                ));
                false
            }
        }
    };
    let string = |key: &str, errors: &mut Vec<FieldError>| -> Option<String> {
        match obj.get(key) {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                errors.push(FieldError::invalid(
                    &at.child(key),
                    other,
                    "must be a string".into(),
                ));
                None
            }
        }
    };
    let count = |key: &str, errors: &mut Vec<FieldError>| -> Option<u64> {
        let v = obj.get(key)?;
        match v.as_u64() {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError::invalid(
                    &at.child(key),
                    v,
                    "must be a non-negative integer".into(),
                ));
                None
            }
        }
    };
    let number = |key: &str, errors: &mut Vec<FieldError>| -> Option<f64> {
        let v = obj.get(key)?;
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError::invalid(
                    &at.child(key),
                    v,
                    "must be a number".into(),
                ));
                None
            }
        }
    };

    s.int_or_string = flag("x-kubernetes-int-or-string", errors);
    s.embedded_resource = flag("x-kubernetes-embedded-resource", errors);
    s.nullable = flag("nullable", errors);
    s.exclusive_minimum = flag("exclusiveMinimum", errors);
    s.exclusive_maximum = flag("exclusiveMaximum", errors);
    match obj.get("x-kubernetes-preserve-unknown-fields") {
        None => {}
        Some(Value::Bool(true)) => s.preserve_unknown_fields = true,
        Some(other) => errors.push(FieldError::invalid(
            &at.child("x-kubernetes-preserve-unknown-fields"),
            other,
            "must be true or undefined".into(),
        )),
    }
    if let Some(ty) = string("type", errors) {
        match Type::parse(&ty) {
            Some(t) => s.ty = Some(t),
            None if ty.is_empty() => {}
            None => errors.push(FieldError::new(
                ErrorKind::NotSupported,
                &at.child("type"),
                Some(&Value::String(ty)),
                "supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"".into(),
            )),
        }
    }
    s.format = string("format", errors);
    s.description = string("description", errors);
    if let Some(p) = string("pattern", errors) {
        match Regex::new(&p) {
            Ok(re) => s.pattern = Some(re),
            Err(_) => errors.push(FieldError::invalid(
                &at.child("pattern"),
                &Value::String(p),
                "must be a valid regular expression".into(),
            )),
        }
    }
    s.minimum = number("minimum", errors);
    s.maximum = number("maximum", errors);
    s.multiple_of = number("multipleOf", errors);
    if s.multiple_of.is_some_and(|m| m <= 0.0) {
        errors.push(FieldError::invalid(
            &at.child("multipleOf"),
            &obj["multipleOf"],
            "must be greater than zero".into(),
        ));
        s.multiple_of = None;
    }
    s.min_length = count("minLength", errors);
    s.max_length = count("maxLength", errors);
    s.min_items = count("minItems", errors);
    s.max_items = count("maxItems", errors);
    s.min_properties = count("minProperties", errors);
    s.max_properties = count("maxProperties", errors);
    if obj.get("uniqueItems") == Some(&Value::Bool(true)) {
        errors.push(FieldError::forbidden(
            &at.child("uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic; use x-kubernetes-list-type: set",
        ));
    }
    match obj.get("required") {
        None => {}
        Some(Value::Array(names)) if names.iter().all(Value::is_string) => {
            s.required = names
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
        }
        Some(other) => errors.push(FieldError::invalid(
            &at.child("required"),
            other,
            "must be a list of field names".into(),
        )),
    }
    match obj.get("enum") {
        None => {}
        Some(Value::Array(values)) => s.enumeration = Some(values.clone()),
        Some(other) => errors.push(FieldError::invalid(
            &at.child("enum"),
            other,
            "must be a list".into(),
        )),
    }
    s.default = obj.get("default").cloned();
    s.list_type = string("x-kubernetes-list-type", errors);
    if let Some(keys) = obj.get("x-kubernetes-list-map-keys") {
        match keys.as_array() {
            Some(list) if list.iter().all(Value::is_string) => {
                s.list_map_keys = list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect();
            }
            _ => errors.push(FieldError::invalid(
                &at.child("x-kubernetes-list-map-keys"),
                keys,
                "must be a list of field names".into(),
            )),
        }
    }

    // The structural part: properties, items, additionalProperties.
    if let Some(props) = obj.get("properties") {
        match props.as_object() {
            Some(map) => {
                for (name, sub) in map {
                    let sub_at = at.child("properties").child(name);
                    let sub_place = match place {
                        Place::Root if name == "metadata" => Place::Metadata,
                        Place::Metadata if name == "name" || name == "generateName" => {
                            Place::InMetadata
                        }
                        Place::Junctor => Place::Junctor,
                        _ => Place::Field,
                    };
                    s.properties
                        .insert(name.clone(), read(sub, &sub_at, sub_place, false, errors));
                }
            }
            None => errors.push(FieldError::invalid(
                &at.child("properties"),
                props,
                "must be a mapping of field names to schemas".into(),
            )),
        }
    }
    match obj.get("additionalProperties") {
        None => {}
        Some(Value::Bool(true)) => s.additional = Additional::Any,
        Some(Value::Bool(false)) => errors.push(FieldError::forbidden(
            &at.child("additionalProperties"),
            "additionalProperties cannot be set to false",
        )),
        Some(sub) => {
            let sub_place = if place == Place::Junctor {
                Place::Junctor
            } else {
                Place::Field
            };
            s.additional = Additional::Schema(Box::new(read(
                sub,
                &at.child("additionalProperties"),
                sub_place,
                false,
                errors,
            )));
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        errors.push(FieldError::forbidden(
            &at.child("additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    match obj.get("items") {
        None => {}
        Some(Value::Array(_)) => errors.push(FieldError::forbidden(
            &at.child("items"),
            "items must be a schema object and not an array",
        )),
        Some(sub) => {
            let sub_place = if place == Place::Junctor {
                Place::Junctor
            } else {
                Place::Field
            };
            s.items = Some(Box::new(read(
                sub,
                &at.child("items"),
                sub_place,
                false,
                errors,
            )));
        }
    }

    // Value validation: allOf, anyOf, oneOf, not.
    for key in ["allOf", "anyOf", "oneOf"] {
        let Some(list) = obj.get(key) else { continue };
        let Some(list) = list.as_array() else {
            errors.push(FieldError::invalid(
                &at.child(key),
                list,
                "must be a list of schemas".into(),
            ));
            continue;
        };
        let read_all: Vec<Schema> = list
            .iter()
            .enumerate()
            .map(|(i, sub)| {
                read(
                    sub,
                    &at.child(key).index(i),
                    Place::Junctor,
                    s.int_or_string,
                    errors,
                )
            })
            .collect();
        match key {
            "allOf" => s.all_of = read_all,
            "anyOf" => s.any_of = read_all,
            _ => s.one_of = read_all,
        }
    }
    if let Some(sub) = obj.get("not") {
        s.not = Some(Box::new(read(
            sub,
            &at.child("not"),
            Place::Junctor,
            false,
            errors,
        )));
    }

    check_node(&s, obj, at, place, in_int_or_string, errors);
    s
}

/// The structural rules for one node, given where it is.
fn check_node(
    s: &Schema,
    obj: &serde_json::Map<String, Value>,
    at: &FieldPath,
    place: Place,
    in_int_or_string: bool,
    errors: &mut Vec<FieldError>,
) {
    if place == Place::Junctor {
        // Value validation only: nothing that changes the shape of the structural part.
        let type_ok = in_int_or_string && matches!(s.ty, Some(Type::Integer | Type::String));
        if s.ty.is_some() && !type_ok {
            errors.push(FieldError::forbidden(
                &at.child("type"),
                "must be empty to be structural",
            ));
        }
        for key in [
            "default",
            "nullable",
            "additionalProperties",
            "description",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-embedded-resource",
            "x-kubernetes-int-or-string",
        ] {
            if obj.contains_key(key) {
                errors.push(FieldError::forbidden(
                    &at.child(key),
                    "must be undefined to be structural",
                ));
            }
        }
        return;
    }
    if s.int_or_string {
        if s.ty.is_some() {
            errors.push(FieldError::invalid(
                &at.child("type"),
                &Value::String(s.ty.map_or("", Type::name).into()),
                "must be empty when x-kubernetes-int-or-string is true".into(),
            ));
        }
    } else if s.ty.is_none() && !s.preserve_unknown_fields {
        let what = if place == Place::Root {
            "at the root"
        } else {
            "for specified fields"
        };
        errors.push(FieldError::required(
            &at.child("type"),
            &format!("must not be empty {what}"),
        ));
    }
    if s.embedded_resource && s.ty != Some(Type::Object) {
        errors.push(FieldError::invalid(
            &at.child("type"),
            &Value::String(s.ty.map_or("", Type::name).into()),
            "must be object if x-kubernetes-embedded-resource is true".into(),
        ));
    }
    if s.ty == Some(Type::Array) && s.items.is_none() {
        errors.push(FieldError::required(
            &at.child("items"),
            "must be specified",
        ));
    }
    if s.ty.is_some_and(|t| t != Type::Object)
        && (!s.properties.is_empty() || !matches!(s.additional, Additional::Unset))
    {
        errors.push(FieldError::forbidden(
            &at.child("properties"),
            "properties are only allowed for type object",
        ));
    }
    match place {
        Place::Metadata => {
            if s.ty != Some(Type::Object) {
                errors.push(FieldError::invalid(
                    &at.child("type"),
                    &Value::String(s.ty.map_or("", Type::name).into()),
                    "must be object for metadata".into(),
                ));
            }
            for name in s.properties.keys() {
                if name != "name" && name != "generateName" {
                    errors.push(FieldError::forbidden(
                        &at.child("properties").child(name),
                        "must not specify anything other than name and generateName, but metadata is implicitly specified",
                    ));
                }
            }
            if s.default.is_some() {
                errors.push(FieldError::forbidden(
                    &at.child("default"),
                    "must not be set for metadata",
                ));
            }
        }
        Place::InMetadata => {
            if s.ty != Some(Type::String) {
                errors.push(FieldError::invalid(
                    &at.child("type"),
                    &Value::String(s.ty.map_or("", Type::name).into()),
                    "must be string".into(),
                ));
            }
            if s.default.is_some() {
                errors.push(FieldError::forbidden(
                    &at.child("default"),
                    "must not be set for metadata",
                ));
            }
        }
        _ => {}
    }
    if let Some(list_type) = &s.list_type {
        let items = s.items.as_deref();
        match list_type.as_str() {
            "atomic" => {}
            "set" => {
                if items.is_some_and(|i| matches!(i.ty, Some(Type::Object | Type::Array))) {
                    errors.push(FieldError::invalid(
                        &at.child("items").child("type"),
                        &Value::String(items.and_then(|i| i.ty).map_or("", Type::name).into()),
                        "must be a scalar type if x-kubernetes-list-type is set".into(),
                    ));
                }
            }
            "map" => {
                if s.list_map_keys.is_empty() {
                    errors.push(FieldError::required(
                        &at.child("x-kubernetes-list-map-keys"),
                        "must not be empty if x-kubernetes-list-type is map",
                    ));
                }
                if items.is_some_and(|i| i.ty != Some(Type::Object)) {
                    errors.push(FieldError::invalid(
                        &at.child("items").child("type"),
                        &Value::String(items.and_then(|i| i.ty).map_or("", Type::name).into()),
                        "must be object if x-kubernetes-list-type is map".into(),
                    ));
                }
            }
            other => errors.push(FieldError::new(
                ErrorKind::NotSupported,
                &at.child("x-kubernetes-list-type"),
                Some(&Value::String(other.into())),
                "supported values: \"atomic\", \"map\", \"set\"".into(),
            )),
        }
        if s.ty != Some(Type::Array) {
            errors.push(FieldError::invalid(
                &at.child("type"),
                &Value::String(s.ty.map_or("", Type::name).into()),
                "must be array if x-kubernetes-list-type is given".into(),
            ));
        }
    }
}
