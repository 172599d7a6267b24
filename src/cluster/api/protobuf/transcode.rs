//! JSON ↔ protobuf for any Kubernetes message, walking the descriptors of
//! `proto/kubernetes.binpb` with the JSON rules of `proto/go-fields.txt` and the types whose
//! JSON is not their message (`Time`, `Quantity`, `IntOrString`, `RawExtension`, …).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as Proto,
};
use serde_json::{Map, Value};

use super::wellknown;

const DESCRIPTORS: &[u8] = include_bytes!("../../../../proto/kubernetes.binpb");
const GO_FIELDS: &str = include_str!("../../../../proto/go-fields.txt");

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Why a body could not be transcoded.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("no protobuf message for {api_version} {kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error("{message}.{field}: {reason}")]
    Field {
        message: String,
        field: String,
        reason: String,
    },
    #[error("the protobuf body is malformed: {0}")]
    Malformed(#[from] prost::DecodeError),
}

/// A message whose JSON is not an object of its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    /// `metav1.Time`: RFC 3339 in whole seconds.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `metav1.Duration`: Go's duration text (`1h2m3s`).
    Duration,
    /// `RawExtension`, `FieldsV1`, apiextensions `JSON`: field 1 holds JSON bytes.
    RawJson,
    /// `resource.Quantity`: a string.
    Quantity,
    /// `intstr.IntOrString`: an integer or a string.
    IntOrString,
    /// `metav1.Verbs`, `ExtraValue`: a named `[]string`, its items in field 1.
    Items,
    /// `JSONSchemaPropsOrArray`: a schema or a list of schemas.
    SchemaOrArray,
    /// `JSONSchemaPropsOrBool`: a schema or a boolean.
    SchemaOrBool,
    /// `JSONSchemaPropsOrStringArray`: a schema or a list of strings.
    SchemaOrStrings,
}

fn special(full_name: &str) -> Option<Special> {
    let (package, name) = full_name.rsplit_once('.')?;
    Some(match (package, name) {
        (META, "Time") => Special::Time,
        (META, "MicroTime") => Special::MicroTime,
        (META, "Duration") => Special::Duration,
        (META, "FieldsV1") | ("k8s.io.apimachinery.pkg.runtime", "RawExtension") => {
            Special::RawJson
        }
        ("k8s.io.apimachinery.pkg.api.resource", "Quantity" | "QuantityValue") => Special::Quantity,
        ("k8s.io.apimachinery.pkg.util.intstr", "IntOrString") => Special::IntOrString,
        (META, "Verbs") | (_, "ExtraValue") => Special::Items,
        (p, "JSON") if p.starts_with("k8s.io.apiextensions_apiserver.") => Special::RawJson,
        (p, "JSONSchemaPropsOrArray") if p.starts_with("k8s.io.apiextensions_apiserver.") => {
            Special::SchemaOrArray
        }
        (p, "JSONSchemaPropsOrBool") if p.starts_with("k8s.io.apiextensions_apiserver.") => {
            Special::SchemaOrBool
        }
        (p, "JSONSchemaPropsOrStringArray") if p.starts_with("k8s.io.apiextensions_apiserver.") => {
            Special::SchemaOrStrings
        }
        _ => return None,
    })
}

/// When JSON leaves a field's zero value out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Omit {
    /// A pointer, or a value field without `omitempty`: its zero is written.
    Never,
    /// `omitempty` on a value field: a zero scalar is left out (an empty struct too: `{}` and
    /// absent decode to the same Go value, and defaulting looks for absent fields).
    Empty,
    /// `omitzero`: a zero scalar or empty struct is left out.
    Zero,
}

/// One field as JSON sees it.
#[derive(Debug, Clone)]
struct JsonField {
    desc: FieldDescriptor,
    json_name: String,
    omit: Omit,
    /// An embedded Go struct whose fields JSON puts in the parent object.
    inline: bool,
}

/// One message as JSON sees it.
#[derive(Debug)]
struct Layout {
    special: Option<Special>,
    fields: Vec<JsonField>,
}

