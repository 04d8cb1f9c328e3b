//! Checks the compiled descriptor of `csi.proto` against the CSI v1.12.0 facts
//! the project relies on (services, RPCs, enum numbers, alpha and secret
//! options).
//!
//! Structure is read with `prost_types`. Custom option *values* are not: prost
//! drops unknown fields, and extension values are unknown to
//! `prost_types::FieldOptions`. Those are read through `prost-reflect`, which
//! keeps the raw options.

use std::collections::BTreeSet;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

fn csi_file() -> FileDescriptorProto {
    let set = FileDescriptorSet::decode(csi_proto::FILE_DESCRIPTOR_SET).expect("decodes");
    let names: Vec<_> = set.file.iter().map(|f| f.name().to_string()).collect();
    for import in [
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/wrappers.proto",
    ] {
        assert!(names.iter().any(|n| n == import), "missing import {import}");
    }
    set.file
        .into_iter()
        .find(|f| f.name() == "csi.proto")
        .expect("csi.proto in the set")
}

fn pool() -> &'static DescriptorPool {
    csi_proto::redact::descriptor_pool()
}

fn find_message<'a>(file: &'a FileDescriptorProto, path: &str) -> &'a DescriptorProto {
    let mut parts = path.split('.');
    let first = parts.next().unwrap();
    let mut msg = file
        .message_type
        .iter()
        .find(|m| m.name() == first)
        .unwrap_or_else(|| panic!("no message {first}"));
    for part in parts {
        msg = msg
            .nested_type
            .iter()
            .find(|m| m.name() == part)
            .unwrap_or_else(|| panic!("no nested message {part} in {path}"));
    }
    msg
}

fn enum_values(e: &EnumDescriptorProto) -> Vec<(String, i32)> {
    e.value
        .iter()
        .map(|v| (v.name().to_string(), v.number()))
        .collect()
}

fn nested_enum(file: &FileDescriptorProto, msg_path: &str, name: &str) -> Vec<(String, i32)> {
    let msg = find_message(file, msg_path);
    let e = msg
        .enum_type
        .iter()
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("no enum {name} in {msg_path}"));
    enum_values(e)
}

fn expect_enum(actual: Vec<(String, i32)>, expected: &[(&str, i32)]) {
    let expected: Vec<(String, i32)> = expected.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    assert_eq!(actual, expected);
}

/// Reads a bool extension (by full name) from an options message.
fn option_flag(options: &DynamicMessage, extension: &str) -> bool {
    let ext = pool()
        .get_extension_by_name(extension)
        .unwrap_or_else(|| panic!("extension {extension} is declared"));
    options.has_extension(&ext) && matches!(*options.get_extension(&ext), Value::Bool(true))
}

#[test]
fn package_and_constants() {
    let file = csi_file();
    assert_eq!(file.package(), "csi.v1");
    assert_eq!(file.syntax(), "proto3");
    assert_eq!(csi_proto::CSI_SPEC_VERSION, "1.12.0");
    assert_eq!(
        file.dependency,
        [
            "google/protobuf/descriptor.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/wrappers.proto"
        ]
    );
}

