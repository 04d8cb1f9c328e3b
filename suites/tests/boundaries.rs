//! Guards the invariant "suites never depend on the driver": the specs know a CSI driver only
//! through csi.proto, so they judge any driver, and ours gets no favours. Neither the
//! manifest nor the source names the bundled driver, its fake cloud or the harness.

use std::path::{Path, PathBuf};

/// The workspace crates the suites must not reach, as a manifest and as Rust names them.
const FORBIDDEN: &[(&str, &str)] = &[
    ("csi-driver", "csi_driver"),
    ("fake-cloud", "fake_cloud"),
    ("csi-sanity", "csi_sanity"),
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The names of every dependency table's entries in a manifest (`[dependencies]`,
/// `[dev-dependencies]`, `[build-dependencies]`, target-specific ones).
fn dependency_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.trim_end_matches(']').ends_with("dependencies");
            continue;
        }
        if in_dependencies && !line.is_empty() && !line.starts_with('#') {
            let key = line.split(['=', '.']).next().unwrap_or_default().trim();
            names.push(key.trim_matches('"').to_string());
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_manifest_names_no_driver_fake_cloud_or_harness() {
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).expect("Cargo.toml");
    let names = dependency_names(&manifest);
    assert!(
        names.iter().any(|n| n == "csi-proto"),
        "the scan must see the dependencies: {names:?}"
    );
    for (package, _) in FORBIDDEN {
        assert!(
            !names.iter().any(|n| n == package),
            "suites/Cargo.toml depends on {package}: the suites must judge a driver only through csi.proto"
        );
    }
}

#[test]
fn no_source_file_names_the_driver_fake_cloud_or_harness() {
    let mut files = Vec::new();
    for dir in ["src", "tests"] {
        rust_files(&crate_dir().join(dir), &mut files);
    }
    let this_file = crate_dir().join("tests/boundaries.rs");
    for file in files.iter().filter(|f| **f != this_file) {
        let text = std::fs::read_to_string(file).expect("source file");
        for (_, name) in FORBIDDEN {
            assert!(
                !text.contains(&format!("{name}::")) && !text.contains(&format!("use {name}")),
                "{} names {name}: the suites must judge a driver only through csi.proto",
                file.display()
            );
        }
    }
}

#[test]
fn the_manifest_scan_sees_a_forbidden_dependency() {
    let manifest = "[dependencies]\ncsi-proto.workspace = true\n\n[dev-dependencies]\ncsi-driver = { workspace = true }\n";
    assert_eq!(dependency_names(manifest), ["csi-proto", "csi-driver"]);
}
