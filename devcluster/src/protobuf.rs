//! Decoding of the protobuf request bodies kubectl's typed clients send for imperative commands
//! (`kubectl create configmap|secret|namespace|serviceaccount|token`, `kubectl auth can-i`) and the
//! delete options of typed clients such as Helm's. Only
//! those kinds are understood; other protobuf bodies get 415. Responses are always JSON, which
//! client-go accepts because it lists JSON in `Accept` too.

use crate::error::{Error, Result};
use base64::Engine;
use serde_json::{json, Map, Value};

/// The envelope prefix of Kubernetes protobuf (`k8s\0`).
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bytes,
    Int,
    Bool,
    MapStr,
    MapBytes,
    RepeatedStr,
    Message(&'static [Field]),
    RepeatedMessage(&'static [Field]),
}

type Field = (u64, &'static str, Kind);

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];
const OBJECT_META: &[Field] = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (11, "labels", Kind::MapStr),
    (12, "annotations", Kind::MapStr),
    (
        13,
        "ownerReferences",
        Kind::RepeatedMessage(OWNER_REFERENCE),
    ),
    (14, "finalizers", Kind::RepeatedStr),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (2, "data", Kind::MapStr),
    (3, "binaryData", Kind::MapBytes),
    (4, "immutable", Kind::Bool),
];
const SECRET: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (2, "data", Kind::MapBytes),
    (3, "type", Kind::Str),
    (4, "stringData", Kind::MapStr),
    (5, "immutable", Kind::Bool),
];
const NAMESPACE: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (
        2,
        "spec",
        Kind::Message(&[(1, "finalizers", Kind::RepeatedStr)]),
    ),
];
const LOCAL_OBJECT_REFERENCE: &[Field] = &[(1, "name", Kind::Str)];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (
        3,
        "imagePullSecrets",
        Kind::RepeatedMessage(LOCAL_OBJECT_REFERENCE),
    ),
    (4, "automountServiceAccountToken", Kind::Bool),
];
const BOUND_OBJECT_REFERENCE: &[Field] = &[
    (1, "kind", Kind::Str),
    (2, "apiVersion", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
];
const TOKEN_REQUEST: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (
        2,
        "spec",
        Kind::Message(&[
            (1, "audiences", Kind::RepeatedStr),
            (4, "expirationSeconds", Kind::Int),
            (3, "boundObjectRef", Kind::Message(BOUND_OBJECT_REFERENCE)),
        ]),
    ),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    (1, "namespace", Kind::Str),
    (2, "verb", Kind::Str),
    (3, "group", Kind::Str),
    (4, "version", Kind::Str),
    (5, "resource", Kind::Str),
    (6, "subresource", Kind::Str),
    (7, "name", Kind::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[(1, "path", Kind::Str), (2, "verb", Kind::Str)];
const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (
        2,
        "spec",
        Kind::Message(&[
            (1, "resourceAttributes", Kind::Message(RESOURCE_ATTRIBUTES)),
            (
                2,
                "nonResourceAttributes",
                Kind::Message(NON_RESOURCE_ATTRIBUTES),
            ),
        ]),
    ),
];

const PRECONDITIONS: &[Field] = &[(1, "uid", Kind::Str), (2, "resourceVersion", Kind::Str)];
/// `helm uninstall` and other typed clients send their delete options in protobuf.
const DELETE_OPTIONS: &[Field] = &[
    (1, "gracePeriodSeconds", Kind::Int),
    (2, "preconditions", Kind::Message(PRECONDITIONS)),
    (3, "orphanDependents", Kind::Bool),
    (4, "propagationPolicy", Kind::Str),
    (5, "dryRun", Kind::RepeatedStr),
];

struct Reader<'a> {
    data: &'a [u8],
}

fn malformed() -> Error {
    Error::bad_request("malformed protobuf body")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.data.split_first().ok_or_else(malformed)?;
            self.data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed())
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let length = usize::try_from(self.varint()?).map_err(|_| malformed())?;
        if length > self.data.len() {
            return Err(malformed());
        }
        let (head, rest) = self.data.split_at(length);
        self.data = rest;
        Ok(head)
    }

    /// `(field number, wire type)`, or None at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, key & 7)))
    }

    fn skip(&mut self, wire_type: u64) -> Result<()> {
        let skip = match wire_type {
            0 => return self.varint().map(|_| ()),
            1 => 8,
            2 => return self.bytes().map(|_| ()),
            5 => 4,
            _ => return Err(malformed()),
        };
        if self.data.len() < skip {
            return Err(malformed());
        }
        self.data = &self.data[skip..];
        Ok(())
    }
}

