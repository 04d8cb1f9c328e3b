//! Log-safe rendering of CSI messages.
//!
//! The CSI schema marks sensitive fields (the `secrets` maps of most
//! requests) with the `csi_secret` field option (extension number 1059 on
//! `google.protobuf.FieldOptions`). The helpers here read that option from the
//! embedded descriptor set, so they keep working for any field the schema
//! marks, not just the ones known today.
//!
//! Redaction keeps the *shape* of the data and drops the *values*: a secret
//! map keeps its keys and every value becomes [`REDACTED`]; a secret string or
//! bytes field becomes [`REDACTED`]; a secret repeated string keeps its length
//! with every element replaced; any other secret field is cleared. Non-secret
//! nested messages (including messages inside lists and maps) are searched
//! recursively.
//!
//! ```
//! use csi_proto::v1::CreateVolumeRequest;
//!
//! let req = CreateVolumeRequest {
//!     name: "pvc-1".into(),
//!     secrets: [("password".to_string(), "hunter2".to_string())].into(),
//!     ..Default::default()
//! };
//! let text = csi_proto::redact::redacted_debug(&req);
//! assert!(text.contains("password"));
//! assert!(!text.contains("hunter2"));
//! ```

use std::collections::HashSet;
use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
    Value,
};

/// Placeholder written in place of every secret value.
pub const REDACTED: &str = "<redacted>";

/// Full name of the field option that marks secret fields.
pub const CSI_SECRET_EXTENSION: &str = "csi.v1.csi_secret";

/// Extension number of `csi_secret` on `google.protobuf.FieldOptions`.
pub const CSI_SECRET_FIELD_NUMBER: u32 = 1059;

/// The descriptor pool decoded from [`crate::FILE_DESCRIPTOR_SET`].
///
/// Decoded once and cached; it contains `csi.proto` and its imports, so it can
/// be used for any dynamic (reflection based) handling of CSI messages.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the embedded CSI file descriptor set is valid")
    })
}

/// Looks up a message descriptor by its full protobuf name, e.g.
/// `"csi.v1.CreateVolumeRequest"`. A leading `.` is accepted.
pub fn message_descriptor(full_message_name: &str) -> Option<MessageDescriptor> {
    descriptor_pool().get_message_by_name(full_message_name.trim_start_matches('.'))
}

/// Whether `field` carries `[(csi_secret) = true]`.
pub fn is_secret_field(field: &FieldDescriptor) -> bool {
    let options = field.options();
    if let Some(ext) = field
        .parent_pool()
        .get_extension_by_name(CSI_SECRET_EXTENSION)
    {
        if options.has_extension(&ext) {
            return options.get_extension(&ext).as_bool().unwrap_or(false);
        }
    }
    // Fallback: look for the raw extension in the encoded options, in case
    // the option was kept as an unknown field.
    raw_bool_option(
        &prost::Message::encode_to_vec(&options),
        CSI_SECRET_FIELD_NUMBER,
    )
}

