//! The self-test of the specs beyond csi-sanity: a proxy in front of the project's
//! driver breaks one rule at a time (see `beyond_common::BeyondFault`); the suite,
//! filtered to the group concerned, must fail exactly the specs that cover that rule,
//! and say what it expected.
//!
//! As in `self_test.rs`, each group first runs through a faultless proxy: its failures
//! (a driver still in progress) are the baseline, and the specs a fault targets must
//! pass there.

mod beyond_common;
mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use beyond_common::{BeyondFault, FaultProxy};
use common::TestDriver;

struct Case {
    fault: BeyondFault,
    /// The group concerned, as a `--ginkgo.focus` regex.
    focus: &'static str,
    /// Words of the spec names that must fail (each picks exactly one spec of the group).
    expect: &'static [&'static str],
}

const ERRORS: &str = "^Beyond::ErrorTable::";
const RETRIES: &str = "^Beyond::Retries::";
const REPEATS: &str = "^Beyond::Repeats::";
const CONCURRENCY: &str = "^Beyond::Concurrency::";
const INTEGRITY: &str = "^Beyond::DataIntegrity::";
const CO_SIM: &str = "^Beyond::CoSimulation::";

const CASES: &[Case] = &[
    Case {
        fault: BeyondFault::PublishedNodesEmptyId,
        focus: ERRORS,
        expect: &["report published_node_ids exactly"],
    },
    Case {
        fault: BeyondFault::GetVolumeFindsAnything,
        focus: ERRORS,
        expect: &["ControllerGetVolume fails with NOT_FOUND for an unknown volume id"],
    },
    Case {
        fault: BeyondFault::PublishElsewhereSucceeds,
        focus: ERRORS,
        expect: &["published to a second node"],
    },
    Case {
        fault: BeyondFault::StageIgnoresMismatch,
        focus: ERRORS,
        expect: &["with the other access type"],
    },
    Case {
        fault: BeyondFault::NodePublishIgnoresMismatch,
        focus: ERRORS,
        expect: &["another readonly setting"],
    },
    Case {
        fault: BeyondFault::UnstageUnstagedNotFound,
        focus: ERRORS,
        expect: &["NodeUnstageVolume succeeds for a volume that is not staged"],
    },
    Case {
        fault: BeyondFault::UnpublishUnattachedNotFound,
        focus: ERRORS,
        expect: &["ControllerUnpublishVolume succeeds for a volume that is not published"],
    },
    Case {
        fault: BeyondFault::LongNameInternal,
        focus: ERRORS,
        expect: &["a name longer than 128 bytes"],
    },
    Case {
        fault: BeyondFault::BigMapsUnknown,
        focus: ERRORS,
        expect: &[
            "CreateVolume accepts a parameters map",
            "CreateSnapshot accepts a parameters map",
        ],
    },
    Case {
        fault: BeyondFault::LongPathsRejected,
        focus: ERRORS,
        expect: &["paths of 128 bytes"],
    },
    Case {
        fault: BeyondFault::ListSnapshotsBadTokenOk,
        focus: ERRORS,
        expect: &["ListSnapshots fails with ABORTED"],
    },
    Case {
        fault: BeyondFault::GetVolumeNotFoundInternal,
        focus: ERRORS,
        expect: &["ControllerGetVolume fails with NOT_FOUND"],
    },
    Case {
        fault: BeyondFault::GetSnapshotDeletedOk,
        focus: ERRORS,
        expect: &["GetSnapshot fails with NOT_FOUND"],
    },
    Case {
        fault: BeyondFault::RestoreIgnoresCapacity,
        focus: ERRORS,
        expect: &["OUT_OF_RANGE"],
    },
    Case {
        fault: BeyondFault::ExistingNameIgnoresSource,
        focus: ERRORS,
        expect: &["another content source"],
    },
    Case {
        fault: BeyondFault::ExpandUnknownOk,
        focus: ERRORS,
        expect: &["ControllerExpandVolume fails with NOT_FOUND"],
    },
    Case {
        fault: BeyondFault::StatsNotFoundOk,
        focus: ERRORS,
        expect: &["NodeGetVolumeStats fails with NOT_FOUND"],
    },
    Case {
        fault: BeyondFault::StageRequiredInvalidArgument,
        focus: ERRORS,
        expect: &["gets no staging path"],
    },
    Case {
        fault: BeyondFault::ModifyAppliesThenRejects,
        focus: ERRORS,
        expect: &["ControllerModifyVolume rejected"],
    },
    Case {
        fault: BeyondFault::AbortedAfterCutOff,
        focus: RETRIES,
        expect: &[
            "CreateVolume cut off",
            "DeleteVolume cut off",
            "ControllerPublishVolume cut off",
            "ControllerUnpublishVolume cut off",
            "NodeStageVolume cut off",
            "NodeUnstageVolume cut off",
            "NodePublishVolume cut off",
            "NodeUnpublishVolume cut off",
            "CreateSnapshot cut off",
            "DeleteSnapshot cut off",
            "ControllerExpandVolume cut off",
        ],
    },
    Case {
        fault: BeyondFault::CreateVolumeLeaksOnCutOff,
        focus: RETRIES,
        expect: &["CreateVolume cut off"],
    },
    Case {
        fault: BeyondFault::VolumeContextChangesOnRepeat,
        focus: REPEATS,
        expect: &["CreateVolume repeated"],
    },
    Case {
        fault: BeyondFault::SnapshotTimeMoves,
        focus: REPEATS,
        expect: &["CreateSnapshot repeated"],
    },
    Case {
        fault: BeyondFault::ExpandFlipsNodeExpansion,
        focus: REPEATS,
        expect: &["ControllerExpandVolume repeated"],
    },
    Case {
        fault: BeyondFault::ModifyFailsOnRepeat,
        focus: REPEATS,
        expect: &["ControllerModifyVolume repeated"],
    },
    Case {
        fault: BeyondFault::StageStacksMounts,
        focus: REPEATS,
        expect: &["leave one mount each"],
    },
    Case {
        fault: BeyondFault::CreateVolumeRacesOnName,
        focus: CONCURRENCY,
        expect: &["with one name"],
    },
    Case {
        fault: BeyondFault::ConcurrentPublishInternal,
        focus: CONCURRENCY,
        expect: &["to one node attach every volume", "parallel lifecycles"],
    },
    Case {
        fault: BeyondFault::PublishContextOfAnother,
        focus: CONCURRENCY,
        expect: &["parallel lifecycles"],
    },
    Case {
        fault: BeyondFault::PublishShowsEmptyFs,
        focus: INTEGRITY,
        expect: &[
            "reads back after",
            "restored from a snapshot",
            "a clone holds",
            "an expanded volume",
        ],
    },
    Case {
        fault: BeyondFault::PublishDroppedForOtherNode,
        focus: CO_SIM,
        expect: &["moving to another node"],
    },
    Case {
        fault: BeyondFault::DeleteSlowerThanProvisionerTimeout,
        focus: CO_SIM,
        expect: &["whole lifecycle"],
    },
    Case {
        fault: BeyondFault::NodePublishIgnoresNewTarget,
        focus: CO_SIM,
        expect: &["restarted on the same node"],
    },
];