fn text(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed())
}

fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value)> {
    let mut reader = Reader { data: bytes };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, 2) => key = text(reader.bytes()?)?,
            (2, 2) => {
                let raw = reader.bytes()?;
                value = if binary {
                    json!(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    json!(text(raw)?)
                };
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    Ok((key, value))
}

fn message(bytes: &[u8], fields: &[Field]) -> Result<Value> {
    let mut out = Map::new();
    let mut reader = Reader { data: bytes };
    while let Some((number, wire)) = reader.key()? {
        let Some(&(_, name, kind)) = fields.iter().find(|(n, _, _)| *n == number) else {
            reader.skip(wire)?;
            continue;
        };
        match kind {
            Kind::Str => {
                out.insert(name.into(), json!(text(reader.bytes()?)?));
            }
            Kind::Bytes => {
                out.insert(
                    name.into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(reader.bytes()?)),
                );
            }
            Kind::Int => {
                out.insert(name.into(), json!(reader.varint()? as i64));
            }
            Kind::Bool => {
                out.insert(name.into(), json!(reader.varint()? != 0));
            }
            Kind::MapStr | Kind::MapBytes => {
                let (key, value) = map_entry(reader.bytes()?, matches!(kind, Kind::MapBytes))?;
                let entry = out.entry(name).or_insert_with(|| json!({}));
                entry[key] = value;
            }
            Kind::RepeatedStr => {
                let value = json!(text(reader.bytes()?)?);
                push(&mut out, name, value);
            }
            Kind::Message(inner) => {
                out.insert(name.into(), message(reader.bytes()?, inner)?);
            }
            Kind::RepeatedMessage(inner) => {
                let value = message(reader.bytes()?, inner)?;
                push(&mut out, name, value);
            }
        }
    }
    Ok(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: &str, value: Value) {
    match out.entry(name).or_insert_with(|| json!([])) {
        Value::Array(items) => items.push(value),
        other => *other = json!([value]),
    }
}

/// Decodes a `k8s\0`-enveloped protobuf object of a supported kind into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value> {
    let unsupported = |what: &str| Error::UnsupportedMediaType {
        message: format!(
            "protobuf is understood for a few kinds only ({what}); send application/json"
        ),
    };
    let payload = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| unsupported("no k8s envelope"))?;
    let envelope = message(
        payload,
        &[
            (
                1,
                "typeMeta",
                Kind::Message(&[(1, "apiVersion", Kind::Str), (2, "kind", Kind::Str)]),
            ),
            (2, "raw", Kind::Bytes),
        ],
    )?;
    let api_version = envelope["typeMeta"]["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = envelope["typeMeta"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(envelope["raw"].as_str().unwrap_or_default())
        .map_err(|_| malformed())?;
    let fields = match kind.as_str() {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "TokenRequest" => TOKEN_REQUEST,
        "SelfSubjectAccessReview" => SELF_SUBJECT_ACCESS_REVIEW,
        "DeleteOptions" => DELETE_OPTIONS,
        other => return Err(unsupported(other)),
    };
    let mut object = message(&raw, fields)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_an_enveloped_config_map() {
        let meta = [
            field(1, b"c1"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let config_map = [
            field(1, &meta),
            field(2, &[field(1, b"a"), field(2, b"b")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &config_map)].concat();
        let object = decode(&body).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "labels": {"app": "web"}}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn decodes_delete_options() {
        let preconditions = [field(1, b"uid-1"), field(2, b"42")].concat();
        // Field 1 (gracePeriodSeconds) is a varint: key (1 << 3 | 0), value 5.
        let options = [
            vec![0x08, 5],
            field(2, &preconditions),
            field(4, b"Foreground"),
            field(5, b"All"),
        ]
        .concat();
        let type_meta = [field(1, b"meta.k8s.io/v1"), field(2, b"DeleteOptions")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &options)].concat();
        let object = decode(&body).unwrap();
        assert_eq!(object["gracePeriodSeconds"], json!(5));
        assert_eq!(object["preconditions"]["uid"], json!("uid-1"));
        assert_eq!(object["preconditions"]["resourceVersion"], json!("42"));
        assert_eq!(object["propagationPolicy"], json!("Foreground"));
        assert_eq!(object["dryRun"], json!(["All"]));
    }
}
