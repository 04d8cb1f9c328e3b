//! `--ginkgo.focus`/`--ginkgo.skip` select what they select in the Go csi-sanity.
//!
//! The regexes are of the kind driver CI scripts pass to the Go csi-sanity. For each,
//! the core specs we select must be exactly the counterparts of the Go specs that the same
//! regexes select over Go's names (suites/data/go-sanity-specs.txt), and no Beyond spec
//! may come in by accident.

use std::collections::BTreeSet;

use csi_sanity::select::select;
use csi_suites::go_names::GO_PENDING;
use csi_suites::Profile;
use regex::Regex;

fn go_names() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../suites/data/go-sanity-specs.txt"
    );
    std::fs::read_to_string(path)
        .expect("the Go names file is in the repo")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.starts_with("PENDING\t"))
        .map(str::to_string)
        .collect()
}

/// What Go runs: a focus matches (or none is given) and no skip matches.
fn go_selects(focus: &[&str], skip: &[&str]) -> BTreeSet<String> {
    let f: Vec<Regex> = focus.iter().map(|r| Regex::new(r).unwrap()).collect();
    let s: Vec<Regex> = skip.iter().map(|r| Regex::new(r).unwrap()).collect();
    go_names()
        .into_iter()
        .filter(|n| {
            (f.is_empty() || f.iter().any(|r| r.is_match(n))) && !s.iter().any(|r| r.is_match(n))
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Regexes as Go users pass them: by service, by RPC, by It text, with alternation.
const TABLE: &[(&[&str], &[&str])] = &[
    (&["Node Service"], &[]),
    (&[r"\[Controller Server\]"], &[]),
    (&["Controller Service"], &[]),
    (&["Identity Service"], &[]),
    (&[], &["should work"]),
    (&[], &["should fail when no volume id is provided"]),
    (&[], &["should work|should be idempotent"]),
    (&["NodeStageVolume"], &[]),
    (&["CreateVolume"], &[]),
    (&["ListSnapshots|GetSnapshot"], &[]),
    (&["ExpandVolume"], &[]),
    (&["ModifyVolume"], &[]),
    (&["GroupController"], &[]),
    (&["Node Service", "Identity Service"], &["NodeExpandVolume"]),
    (&[], &["ListVolumes|GetCapacity|ValidateVolumeCapabilities"]),
    (
        &[],
        &["should not fail when creating volume with maximum-length name"],
    ),
    (&[], &["maximum-length name|max attach limit|ListSnapshots"]),
    (&["should fail"], &[]),
    (&["^Node Service NodeGetVolumeStats"], &[]),
    (&["volume lifecycle"], &[]),
    (&[".*"], &[]),
];

#[test]
fn go_regexes_select_what_go_selects_in_both_profiles() {
    for profile in [Profile::Full, Profile::Compat] {
        for (focus, skip) in TABLE {
            let want = go_selects(focus, skip);
            let got = select(csi_suites::all(), profile, &strings(focus), &strings(skip))
                .unwrap_or_else(|e| panic!("focus {focus:?} skip {skip:?}: {e:#}"));
            let beyond: Vec<String> = got
                .specs
                .iter()
                .filter(|s| s.is_beyond())
                .map(|s| s.full_name())
                .collect();
            let core: BTreeSet<String> = got
                .specs
                .iter()
                .filter(|s| !s.is_beyond())
                .filter_map(|s| s.go_name)
                // Pending in Go; the full profile runs it on purpose.
                .filter(|g| *g != GO_PENDING)
                .map(str::to_string)
                .collect();
            assert_eq!(core, want, "{profile:?}: focus {focus:?} skip {skip:?}");
            if !focus.is_empty() {
                assert!(
                    beyond.is_empty(),
                    "focus {focus:?} pulled in Beyond specs {beyond:?}"
                );
            }
        }
    }
}

#[test]
fn every_go_name_selects_exactly_its_counterpart() {
    for name in go_names() {
        let focus = vec![format!("^{}$", regex::escape(&name))];
        let got = select(csi_suites::all(), Profile::Compat, &focus, &[]).unwrap();
        let names: Vec<Option<&str>> = got.specs.iter().map(|s| s.go_name).collect();
        assert_eq!(names, vec![Some(name.as_str())], "focus on {name:?}");
    }
}

#[test]
fn a_focus_that_selects_nothing_is_an_error_naming_it_with_suggestions() {
    let err = select(
        csi_suites::all(),
        Profile::Full,
        &strings(&["NodeStageVolum3"]),
        &[],
    )
    .err()
    .expect("an empty selection is an error");
    let msg = format!("{err:#}");
    assert!(msg.contains("no spec is selected"), "{msg}");
    assert!(msg.contains("NodeStageVolum3"), "{msg}");
    // Only a skip that leaves nothing is an error too.
    assert!(select(csi_suites::all(), Profile::Compat, &[], &strings(&[".*"])).is_err());
}

#[test]
fn beyond_specs_come_only_when_the_focus_names_them() {
    let got = select(
        csi_suites::all(),
        Profile::Full,
        &strings(&["Beyond::Retries"]),
        &[],
    )
    .unwrap();
    assert!(!got.specs.is_empty());
    assert!(got.specs.iter().all(|s| s.group == "Beyond::Retries"));
    // Our own names still work for core specs, as before.
    let got = select(
        csi_suites::all(),
        Profile::Full,
        &strings(&["^Node::NodeStageVolume::"]),
        &[],
    )
    .unwrap();
    assert_eq!(got.specs.len(), 3);
    // The compat profile has no Beyond specs at all.
    assert!(select(
        csi_suites::all(),
        Profile::Compat,
        &strings(&["Beyond"]),
        &[]
    )
    .is_err());
}