/// The descriptors and JSON rules of every Kubernetes message.
pub struct Transcoder {
    pool: DescriptorPool,
    layouts: HashMap<String, Layout>,
    /// Messages `go-fields.txt` describes, for the coverage test.
    #[cfg_attr(not(test), allow(dead_code))]
    described: std::collections::HashSet<String>,
}

/// Field rules of one message from `go-fields.txt`: number → (omit, inline, JSON name).
type Rules = HashMap<u32, (Omit, bool, Option<String>)>;

fn parse_rules(line: &str) -> Option<(&str, Rules)> {
    let mut words = line.split_whitespace();
    let message = words.next()?;
    let mut rules = Rules::new();
    for word in words {
        // `;…` parts are the OpenAPI patch extensions, read by the OpenAPI module.
        let word = word.split(';').next().unwrap_or(word);
        let (head, name) = match word.split_once('=') {
            Some((h, n)) => (h, Some(n.to_string())),
            None => (word, None),
        };
        let digits = head.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let flags = &head[digits.len()..];
        let Ok(number) = digits.parse() else { continue };
        let omit = if flags.contains('z') {
            Omit::Zero
        } else if flags.contains('e') {
            Omit::Empty
        } else {
            Omit::Never
        };
        rules.insert(number, (omit, flags.contains('i'), name));
    }
    Some((message, rules))
}

impl Transcoder {
    pub fn load() -> Transcoder {
        let pool = DescriptorPool::decode(DESCRIPTORS).expect("proto/kubernetes.binpb decodes");
        let mut rules: HashMap<&str, Rules> = HashMap::new();
        for line in GO_FIELDS.lines().filter(|l| !l.starts_with('#')) {
            if let Some((message, r)) = parse_rules(line) {
                rules.insert(message, r);
            }
        }
        let mut layouts = HashMap::new();
        for m in pool.all_messages() {
            let own = rules.get(m.full_name());
            let fields = m
                .fields()
                .map(|desc| {
                    let (omit, inline, name) = own
                        .and_then(|r| r.get(&desc.number()))
                        .cloned()
                        .unwrap_or((Omit::Never, false, None));
                    JsonField {
                        json_name: name.unwrap_or_else(|| desc.name().to_string()),
                        desc,
                        omit,
                        inline,
                    }
                })
                .collect();
            let layout = Layout {
                special: special(m.full_name()),
                fields,
            };
            layouts.insert(m.full_name().to_string(), layout);
        }
        let described = rules.keys().map(|k| k.to_string()).collect();
        Transcoder {
            pool,
            layouts,
            described,
        }
    }

    #[cfg(test)]
    pub(super) fn is_described(&self, message: &str) -> bool {
        self.described.contains(message) || special(message).is_some()
    }

    /// The message of an `apiVersion` and `kind`: the group's own package, else
    /// `meta/v1` (Status, DeleteOptions, WatchEvent, … sent under any group's version).
    pub fn message(&self, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let package = match group {
            "" => format!("k8s.io.api.core.{version}"),
            "meta.k8s.io" => format!("k8s.io.apimachinery.pkg.apis.meta.{version}"),
            "apiextensions.k8s.io" => {
                format!("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.{version}")
            }
            "apiregistration.k8s.io" => {
                format!("k8s.io.kube_aggregator.pkg.apis.apiregistration.{version}")
            }
            "internal.apiserver.k8s.io" => format!("k8s.io.api.apiserverinternal.{version}"),
            g => format!("k8s.io.api.{}.{version}", g.split('.').next().unwrap_or(g)),
        };
        self.pool
            .get_message_by_name(&format!("{package}.{kind}"))
            .or_else(|| self.pool.get_message_by_name(&format!("{META}.{kind}")))
    }

    pub fn runtime_message(&self, name: &str) -> MessageDescriptor {
        self.pool
            .get_message_by_name(&format!("k8s.io.apimachinery.pkg.runtime.{name}"))
            .expect("runtime messages are in the descriptor set")
    }

    fn layout(&self, m: &MessageDescriptor) -> &Layout {
        &self.layouts[m.full_name()]
    }

    // ---- protobuf → JSON ----

    /// A message's JSON; `None` for a zero `Time`, which JSON writes as null.
    pub fn to_json(&self, msg: &DynamicMessage) -> Option<Value> {
        let layout = self.layout(&msg.descriptor());
        if let Some(s) = layout.special {
            return self.special_to_json(s, msg);
        }
        let mut out = Map::new();
        self.fields_to_json(msg, layout, &mut out);
        Some(Value::Object(out))
    }

