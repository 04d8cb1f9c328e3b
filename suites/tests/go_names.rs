//! Every Go csi-sanity spec name belongs to exactly one core spec, and every Go name a
//! spec carries is one of Go's (suites/data/go-sanity-specs.txt, as ginkgo prints them).

use std::collections::HashMap;

use csi_suites::go_names::GO_PENDING;

/// (pending, name) for each Go spec in the data file.
fn go_specs() -> Vec<(bool, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/go-sanity-specs.txt");
    let text = std::fs::read_to_string(path).expect("the Go names file is in the repo");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| match l.strip_prefix("PENDING\t") {
            Some(name) => (true, name.to_string()),
            None => (false, l.to_string()),
        })
        .collect()
}

#[test]
fn every_go_spec_has_exactly_one_counterpart() {
    let go = go_specs();
    assert_eq!(go.len(), 96, "Go csi-sanity has 96 specs, one pending");
    let specs = csi_suites::all();
    let mut owners: HashMap<&str, Vec<String>> = HashMap::new();
    for s in &specs {
        if let Some(g) = s.go_name {
            owners.entry(g).or_default().push(s.full_name());
        }
    }
    for (pending, name) in &go {
        let found = owners.get(name.as_str()).cloned().unwrap_or_default();
        assert_eq!(found.len(), 1, "Go spec {name:?} belongs to {found:?}");
        assert_eq!(*pending, name == GO_PENDING, "{name:?}: pending as in Go");
    }
    assert_eq!(
        owners.len(),
        go.len(),
        "a spec carries a name Go does not have"
    );
}

#[test]
fn only_core_specs_carry_go_names_and_compat_runs_exactly_the_95() {
    let specs = csi_suites::all();
    for s in &specs {
        if s.is_beyond() {
            assert!(
                s.go_name.is_none(),
                "{} is Beyond but has a Go name",
                s.full_name()
            );
        }
    }
    let compat = specs.iter().filter(|s| s.in_compat()).count();
    assert_eq!(
        compat, 95,
        "the compat profile runs Go's 95 non-pending specs"
    );
    // The one core spec without a Go counterpart is ours alone (spec issue #433).
    let without: Vec<String> = specs
        .iter()
        .filter(|s| !s.is_beyond() && s.go_name.is_none())
        .map(|s| s.full_name())
        .collect();
    assert_eq!(without.len(), 1, "{without:?}");
}