#[test]
fn services_and_rpcs_match_the_spec() {
    let file = csi_file();
    let expected: &[(&str, &[&str])] = &[
        (
            "Identity",
            &["GetPluginInfo", "GetPluginCapabilities", "Probe"],
        ),
        (
            "Controller",
            &[
                "CreateVolume",
                "DeleteVolume",
                "ControllerPublishVolume",
                "ControllerUnpublishVolume",
                "ValidateVolumeCapabilities",
                "ListVolumes",
                "GetCapacity",
                "ControllerGetCapabilities",
                "CreateSnapshot",
                "DeleteSnapshot",
                "ListSnapshots",
                "GetSnapshot",
                "ControllerExpandVolume",
                "ControllerGetVolume",
                "ControllerModifyVolume",
            ],
        ),
        (
            "GroupController",
            &[
                "GroupControllerGetCapabilities",
                "CreateVolumeGroupSnapshot",
                "DeleteVolumeGroupSnapshot",
                "GetVolumeGroupSnapshot",
            ],
        ),
        (
            "SnapshotMetadata",
            &["GetMetadataAllocated", "GetMetadataDelta"],
        ),
        (
            "Node",
            &[
                "NodeStageVolume",
                "NodeUnstageVolume",
                "NodePublishVolume",
                "NodeUnpublishVolume",
                "NodeGetVolumeStats",
                "NodeExpandVolume",
                "NodeGetCapabilities",
                "NodeGetInfo",
            ],
        ),
    ];

    let services: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
    let expected_services: Vec<&str> = expected.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        services.iter().collect::<BTreeSet<_>>(),
        expected_services.iter().collect::<BTreeSet<_>>()
    );

    for (service, rpcs) in expected {
        let svc = file.service.iter().find(|s| s.name() == *service).unwrap();
        let methods: Vec<&str> = svc.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods.iter().collect::<BTreeSet<_>>(),
            rpcs.iter().collect::<BTreeSet<_>>(),
            "RPCs of {service}"
        );
        for m in &svc.method {
            // Every request/response is `<Rpc>Request` / `<Rpc>Response`.
            assert_eq!(m.input_type(), format!(".csi.v1.{}Request", m.name()));
            assert_eq!(m.output_type(), format!(".csi.v1.{}Response", m.name()));
            assert!(
                !m.client_streaming(),
                "{} is not client-streaming",
                m.name()
            );
            let streaming = *service == "SnapshotMetadata";
            assert_eq!(
                m.server_streaming(),
                streaming,
                "server streaming of {}",
                m.name()
            );
        }
    }
}

#[test]
fn capability_enum_numbers_match_the_spec() {
    let file = csi_file();
    expect_enum(
        nested_enum(&file, "PluginCapability.Service", "Type"),
        &[
            ("UNKNOWN", 0),
            ("CONTROLLER_SERVICE", 1),
            ("VOLUME_ACCESSIBILITY_CONSTRAINTS", 2),
            ("GROUP_CONTROLLER_SERVICE", 3),
            ("SNAPSHOT_METADATA_SERVICE", 4),
        ],
    );
    expect_enum(
        nested_enum(&file, "PluginCapability.VolumeExpansion", "Type"),
        &[("UNKNOWN", 0), ("ONLINE", 1), ("OFFLINE", 2)],
    );
    expect_enum(
        nested_enum(&file, "ControllerServiceCapability.RPC", "Type"),
        &[
            ("UNKNOWN", 0),
            ("CREATE_DELETE_VOLUME", 1),
            ("PUBLISH_UNPUBLISH_VOLUME", 2),
            ("LIST_VOLUMES", 3),
            ("GET_CAPACITY", 4),
            ("CREATE_DELETE_SNAPSHOT", 5),
            ("LIST_SNAPSHOTS", 6),
            ("CLONE_VOLUME", 7),
            ("PUBLISH_READONLY", 8),
            ("EXPAND_VOLUME", 9),
            ("LIST_VOLUMES_PUBLISHED_NODES", 10),
            ("VOLUME_CONDITION", 11),
            ("GET_VOLUME", 12),
            ("SINGLE_NODE_MULTI_WRITER", 13),
            ("MODIFY_VOLUME", 14),
            ("GET_SNAPSHOT", 15),
        ],
    );
    expect_enum(
        nested_enum(&file, "NodeServiceCapability.RPC", "Type"),
        &[
            ("UNKNOWN", 0),
            ("STAGE_UNSTAGE_VOLUME", 1),
            ("GET_VOLUME_STATS", 2),
            ("EXPAND_VOLUME", 3),
            ("VOLUME_CONDITION", 4),
            ("SINGLE_NODE_MULTI_WRITER", 5),
            ("VOLUME_MOUNT_GROUP", 6),
        ],
    );
    expect_enum(
        nested_enum(&file, "GroupControllerServiceCapability.RPC", "Type"),
        &[
            ("UNKNOWN", 0),
            ("CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT", 1),
        ],
    );
    expect_enum(
        nested_enum(&file, "VolumeCapability.AccessMode", "Mode"),
        &[
            ("UNKNOWN", 0),
            ("SINGLE_NODE_WRITER", 1),
            ("SINGLE_NODE_READER_ONLY", 2),
            ("MULTI_NODE_READER_ONLY", 3),
            ("MULTI_NODE_SINGLE_WRITER", 4),
            ("MULTI_NODE_MULTI_WRITER", 5),
            ("SINGLE_NODE_SINGLE_WRITER", 6),
            ("SINGLE_NODE_MULTI_WRITER", 7),
        ],
    );
    expect_enum(
        nested_enum(&file, "VolumeUsage", "Unit"),
        &[("UNKNOWN", 0), ("BYTES", 1), ("INODES", 2)],
    );
    let block = file
        .enum_type
        .iter()
        .find(|e| e.name() == "BlockMetadataType")
        .expect("top-level BlockMetadataType");
    expect_enum(
        enum_values(block),
        &[("UNKNOWN", 0), ("FIXED_LENGTH", 1), ("VARIABLE_LENGTH", 2)],
    );
}

