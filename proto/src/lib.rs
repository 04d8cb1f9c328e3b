//! Rust bindings for the Container Storage Interface (CSI) v1.12.0 gRPC API.
//!
//! The crate compiles the project's own transcription of the CSI protobuf
//! schema (`csi.proto`, package `csi.v1`) at build time with the pure-Rust
//! `protox` compiler and `tonic-prost-build`, so no `protoc` is needed. It
//! exposes the generated prost message types together with tonic clients and
//! servers for all five CSI services under [`v1`], the encoded file
//! descriptor set as [`FILE_DESCRIPTOR_SET`] for reflection, and the
//! [`redact`] module for logging requests without leaking `csi_secret` fields.

/// Generated CSI types, clients and servers (protobuf package `csi.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    tonic::include_proto!("csi.v1");
}

pub mod redact;

/// The CSI specification version that `csi.proto` transcribes.
pub const CSI_SPEC_VERSION: &str = "1.12.0";

/// Encoded `google.protobuf.FileDescriptorSet` for `csi.proto` and its
/// imports (descriptor, timestamp and wrappers), including source info.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/csi_descriptor.bin"));

/// Re-export so callers of [`redact`] can name descriptor and dynamic-message
/// types without adding their own `prost-reflect` dependency.
pub use prost_reflect;
