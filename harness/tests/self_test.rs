//! The harness's self-test: each spec can fail. A proxy in front of the project's
//! driver breaks one rule at a time; the suite, run through the library and filtered to
//! the group concerned, must fail exactly the specs that cover that rule — no fewer
//! (the fault is caught) and no more (the specs are precise) — and say so readably.
//!
//! Each group is first run through a faultless proxy: its failures (a driver still in
//! progress) are the baseline, and the specs a fault targets must pass there.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{Fault, Proxy, TestDriver};

struct Case {
    fault: Fault,
    /// `--ginkgo.focus` for the group concerned.
    focus: &'static str,
    /// The RPC the failure message must name.
    rpc: &'static str,
    /// The specs that must fail (full names), and only they.
    expect: &'static [&'static str],
    /// A test volume size other than 1 GiB, when the fault needs one to show.
    volume_size: Option<i64>,
}

const CASES: &[Case] = &[
    Case {
        fault: Fault::DeleteMalformedVolumeIdInvalid,
        focus: "^Controller::DeleteVolume::",
        rpc: "DeleteVolume",
        expect: &["Controller::DeleteVolume::succeeds for a volume id that does not exist"],
        volume_size: None,
    },
    Case {
        fault: Fault::SnapshotWithoutCreationTime,
        focus: "^Controller::(ListSnapshots|GetSnapshot|CreateSnapshot)::",
        rpc: "Snapshot",
        expect: &[
            "Controller::ListSnapshots::returns exactly the snapshot asked for by snapshot id",
            "Controller::ListSnapshots::returns the snapshots of a source volume when filtered by it",
            "Controller::ListSnapshots::shows a new snapshot and no longer shows it once it is deleted",
            "Controller::ListSnapshots::pages with max_entries and next_token, returning every snapshot once",
            "Controller::GetSnapshot::returns the snapshot with the given id",
            "Controller::CreateSnapshot::returns the same snapshot when asked again with the same name and source",
            "Controller::CreateSnapshot::fails with ALREADY_EXISTS when the name exists with a different source volume",
            "Controller::CreateSnapshot::accepts a name of the maximum length, 128 bytes",
        ],
        volume_size: None,
    },
    Case {
        fault: Fault::DeleteUnknownVolumeNotFound,
        focus: "^Controller::DeleteVolume::",
        rpc: "DeleteVolume",
        expect: &["Controller::DeleteVolume::succeeds for a volume id that does not exist"],
        volume_size: None,
    },
    Case {
        fault: Fault::CreateVolumeIgnoresCapacity,
        focus: "^Controller::CreateVolume::",
        rpc: "CreateVolume",
        expect: &[
            "Controller::CreateVolume::creates a volume of at least the requested capacity",
            "Controller::CreateVolume::returns the same volume when asked again with the same name and capacity",
            "Controller::CreateVolume::fails with ALREADY_EXISTS when the name exists with a different capacity",
            // Go checks the capacity here too.
            "Controller::CreateVolume::accepts a name of the maximum length, 128 bytes",
        ],
        // Larger than the driver's default size, so a dropped capacity shows.
        volume_size: Some(5 << 30),
    },
    Case {
        fault: Fault::CreateVolumeAcceptsNoName,
        focus: "^Controller::CreateVolume::",
        rpc: "CreateVolume",
        expect: &["Controller::CreateVolume::fails with INVALID_ARGUMENT when no name is given"],
        volume_size: None,
    },
    Case {
        fault: Fault::ListVolumesIgnoresToken,
        focus: "^Controller::ListVolumes",
        rpc: "ListVolumes",
        expect: &[
            "Controller::ListVolumes fails with ABORTED when the starting_token is invalid",
            "Controller::ListVolumes pagination returns every volume once, takes opaque tokens, sees volumes added between pages and accepts a token whose last volume was deleted",
        ],
        volume_size: None,
    },
    Case {
        fault: Fault::PluginNameInvalid,
        focus: "^Identity::",
        rpc: "GetPluginInfo",
        expect: &["Identity::GetPluginInfo returns a valid name and a non-empty version"],
        volume_size: None,
    },
    Case {
        fault: Fault::ProbeFails,
        focus: "^Identity::",
        rpc: "Probe",
        expect: &["Identity::Probe answers, and a ready value when given is a boolean"],
        volume_size: None,
    },
    Case {
        fault: Fault::ValidateConfirmsNothing,
        focus: "^Controller::ValidateVolumeCapabilities::",
        rpc: "ValidateVolumeCapabilities",
        expect: &["Controller::ValidateVolumeCapabilities::confirms the capabilities a volume was created with"],
        volume_size: None,
    },
    Case {
        fault: Fault::PublishAcceptsMissingNode,
        focus: "^Controller::ControllerPublishVolume::",
        rpc: "ControllerPublishVolume",
        expect: &["Controller::ControllerPublishVolume::fails with NOT_FOUND for a node that does not exist"],
        volume_size: None,
    },
    Case {
        fault: Fault::CreateSnapshotIgnoresName,
        focus: "^Controller::CreateSnapshot::",
        rpc: "CreateSnapshot",
        expect: &[
            "Controller::CreateSnapshot::returns the same snapshot when asked again with the same name and source",
            "Controller::CreateSnapshot::fails with ALREADY_EXISTS when the name exists with a different source volume",
        ],
        volume_size: None,
    },
    Case {
        fault: Fault::DeleteUnknownSnapshotNotFound,
        focus: "^Controller::DeleteSnapshot::",
        rpc: "DeleteSnapshot",
        expect: &["Controller::DeleteSnapshot::succeeds for a snapshot id that does not exist"],
        volume_size: None,
    },
    Case {
        fault: Fault::ListSnapshotsIgnoresSnapshotId,
        focus: "^Controller::ListSnapshots::",
        rpc: "ListSnapshots",
        expect: &["Controller::ListSnapshots::returns exactly the snapshot asked for by snapshot id"],
        volume_size: None,
    },
    Case {
        fault: Fault::ExpandReportsLess,
        focus: "^Controller::ControllerExpandVolume::",
        rpc: "ControllerExpandVolume",
        expect: &["Controller::ControllerExpandVolume::expands a volume to at least the requested capacity"],
        volume_size: None,
    },
    Case {
        fault: Fault::ControllerCapabilityUnknown,
        focus: "^Controller::ControllerGetCapabilities",
        rpc: "ControllerGetCapabilities",
        expect: &["Controller::ControllerGetCapabilities returns only known capability values"],
        volume_size: None,
    },
    Case {
        fault: Fault::NodeUnpublishLeavesTarget,
        focus: "^Node::NodeUnpublishVolume::",
        rpc: "NodeUnpublishVolume",
        expect: &["Node::NodeUnpublishVolume::removes the target path it unpublishes"],
        volume_size: None,
    },
    Case {
        fault: Fault::StatsNotFoundAnswersOk,
        focus: "^Node::NodeGetVolumeStats::",
        rpc: "NodeGetVolumeStats",
        expect: &[
            "Node::NodeGetVolumeStats::fails with NOT_FOUND for a volume that does not exist",
            "Node::NodeGetVolumeStats::fails with NOT_FOUND when the volume is not at the given path",
        ],
        volume_size: None,
    },
    Case {
        fault: Fault::NodeInfoWithoutNodeId,
        focus: "^Node::NodeGetInfo",
        rpc: "NodeGetInfo",
        expect: &["Node::NodeGetInfo returns a node id and a non-negative volume limit"],
        volume_size: None,
    },
    Case {
        fault: Fault::StageAcceptsNoStagingPath,
        focus: "^Node::NodeStageVolume::",
        rpc: "NodeStageVolume",
        expect: &["Node::NodeStageVolume::fails with INVALID_ARGUMENT when no staging path is given"],
        volume_size: None,
    },
];