#[test]
fn generated_rust_enums_match_wire_numbers() {
    use csi_proto::v1::{
        controller_service_capability::rpc::Type as CtrlRpc,
        node_service_capability::rpc::Type as NodeRpc, plugin_capability::service::Type as Svc,
        volume_capability::access_mode::Mode,
    };
    assert_eq!(Svc::SnapshotMetadataService as i32, 4);
    assert_eq!(CtrlRpc::GetSnapshot as i32, 15);
    assert_eq!(CtrlRpc::ModifyVolume as i32, 14);
    assert_eq!(NodeRpc::VolumeMountGroup as i32, 6);
    assert_eq!(Mode::SingleNodeMultiWriter as i32, 7);
    assert_eq!(
        Mode::from_str_name("SINGLE_NODE_SINGLE_WRITER"),
        Some(Mode::SingleNodeSingleWriter)
    );
}

#[test]
fn extensions_are_declared_with_spec_numbers() {
    let expected = [
        ("csi.v1.alpha_enum", "google.protobuf.EnumOptions", 1060),
        (
            "csi.v1.alpha_enum_value",
            "google.protobuf.EnumValueOptions",
            1060,
        ),
        ("csi.v1.csi_secret", "google.protobuf.FieldOptions", 1059),
        ("csi.v1.alpha_field", "google.protobuf.FieldOptions", 1060),
        (
            "csi.v1.alpha_message",
            "google.protobuf.MessageOptions",
            1060,
        ),
        ("csi.v1.alpha_method", "google.protobuf.MethodOptions", 1060),
        (
            "csi.v1.alpha_service",
            "google.protobuf.ServiceOptions",
            1060,
        ),
    ];
    for (name, extendee, number) in expected {
        let ext = pool()
            .get_extension_by_name(name)
            .unwrap_or_else(|| panic!("{name} declared"));
        assert_eq!(ext.number(), number, "{name}");
        assert_eq!(ext.containing_message().full_name(), extendee, "{name}");
        assert!(matches!(ext.kind(), prost_reflect::Kind::Bool), "{name}");
    }
}

#[test]
fn alpha_services_and_methods() {
    let mut alpha_methods = BTreeSet::new();
    let mut alpha_services = BTreeSet::new();
    for svc in pool().services() {
        if option_flag(&svc.options(), "csi.v1.alpha_service") {
            alpha_services.insert(svc.name().to_string());
        }
        for m in svc.methods() {
            if option_flag(&m.options(), "csi.v1.alpha_method") {
                alpha_methods.insert(format!("{}.{}", svc.name(), m.name()));
            }
        }
    }
    assert_eq!(
        alpha_methods,
        BTreeSet::from([
            "Controller.GetSnapshot".to_string(),
            "Controller.ControllerGetVolume".to_string()
        ]),
        "ControllerModifyVolume is GA in 1.12; GroupController is GA since 1.11"
    );
    assert_eq!(
        alpha_services,
        BTreeSet::from(["SnapshotMetadata".to_string()])
    );
}