/// Names of the fields of `full_message_name` (not of nested messages) that
/// are marked `csi_secret`, in declaration order. Empty when the message is
/// unknown or has no secret fields.
pub fn secret_fields(full_message_name: &str) -> Vec<String> {
    message_descriptor(full_message_name)
        .map(|desc| {
            desc.fields()
                .filter(is_secret_field)
                .map(|f| f.name().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Dotted paths of every `csi_secret` field reachable from
/// `full_message_name`, including through nested message fields, e.g.
/// `["secrets"]` for `csi.v1.CreateVolumeRequest`. Recursive message types are
/// visited once.
pub fn secret_field_paths(full_message_name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(desc) = message_descriptor(full_message_name) {
        let mut seen = HashSet::new();
        collect_secret_paths(&desc, "", &mut seen, &mut out);
    }
    out
}

fn collect_secret_paths(
    desc: &MessageDescriptor,
    prefix: &str,
    seen: &mut HashSet<String>,
    out: &mut Vec<String>,
) {
    if !seen.insert(desc.full_name().to_string()) {
        return;
    }
    for field in desc.fields() {
        let path = if prefix.is_empty() {
            field.name().to_string()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if is_secret_field(&field) {
            out.push(path);
            continue;
        }
        let nested = match field.kind() {
            Kind::Message(m) if field.is_map() => match m.map_entry_value_field().kind() {
                Kind::Message(v) => Some(v),
                _ => None,
            },
            Kind::Message(m) => Some(m),
            _ => None,
        };
        if let Some(nested) = nested {
            collect_secret_paths(&nested, &path, seen, out);
        }
    }
    seen.remove(desc.full_name());
}

/// Decodes `msg_bytes` as the message `full_message_name`, redacts every
/// `csi_secret` field (recursively) and renders the result as compact JSON
/// using the proto field names, with object keys sorted so the output is
/// deterministic. Fields with default values are omitted; enums render as
/// their value names (e.g. `"SINGLE_NODE_WRITER"`).
///
/// Returns `None` when the message name is unknown or the bytes do not decode.
pub fn redact_secrets(full_message_name: &str, msg_bytes: &[u8]) -> Option<String> {
    let desc = message_descriptor(full_message_name)?;
    let mut msg = DynamicMessage::decode(desc, msg_bytes).ok()?;
    redact_message(&mut msg);
    Some(render_json(&msg))
}

/// Redacts and renders any generated CSI message (see [`redact_secrets`]).
///
/// Never panics and never falls back to the plain `Debug` output, so secrets
/// cannot leak through this function even for unexpected input.
pub fn redacted_debug<M>(msg: &M) -> String
where
    M: prost::Message + prost::Name,
{
    let name = M::full_name();
    redact_secrets(&name, &msg.encode_to_vec())
        .unwrap_or_else(|| format!("<{name}: not renderable>"))
}

/// Redacts every `csi_secret` field of `msg` in place, recursing into nested
/// messages (singular, repeated and map values).
pub fn redact_message(msg: &mut DynamicMessage) {
    for (field, value) in msg.fields_mut() {
        if is_secret_field(&field) {
            redact_value(value);
        } else {
            recurse_value(value);
        }
    }
}

/// Recurses into message values of a non-secret field.
fn recurse_value(value: &mut Value) {
    match value {
        Value::Message(m) => redact_message(m),
        Value::List(items) => items.iter_mut().for_each(recurse_value),
        Value::Map(entries) => entries.values_mut().for_each(recurse_value),
        _ => {}
    }
}

/// Replaces the contents of a secret field's value, keeping map keys and list
/// lengths but none of the data.
fn redact_value(value: &mut Value) {
    match value {
        Value::String(s) => *s = REDACTED.to_string(),
        Value::Bytes(b) => *b = prost::bytes::Bytes::from_static(REDACTED.as_bytes()),
        Value::List(items) => items.iter_mut().for_each(redact_value),
        Value::Map(entries) => entries.values_mut().for_each(redact_value),
        Value::Message(m) => prost::Message::clear(m),
        Value::Bool(b) => *b = false,
        Value::I32(n) | Value::EnumNumber(n) => *n = 0,
        Value::I64(n) => *n = 0,
        Value::U32(n) => *n = 0,
        Value::U64(n) => *n = 0,
        Value::F32(n) => *n = 0.0,
        Value::F64(n) => *n = 0.0,
    }
}

fn render_json(msg: &DynamicMessage) -> String {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    match msg.serialize_with_options(serde_json::value::Serializer, &options) {
        Ok(value) => sorted(value).to_string(),
        Err(err) => format!(
            "<{}: not renderable: {err}>",
            prost_reflect::ReflectMessage::descriptor(msg).full_name()
        ),
    }
}

/// Rebuilds every JSON object with its keys in sorted order, so the output
/// does not depend on `HashMap` iteration order (maps are `HashMap`s in the
/// generated types) nor on serde_json's `preserve_order` feature.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// Reads a varint-encoded bool extension `number` from encoded options bytes.
fn raw_bool_option(mut buf: &[u8], number: u32) -> bool {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let mut found = false;
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            return found;
        };
        let skipped = match wire_type {
            WireType::Varint => match decode_varint(&mut buf) {
                Ok(v) => {
                    if tag == number {
                        found = v != 0;
                    }
                    true
                }
                Err(_) => false,
            },
            WireType::SixtyFourBit => advance(&mut buf, 8),
            WireType::ThirtyTwoBit => advance(&mut buf, 4),
            WireType::LengthDelimited => match decode_varint(&mut buf) {
                Ok(len) => usize::try_from(len).is_ok_and(|len| advance(&mut buf, len)),
                Err(_) => false,
            },
            WireType::StartGroup | WireType::EndGroup => true,
        };
        if !skipped {
            return found;
        }
    }
    found
}

fn advance(buf: &mut &[u8], n: usize) -> bool {
    if buf.len() < n {
        return false;
    }
    *buf = &buf[n..];
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn raw_option_parser_finds_extension() {
        // Tag 1059, varint wire type, value 1 (as protoc encodes it).
        assert!(raw_bool_option(
            &[0x98, 0x42, 0x01],
            CSI_SECRET_FIELD_NUMBER
        ));
        assert!(!raw_bool_option(
            &[0x98, 0x42, 0x00],
            CSI_SECRET_FIELD_NUMBER
        ));
        // alpha_field (1060) is not csi_secret.
        assert!(!raw_bool_option(
            &[0xa0, 0x42, 0x01],
            CSI_SECRET_FIELD_NUMBER
        ));
        assert!(!raw_bool_option(&[], CSI_SECRET_FIELD_NUMBER));
    }

    #[test]
    fn secret_fields_of_requests() {
        assert_eq!(secret_fields("csi.v1.CreateVolumeRequest"), ["secrets"]);
        assert_eq!(secret_fields(".csi.v1.NodeStageVolumeRequest"), ["secrets"]);
        assert_eq!(secret_fields("csi.v1.NodeExpandVolumeRequest"), ["secrets"]);
        assert!(secret_fields("csi.v1.Volume").is_empty());
        assert!(secret_fields("csi.v1.NoSuchMessage").is_empty());
        assert_eq!(secret_field_paths("csi.v1.GetSnapshotRequest"), ["secrets"]);
    }

    #[test]
    fn nested_messages_are_rendered() {
        let req = v1::CreateVolumeRequest {
            name: "vol".into(),
            volume_capabilities: vec![v1::VolumeCapability {
                access_type: Some(v1::volume_capability::AccessType::Mount(
                    v1::volume_capability::MountVolume {
                        fs_type: "ext4".into(),
                        ..Default::default()
                    },
                )),
                access_mode: None,
            }],
            secrets: [("k".to_string(), "v-secret".to_string())].into(),
            ..Default::default()
        };
        let text = redacted_debug(&req);
        assert!(text.contains("ext4"), "{text}");
        assert!(text.contains("\"k\""), "{text}");
        assert!(!text.contains("v-secret"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }

    #[test]
    fn undecodable_bytes_give_none() {
        assert!(redact_secrets("csi.v1.CreateVolumeRequest", &[0xff, 0xff]).is_none());
        assert!(redact_secrets("csi.v1.Nope", &[]).is_none());
    }
}
