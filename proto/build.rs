//! Compiles `csi.proto` with protox (pure Rust, no `protoc` needed) and
//! generates prost messages plus tonic clients and servers.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=csi.proto");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("csi_descriptor.bin");

    // protox bundles the google/protobuf well-known files, so the imports of
    // descriptor.proto, timestamp.proto and wrappers.proto resolve on their own.
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(["csi.proto"])?;

    // The encoded set must come straight from protox: converting it to
    // `prost_types::FileDescriptorSet` first would drop the values of custom
    // options such as `(csi_secret)` and `(alpha_method)`, which prost keeps
    // only as unknown fields. We write it ourselves because prost-build only
    // writes `file_descriptor_set_path` when it runs protoc.
    std::fs::write(&descriptor_path, compiler.encode_file_descriptor_set())?;
    let fds = compiler.file_descriptor_set();

    // Type names give every message a `prost::Name` impl (`csi.v1.Foo`),
    // which the redaction helpers use to find a message's descriptor.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;

    Ok(())
}