#[test]
fn alpha_messages_fields_and_enum_values() {
    let mut messages = BTreeSet::new();
    let mut fields = BTreeSet::new();
    let mut values = BTreeSet::new();
    for msg in pool().all_messages() {
        if msg.package_name() != "csi.v1" {
            continue;
        }
        if option_flag(&msg.options(), "csi.v1.alpha_message") {
            messages.insert(msg.full_name().to_string());
        }
        for f in msg.fields() {
            if option_flag(&f.options(), "csi.v1.alpha_field") {
                fields.insert(f.full_name().to_string());
            }
        }
    }
    for e in pool().all_enums() {
        if e.package_name() != "csi.v1" {
            continue;
        }
        assert!(
            !option_flag(&e.options(), "csi.v1.alpha_enum"),
            "{}",
            e.full_name()
        );
        for v in e.values() {
            if option_flag(&v.options(), "csi.v1.alpha_enum_value") {
                values.insert(v.full_name().to_string());
            }
        }
    }
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        messages,
        set(&[
            "csi.v1.ControllerGetVolumeRequest",
            "csi.v1.ControllerGetVolumeResponse",
            "csi.v1.GetSnapshotRequest",
            "csi.v1.GetSnapshotResponse",
            "csi.v1.VolumeCondition",
        ])
    );
    assert_eq!(
        fields,
        set(&[
            "csi.v1.GetCapacityResponse.minimum_volume_size",
            "csi.v1.ListVolumesResponse.VolumeStatus.volume_condition",
            "csi.v1.NodeExpandVolumeRequest.secrets",
            "csi.v1.NodeGetVolumeStatsResponse.volume_condition",
        ])
    );
    // Enum values live in the enum's parent scope in protobuf naming.
    assert_eq!(
        values,
        set(&[
            "csi.v1.ControllerServiceCapability.RPC.GET_SNAPSHOT",
            "csi.v1.ControllerServiceCapability.RPC.GET_VOLUME",
            "csi.v1.ControllerServiceCapability.RPC.SINGLE_NODE_MULTI_WRITER",
            "csi.v1.ControllerServiceCapability.RPC.VOLUME_CONDITION",
            "csi.v1.NodeServiceCapability.RPC.SINGLE_NODE_MULTI_WRITER",
            "csi.v1.NodeServiceCapability.RPC.VOLUME_CONDITION",
            "csi.v1.PluginCapability.Service.SNAPSHOT_METADATA_SERVICE",
            "csi.v1.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER",
            "csi.v1.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER",
        ])
    );
}