fn run_through(
    rt: &tokio::runtime::Runtime,
    driver: &TestDriver,
    fault: Fault,
    case: &Case,
) -> csi_sanity::Report {
    let proxy = rt.block_on(Proxy::start(&driver.endpoint(), fault));
    let mut config = driver.config(&proxy.endpoint).focus(case.focus);
    if let Some(size) = case.volume_size {
        config.suite.volume_size = size;
        config.volume_size_set = true;
    }
    let report = csi_sanity::run(config).expect("the run starts");
    drop(proxy);
    report
}

#[test]
fn each_fault_fails_exactly_the_specs_that_cover_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let mut baselines: HashMap<(&str, Option<i64>), csi_sanity::Report> = HashMap::new();
    let mut problems = Vec::new();
    let mut caught = 0;
    for case in CASES {
        let baseline = baselines
            .entry((case.focus, case.volume_size))
            .or_insert_with(|| run_through(&rt, &driver, Fault::None, case))
            .clone();
        for name in case.expect {
            match baseline.outcome(name).map(|o| &o.status) {
                Some(csi_sanity::Status::Passed) => {}
                other => problems.push(format!(
                    "{:?}: {name} must pass without the fault, but: {other:?}",
                    case.fault
                )),
            }
        }
        let report = run_through(&rt, &driver, case.fault, case);
        let failed: BTreeSet<String> = report.failed_names().into_iter().collect();
        let mut want: BTreeSet<String> = baseline.failed_names().into_iter().collect();
        want.extend(case.expect.iter().map(|s| s.to_string()));
        if failed != want {
            problems.push(format!(
                "{:?}: expected exactly {want:#?} to fail, got {failed:#?}",
                case.fault
            ));
            continue;
        }
        for name in case.expect {
            let Some(csi_sanity::Status::Failed(msg)) = report.outcome(name).map(|o| &o.status)
            else {
                continue;
            };
            if !msg.contains(case.rpc) || !msg.contains("expected") {
                problems.push(format!(
                    "{:?}: the failure of {name} does not name {} and what was expected:\n{msg}",
                    case.fault, case.rpc
                ));
            }
        }
        caught += 1;
    }
    println!(
        "self-test: {caught} of {} faults each failed exactly the specs that cover them",
        CASES.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(CASES.len() >= 10);
}

/// A driver that drops the mount flags a CO asks for gets a warning (the spec says the
/// flags "can be used"), from the node lifecycle specs, and passes otherwise.
#[test]
fn dropped_mount_flags_are_a_warning_of_the_node_lifecycle() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the specs mount)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    for (fault, warned) in [(Fault::None, false), (Fault::DropsMountFlags, true)] {
        let proxy = rt.block_on(Proxy::start(&driver.endpoint(), fault));
        let config = driver
            .config(&proxy.endpoint)
            .focus("^Node::a volume can be staged, published, unpublished and unstaged$");
        let report = csi_sanity::run(config).expect("the run starts");
        assert_eq!(report.failed, 0, "{fault:?}: {}", report.summary());
        assert_eq!(report.passed, 1, "{fault:?}: {}", report.summary());
        let warnings: Vec<&String> = report.outcomes.iter().flat_map(|o| &o.warnings).collect();
        assert_eq!(!warnings.is_empty(), warned, "{fault:?}: {warnings:?}");
        if warned {
            assert!(
                warnings[0].contains("noatime") && warnings[0].contains("mount_flags"),
                "{}",
                warnings[0]
            );
        }
        drop(proxy);
    }
    rt.block_on(async { drop(driver) });
}