/// The full name of the one spec of `focus`'s group whose name contains `words`.
fn spec_named(focus: &str, words: &str) -> String {
    let group = focus.trim_start_matches('^');
    let names: Vec<String> = csi_suites::all()
        .iter()
        .map(|s| s.full_name())
        .filter(|n| n.starts_with(group) && n.contains(words))
        .collect();
    assert_eq!(
        names.len(),
        1,
        "{words:?} must pick one spec of {group}: {names:?}"
    );
    names[0].clone()
}

fn run_through(
    rt: &tokio::runtime::Runtime,
    driver: &TestDriver,
    fault: BeyondFault,
    focus: &str,
) -> csi_sanity::Report {
    let proxy = rt.block_on(FaultProxy::start(&driver.endpoint(), fault));
    let mut config = driver.config(&proxy.endpoint).focus(focus);
    // Long enough for a driver that answers ABORTED for a moment, short enough that a
    // call stuck for good fails fast.
    config.suite.retry_budget = Duration::from_secs(3);
    let report = csi_sanity::run(config).expect("the run starts");
    drop(proxy);
    report
}

#[test]
fn each_beyond_fault_fails_exactly_the_specs_that_cover_it() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the faults and specs mount)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let mut baselines: HashMap<&str, csi_sanity::Report> = HashMap::new();
    let mut problems = Vec::new();
    let mut caught = BTreeSet::new();
    for case in CASES {
        let expect: Vec<String> = case
            .expect
            .iter()
            .map(|w| spec_named(case.focus, w))
            .collect();
        let baseline = baselines
            .entry(case.focus)
            .or_insert_with(|| run_through(&rt, &driver, BeyondFault::None, case.focus))
            .clone();
        for name in &expect {
            match baseline.outcome(name).map(|o| &o.status) {
                Some(csi_sanity::Status::Passed) => {}
                other => problems.push(format!(
                    "{:?}: {name} must pass without the fault, but: {other:?}",
                    case.fault
                )),
            }
        }
        let report = run_through(&rt, &driver, case.fault, case.focus);
        let failed: BTreeSet<String> = report.failed_names().into_iter().collect();
        let mut want: BTreeSet<String> = baseline.failed_names().into_iter().collect();
        want.extend(expect.iter().cloned());
        if failed != want {
            let why: Vec<String> = failed
                .symmetric_difference(&want)
                .map(|name| format!("{name}: {:?}", report.outcome(name).map(|o| &o.status)))
                .collect();
            problems.push(format!(
                "{:?}: expected exactly {want:#?} to fail, got {failed:#?}\n{}",
                case.fault,
                why.join("\n")
            ));
            continue;
        }
        for name in &expect {
            if let Some(csi_sanity::Status::Failed(msg)) = report.outcome(name).map(|o| &o.status) {
                if !msg.contains("expected") {
                    problems.push(format!(
                        "{:?}: the failure of {name} does not say what was expected:\n{msg}",
                        case.fault
                    ));
                }
            }
        }
        caught.extend(expect);
    }
    let beyond = csi_suites::beyond::specs().len();
    println!(
        "beyond self-test: {} faults; {} of {beyond} beyond specs seen to fail against a fault",
        CASES.len(),
        caught.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    rt.block_on(async { drop(driver) });
}