#[test]
fn secret_fields_carry_csi_secret() {
    let mut secret = BTreeSet::new();
    for msg in pool().all_messages() {
        for f in msg.fields() {
            if option_flag(&f.options(), "csi.v1.csi_secret") {
                assert_eq!(f.name(), "secrets", "{}", f.full_name());
                assert!(f.is_map(), "{} is a map", f.full_name());
                assert!(csi_proto::redact::is_secret_field(&f));
                secret.insert(msg.name().to_string());
            } else {
                assert!(!csi_proto::redact::is_secret_field(&f), "{}", f.full_name());
            }
        }
    }
    let expected: BTreeSet<String> = [
        "CreateVolumeRequest",
        "DeleteVolumeRequest",
        "ControllerPublishVolumeRequest",
        "ControllerUnpublishVolumeRequest",
        "ValidateVolumeCapabilitiesRequest",
        "ControllerModifyVolumeRequest",
        "CreateSnapshotRequest",
        "DeleteSnapshotRequest",
        "ListSnapshotsRequest",
        "GetSnapshotRequest",
        "ControllerExpandVolumeRequest",
        "NodeStageVolumeRequest",
        "NodePublishVolumeRequest",
        "NodeExpandVolumeRequest",
        "CreateVolumeGroupSnapshotRequest",
        "DeleteVolumeGroupSnapshotRequest",
        "GetVolumeGroupSnapshotRequest",
        "GetMetadataAllocatedRequest",
        "GetMetadataDeltaRequest",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(secret, expected);
}

#[test]
fn selected_field_numbers() {
    // Spot checks of numbers that changed or were added in later releases.
    let cases: &[(&str, &str, i32)] = &[
        ("CreateVolumeRequest", "secrets", 5),
        ("CreateVolumeRequest", "accessibility_requirements", 7),
        ("CreateVolumeRequest", "mutable_parameters", 8),
        ("ValidateVolumeCapabilitiesRequest", "mutable_parameters", 6),
        (
            "ValidateVolumeCapabilitiesResponse.Confirmed",
            "mutable_parameters",
            4,
        ),
        ("VolumeCapability.MountVolume", "volume_mount_group", 3),
        ("Snapshot", "group_snapshot_id", 6),
        ("NodeExpandVolumeRequest", "secrets", 6),
        ("NodePublishVolumeRequest", "volume_context", 8),
        ("GetCapacityResponse", "minimum_volume_size", 3),
        ("NodeGetInfoResponse", "accessible_topology", 3),
        ("GetMetadataDeltaRequest", "secrets", 5),
        ("GetMetadataAllocatedResponse", "block_metadata", 3),
        ("GetSnapshotRequest", "secrets", 2),
    ];
    let file = csi_file();
    for (msg, field, number) in cases {
        let m = find_message(&file, msg);
        let f = m
            .field
            .iter()
            .find(|f| f.name() == *field)
            .unwrap_or_else(|| panic!("{msg}.{field}"));
        assert_eq!(f.number(), *number, "{msg}.{field}");
    }
}

#[test]
fn create_volume_secrets_are_redacted() {
    use csi_proto::v1::{
        volume_capability, volume_content_source, CreateVolumeRequest, VolumeCapability,
        VolumeContentSource,
    };
    let req = CreateVolumeRequest {
        name: "pvc-123".into(),
        parameters: [("type".to_string(), "ssd".to_string())].into(),
        secrets: [
            ("username".to_string(), "admin-user-value".to_string()),
            ("password".to_string(), "s3cr3t-value".to_string()),
        ]
        .into(),
        volume_capabilities: vec![VolumeCapability {
            access_type: Some(volume_capability::AccessType::Block(
                volume_capability::BlockVolume {},
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        }],
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: "snap-1".into(),
                },
            )),
        }),
        ..Default::default()
    };

    let text =
        csi_proto::redact::redact_secrets("csi.v1.CreateVolumeRequest", &req.encode_to_vec())
            .expect("renders");
    assert!(!text.contains("admin-user-value"), "{text}");
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(
        text.contains("username") && text.contains("password"),
        "{text}"
    );
    assert!(text.contains(csi_proto::redact::REDACTED), "{text}");
    // Non-secret data is kept.
    for kept in ["pvc-123", "ssd", "snap-1", "SINGLE_NODE_WRITER"] {
        assert!(text.contains(kept), "{kept} missing from {text}");
    }
    // The output is JSON with proto field names.
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["secrets"]["password"], csi_proto::redact::REDACTED);
    assert_eq!(json["name"], "pvc-123");

    // The generic helper gives the same result.
    assert_eq!(csi_proto::redact::redacted_debug(&req), text);
}

#[test]
fn node_stage_secrets_are_redacted() {
    let req = csi_proto::v1::NodeStageVolumeRequest {
        volume_id: "vol-1".into(),
        staging_target_path: "/staging".into(),
        secrets: [("chap".to_string(), "chap-secret-value".to_string())].into(),
        publish_context: [("dev".to_string(), "/dev/sdb".to_string())].into(),
        ..Default::default()
    };
    let text = csi_proto::redact::redacted_debug(&req);
    assert!(!text.contains("chap-secret-value"), "{text}");
    assert!(text.contains("chap") && text.contains("/dev/sdb"), "{text}");
}
