//! Guards the invariant "the production driver does not know fake-cloud": fake-cloud is an
//! optional dependency reachable only through the `fake-cloud` feature, and under
//! driver/src only the modules compiled with that feature name it.

use std::path::{Path, PathBuf};

/// The modules that may name fake-cloud, each declared under `#[cfg(feature = "fake-cloud")]`
/// in its parent module: (the module's file, its parent's file, its declaration).
const GATED: &[(&str, &str, &str)] = &[
    ("src/cloud/memory.rs", "src/cloud/mod.rs", "pub mod memory;"),
    (
        "src/node/loop_source.rs",
        "src/node/mod.rs",
        "mod loop_source;",
    ),
    ("src/embedded.rs", "src/lib.rs", "pub mod embedded;"),
];

const GATE: &str = "#[cfg(feature = \"fake-cloud\")]";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(crate_dir().join(relative))
        .unwrap_or_else(|e| panic!("reading driver/{relative}: {e}"))
}

#[test]
fn fake_cloud_is_an_optional_dependency_behind_its_feature() {
    let manifest = read("Cargo.toml");
    let dependency = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("fake-cloud") && l.contains("workspace"))
        .expect("driver/Cargo.toml names fake-cloud as a dependency");
    assert!(
        dependency.contains("optional = true"),
        "fake-cloud must be an optional dependency of csi-driver: {dependency}"
    );
    assert!(
        manifest
            .lines()
            .any(|l| l.trim() == "fake-cloud = [\"dep:fake-cloud\"]"),
        "the `fake-cloud` feature must be what turns the dependency on"
    );
    let mentions = manifest
        .lines()
        .filter(|l| l.contains("dep:fake-cloud"))
        .count();
    assert_eq!(
        mentions, 1,
        "only the `fake-cloud` feature may enable fake-cloud"
    );
}

#[test]
fn only_the_feature_gated_modules_name_fake_cloud() {
    for (_, parent, declaration) in GATED {
        let text = read(parent);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| l == declaration)
            .unwrap_or_else(|| panic!("driver/{parent} declares `{declaration}`"));
        assert!(
            at > 0 && lines[at - 1] == GATE,
            "driver/{parent}: `{declaration}` must be compiled only with {GATE}"
        );
    }
    let mut offenders = Vec::new();
    let src = crate_dir().join("src");
    for file in rust_files(&src) {
        let relative = file
            .strip_prefix(crate_dir())
            .expect("under the crate")
            .to_string_lossy()
            .into_owned();
        if GATED.iter().any(|(gated, _, _)| *gated == relative) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        if text.contains("fake_cloud::") || text.contains("extern crate fake_cloud") {
            offenders.push(relative);
        }
    }
    assert!(
        offenders.is_empty(),
        "these files name fake_cloud outside the feature-gated modules: {offenders:?}"
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}