/// The offline-only expansion rule applies only to a plugin that advertises OFFLINE
/// expansion alone, which the project's driver does not: the proxy makes it look so,
/// once conforming (the spec must pass) and once not (it must fail).
#[test]
fn the_offline_only_expansion_spec_passes_and_fails_as_it_should() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const FOCUS: &str =
        "^Beyond::ErrorTable::ControllerExpandVolume fails with FAILED_PRECONDITION";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let good = run_through(&rt, &driver, BeyondFault::OfflineOnlyConforming, FOCUS);
    assert!(good.success() && good.passed == 1, "{good}");
    let bad = run_through(
        &rt,
        &driver,
        BeyondFault::OfflineOnlyExpandsPublished,
        FOCUS,
    );
    assert_eq!(bad.failed, 1, "{bad}");
}

/// The shapes of hostpathplugin that are not spec violations must not fail, and a spec
/// that relies on an observation the driver gets wrong names that first cause instead
/// of failing on a rule of its own.
#[test]
fn reference_driver_shapes_get_a_true_verdict() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the specs mount)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let mut problems = Vec::new();

    // "Volume in use" is the plugin's judgement: a warning, not a failure.
    let report = run_through(&rt, &driver, BeyondFault::DeleteInUseSucceeds, ERRORS);
    let name = spec_named(ERRORS, "DeleteVolume fails with FAILED_PRECONDITION while");
    match report.outcome(&name) {
        Some(o) if o.status == csi_sanity::Status::Passed && o.warnings.len() == 1 => {}
        other => problems.push(format!(
            "DeleteInUseSucceeds: {name} must pass with one warning: {other:?}"
        )),
    }
    assert!(
        report.summary().contains(", 1 warning"),
        "{}",
        report.summary()
    );

    // A shared filesystem's size says nothing about the volume: the NodeExpandVolume
    // spec passes.
    let report = run_through(
        &rt,
        &driver,
        BeyondFault::StatsShowSharedFilesystem,
        "^Node::NodeExpandVolume::",
    );
    if !report.failed_names().is_empty() {
        problems.push(format!(
            "StatsShowSharedFilesystem: {:?} failed",
            report.failed_names()
        ));
    }

    // published_node_ids [""]: the specs that rely on it are not judged, and say why.
    let report = run_through(&rt, &driver, BeyondFault::PublishedNodesEmptyId, "^Beyond::(Retries|SlowCloud|Concurrency)::.*(ControllerPublishVolume|ControllerUnpublishVolume)");
    for o in &report.outcomes {
        match &o.status {
            csi_sanity::Status::Failed(msg) => problems.push(format!(
                "PublishedNodesEmptyId: {} failed on another rule:\n{msg}",
                o.full_name()
            )),
            csi_sanity::Status::Skipped(why)
                if !why.contains("report published_node_ids exactly") =>
            {
                problems.push(format!(
                    "PublishedNodesEmptyId: {} skipped without naming the cause: {why}",
                    o.full_name()
                ))
            }
            _ => {}
        }
    }
    assert!(report.skipped >= 3, "{}", report.summary());

    // A driver that "finds" any volume: the retried delete is not judged on it.
    let report = run_through(
        &rt,
        &driver,
        BeyondFault::GetVolumeFindsAnything,
        "^Beyond::Retries::DeleteVolume",
    );
    match report.outcomes.first().map(|o| &o.status) {
        Some(csi_sanity::Status::Skipped(why))
            if why.contains("ControllerGetVolume fails with NOT_FOUND") => {}
        other => problems.push(format!(
            "GetVolumeFindsAnything: the retried delete must name the cause: {other:?}"
        )),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    rt.block_on(async { drop(driver) });
}