    fn fields_to_json(&self, msg: &DynamicMessage, layout: &Layout, out: &mut Map<String, Value>) {
        for f in &layout.fields {
            if !msg.has_field(&f.desc) {
                continue;
            }
            let value = msg.get_field(&f.desc);
            if f.inline {
                if let Proto::Message(inner) = value.as_ref() {
                    self.fields_to_json(inner, self.layout(&inner.descriptor()), out);
                }
                continue;
            }
            let scalar_zero = !f.desc.is_list()
                && !f.desc.is_map()
                && value.is_default(&f.desc.kind())
                && !matches!(value.as_ref(), Proto::Message(_));
            if f.omit != Omit::Never && scalar_zero {
                continue;
            }
            match self.value_to_json(&value) {
                // A value struct whose fields are all zero is `{}`: left out like a zero.
                Some(Value::Object(o)) if o.is_empty() && f.omit != Omit::Never => {}
                Some(v) => {
                    out.insert(f.json_name.clone(), v);
                }
                None => {}
            }
        }
    }

    fn value_to_json(&self, v: &Proto) -> Option<Value> {
        Some(match v {
            Proto::Bool(b) => Value::Bool(*b),
            Proto::I32(n) => Value::from(*n),
            Proto::I64(n) => Value::from(*n),
            Proto::U32(n) => Value::from(*n),
            Proto::U64(n) => Value::from(*n),
            Proto::F32(n) => Value::from(f64::from(*n)),
            Proto::F64(n) => Value::from(*n),
            Proto::String(s) => Value::String(s.clone()),
            Proto::Bytes(b) => Value::String(B64.encode(b)),
            Proto::EnumNumber(n) => Value::from(*n),
            Proto::Message(m) => return self.to_json(m),
            Proto::List(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.value_to_json(i).unwrap_or(Value::Null))
                    .collect(),
            ),
            Proto::Map(entries) => {
                let mut keys: Vec<&MapKey> = entries.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(n) => n.to_string(),
                        MapKey::I64(n) => n.to_string(),
                        MapKey::U32(n) => n.to_string(),
                        MapKey::U64(n) => n.to_string(),
                    };
                    let v = self.value_to_json(&entries[k]).unwrap_or(Value::Null);
                    out.insert(key, v);
                }
                Value::Object(out)
            }
        })
    }

    fn special_to_json(&self, s: Special, msg: &DynamicMessage) -> Option<Value> {
        let num = |n: u32| msg.get_field_by_number(n);
        let has = |n: u32| msg.has_field_by_number(n);
        let i64_of = |n: u32| match num(n).as_deref() {
            Some(Proto::I64(v)) => *v,
            Some(Proto::I32(v)) => i64::from(*v),
            _ => 0,
        };
        match s {
            Special::Time | Special::MicroTime => {
                let (seconds, nanos) = (i64_of(1), i64_of(2));
                if !has(1) && !has(2) {
                    return None;
                }
                Some(Value::String(wellknown::format_time(
                    seconds,
                    nanos,
                    s == Special::MicroTime,
                )))
            }
            Special::Duration => Some(Value::String(wellknown::format_duration(i64_of(1)))),
            Special::RawJson => {
                let Some(Proto::Bytes(raw)) = num(1).as_deref().cloned() else {
                    return None;
                };
                if raw.is_empty() {
                    return None;
                }
                match serde_json::from_slice(&raw) {
                    Ok(v) => Some(v),
                    // An object embedded in protobuf (a watch event's object, a list's item).
                    Err(_) => super::decode_envelope(self, &raw).ok(),
                }
            }
            Special::Quantity => match num(1).as_deref() {
                Some(Proto::String(q)) => Some(Value::String(q.clone())),
                _ => Some(Value::String("0".into())),
            },
            Special::IntOrString => {
                if i64_of(1) == 1 {
                    match num(3).as_deref() {
                        Some(Proto::String(s)) => Some(Value::String(s.clone())),
                        _ => Some(Value::String(String::new())),
                    }
                } else {
                    Some(Value::from(i64_of(2)))
                }
            }
            Special::Items => self.value_to_json(num(1).as_deref()?),
            Special::SchemaOrArray | Special::SchemaOrStrings => {
                if has(1) {
                    self.value_to_json(num(1).as_deref()?)
                } else {
                    self.value_to_json(num(2).as_deref()?)
                }
            }
            Special::SchemaOrBool => {
                if has(2) {
                    self.value_to_json(num(2).as_deref()?)
                } else {
                    Some(Value::Bool(matches!(
                        num(1).as_deref(),
                        Some(Proto::Bool(true))
                    )))
                }
            }
        }
    }

    // ---- JSON → protobuf ----

    /// The message of `desc` holding the JSON `value`.
    pub fn message_from_json(
        &self,
        desc: &MessageDescriptor,
        value: &Value,
    ) -> Result<DynamicMessage, TranscodeError> {
        let layout = self.layout(desc);
        let mut msg = DynamicMessage::new(desc.clone());
        if let Some(s) = layout.special {
            self.special_from_json(s, &mut msg, value)?;
            return Ok(msg);
        }
        let Value::Object(object) = value else {
            return Err(self.wrong(desc, "", "an object", value));
        };
        self.fields_from_json(&mut msg, layout, object)?;
        Ok(msg)
    }

    fn fields_from_json(
        &self,
        msg: &mut DynamicMessage,
        layout: &Layout,
        object: &Map<String, Value>,
    ) -> Result<(), TranscodeError> {
        for f in &layout.fields {
            if f.inline {
                let Kind::Message(inner) = f.desc.kind() else {
                    continue;
                };
                let mut sub = DynamicMessage::new(inner.clone());
                self.fields_from_json(&mut sub, self.layout(&inner), object)?;
                if !is_empty(&sub) {
                    msg.set_field(&f.desc, Proto::Message(sub));
                }
                continue;
            }
            let Some(v) = object.get(&f.json_name).filter(|v| !v.is_null()) else {
                continue;
            };
            let value = self.field_from_json(&f.desc, v)?;
            msg.set_field(&f.desc, value);
        }
        Ok(())
    }

    fn field_from_json(&self, f: &FieldDescriptor, v: &Value) -> Result<Proto, TranscodeError> {
        if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                unreachable!("a map field's kind is its entry message")
            };
            let value_field = entry.map_entry_value_field();
            let Value::Object(object) = v else {
                return Err(self.wrong(f.parent_message(), f.name(), "an object", v));
            };
            let mut map = HashMap::new();
            for (k, item) in object.iter().filter(|(_, v)| !v.is_null()) {
                map.insert(
                    MapKey::String(k.clone()),
                    self.scalar_from_json(&value_field, item)?,
                );
            }
            return Ok(Proto::Map(map));
        }
        if f.is_list() {
            let Value::Array(items) = v else {
                return Err(self.wrong(f.parent_message(), f.name(), "an array", v));
            };
            return items
                .iter()
                .map(|i| self.scalar_from_json(f, i))
                .collect::<Result<_, _>>()
                .map(Proto::List);
        }
        self.scalar_from_json(f, v)
    }

    /// One value of the field's type (an element, for a list or map).
    fn scalar_from_json(&self, f: &FieldDescriptor, v: &Value) -> Result<Proto, TranscodeError> {
        let wrong = |want: &str| self.wrong(f.parent_message(), f.name(), want, v);
        let int = || -> Option<i64> {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64))
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        Ok(match f.kind() {
            Kind::Message(m) => Proto::Message(self.message_from_json(&m, v)?),
            Kind::String => match v {
                Value::String(s) => Proto::String(s.clone()),
                Value::Number(n) => Proto::String(n.to_string()),
                Value::Bool(b) => Proto::String(b.to_string()),
                _ => return Err(wrong("a string")),
            },
            Kind::Bool => Proto::Bool(v.as_bool().ok_or_else(|| wrong("a boolean"))?),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                let n = int().ok_or_else(|| wrong("an integer"))?;
                Proto::I32(i32::try_from(n).map_err(|_| wrong("a 32-bit integer"))?)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Proto::I64(int().ok_or_else(|| wrong("an integer"))?)
            }
            Kind::Uint32 | Kind::Fixed32 => {
                let n = int().ok_or_else(|| wrong("an integer"))?;
                Proto::U32(u32::try_from(n).map_err(|_| wrong("a 32-bit integer"))?)
            }
            Kind::Uint64 | Kind::Fixed64 => {
                let n = int().ok_or_else(|| wrong("an integer"))?;
                Proto::U64(u64::try_from(n).map_err(|_| wrong("an unsigned integer"))?)
            }
            Kind::Double => Proto::F64(v.as_f64().ok_or_else(|| wrong("a number"))?),
            Kind::Float => Proto::F32(v.as_f64().ok_or_else(|| wrong("a number"))? as f32),
            Kind::Bytes => {
                let s = v.as_str().ok_or_else(|| wrong("base64 text"))?;
                Proto::Bytes(B64.decode(s).map_err(|_| wrong("base64 text"))?.into())
            }
            Kind::Enum(_) => Proto::EnumNumber(int().ok_or_else(|| wrong("an integer"))? as i32),
        })
    }

    fn special_from_json(
        &self,
        s: Special,
        msg: &mut DynamicMessage,
        v: &Value,
    ) -> Result<(), TranscodeError> {
        let desc = msg.descriptor();
        let wrong = |want: &str| self.wrong(&desc, "", want, v);
        match s {
            Special::Time | Special::MicroTime => {
                let text = v.as_str().ok_or_else(|| wrong("an RFC 3339 time"))?;
                let (seconds, nanos) =
                    wellknown::parse_time(text).ok_or_else(|| wrong("an RFC 3339 time"))?;
                msg.set_field_by_number(1, Proto::I64(seconds));
                if s == Special::MicroTime && nanos != 0 {
                    msg.set_field_by_number(2, Proto::I32(nanos));
                }
            }
            Special::Duration => {
                let text = v.as_str().ok_or_else(|| wrong("a duration"))?;
                let ns = wellknown::parse_duration(text).ok_or_else(|| wrong("a duration"))?;
                msg.set_field_by_number(1, Proto::I64(ns));
            }
            Special::RawJson => {
                let raw = serde_json::to_vec(v).unwrap_or_default();
                msg.set_field_by_number(1, Proto::Bytes(raw.into()));
            }
            Special::Quantity => {
                let q = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(wrong("a quantity")),
                };
                msg.set_field_by_number(1, Proto::String(q));
            }
            Special::IntOrString => match v {
                Value::String(text) => {
                    msg.set_field_by_number(1, Proto::I64(1));
                    msg.set_field_by_number(3, Proto::String(text.clone()));
                }
                Value::Number(n) => {
                    let n = n.as_i64().and_then(|n| i32::try_from(n).ok());
                    msg.set_field_by_number(1, Proto::I64(0));
                    msg.set_field_by_number(2, Proto::I32(n.ok_or_else(|| wrong("an int32"))?));
                }
                _ => return Err(wrong("an integer or a string")),
            },
            Special::Items | Special::SchemaOrArray | Special::SchemaOrStrings => {
                let list_field = if s == Special::Items { 1 } else { 2 };
                let number = if v.is_array() { list_field } else { 1 };
                let field = desc.get_field(number).expect("the field exists");
                let value = self.field_from_json(&field, v)?;
                msg.set_field(&field, value);
            }
            Special::SchemaOrBool => match v {
                Value::Bool(b) => msg.set_field_by_number(1, Proto::Bool(*b)),
                _ => {
                    let field = desc.get_field(2).expect("the schema field exists");
                    let value = self.field_from_json(&field, v)?;
                    msg.set_field_by_number(1, Proto::Bool(true));
                    msg.set_field(&field, value);
                }
            },
        }
        Ok(())
    }

    fn wrong(&self, m: &MessageDescriptor, field: &str, want: &str, got: &Value) -> TranscodeError {
        let got = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        TranscodeError::Field {
            message: m.full_name().to_string(),
            field: field.to_string(),
            reason: format!("expected {want}, got {got}"),
        }
    }
}

/// Whether a message has no field set.
fn is_empty(m: &DynamicMessage) -> bool {
    m.fields().next().is_none()
}
