//! The model as the driver's in-memory backend sees it: the state machine and
//! its errors, action timing on a virtual clock, injected action errors,
//! persistence across a restart, and block data in image files.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use fake_cloud::clock::{Clock, VirtualClock};
use fake_cloud::{
    ActionKind, ActionStatus, Cloud, CloudConfig, CloudError, CreateVolumeRequest, Faults,
    LatencyConfig, Volume,
};

const GIB: u64 = 1 << 30;

fn latency(attach: u64, detach: u64, resize: u64) -> LatencyConfig {
    LatencyConfig {
        attach: Duration::from_secs(attach),
        detach: Duration::from_secs(detach),
        resize: Duration::from_secs(resize),
        jitter: Duration::ZERO,
    }
}

fn config() -> CloudConfig {
    CloudConfig {
        droplets: vec![(1, "nyc3".into()), (2, "nyc3".into()), (3, "sfo3".into())],
        latency: latency(10, 20, 30),
        ..CloudConfig::default()
    }
}

fn cloud_with(config: CloudConfig) -> (Cloud, Arc<VirtualClock>) {
    let clock = Arc::new(VirtualClock::starting_now());
    (Cloud::with_clock(config, clock.clone()), clock)
}

fn cloud() -> (Cloud, Arc<VirtualClock>) {
    cloud_with(config())
}

fn request(name: &str, size_gib: u64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        region: "nyc3".into(),
        size_gib,
        ..CreateVolumeRequest::default()
    }
}

fn volume(cloud: &Cloud, name: &str) -> Volume {
    cloud
        .create_volume(request(name, 10))
        .expect("create volume")
}

fn attached(cloud: &Cloud, clock: &VirtualClock, volume_id: &str, droplet: u64) {
    cloud.attach(volume_id, droplet).expect("attach");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        cloud.get_volume(volume_id).unwrap().droplet_ids,
        vec![droplet]
    );
}

fn assert_error(result: Result<impl std::fmt::Debug, CloudError>, status: u16, text: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.status, status, "{e}");
            assert!(e.message.contains(text), "{e:?} should contain {text:?}");
        }
        Ok(v) => panic!("expected {status} {text:?}, got {v:?}"),
    }
}

#[test]
fn volume_names_sizes_and_regions_are_validated() {
    let (cloud, _) = cloud();
    assert_error(cloud.create_volume(request("Bad_Name", 10)), 422, "name");
    assert_error(cloud.create_volume(request("1abc", 10)), 422, "name");
    assert_error(
        cloud.create_volume(request(&"a".repeat(65), 10)),
        422,
        "name",
    );
    assert_error(cloud.create_volume(request("ok", 0)), 422, "size_gigabytes");
    assert_error(
        cloud.create_volume(request("ok", 16385)),
        422,
        "size_gigabytes",
    );
    let mut elsewhere = request("ok", 10);
    elsewhere.region = "mars1".into();
    assert_error(cloud.create_volume(elsewhere), 422, "region");
    let mut fs = request("ok", 10);
    fs.filesystem_type = Some("ntfs".into());
    assert_error(cloud.create_volume(fs), 422, "filesystem_type");
    let mut tags = request("ok", 10);
    tags.tags = vec!["no spaces".into()];
    assert_error(cloud.create_volume(tags), 422, "tag");
    // None of the rejected requests left anything behind.
    assert_eq!(cloud.list_volumes(None, None, 1, 200).unwrap().total, 0);
    assert!(cloud.create_volume(request(&"a".repeat(64), 16384)).is_ok());
}

#[test]
fn names_are_unique_per_region() {
    let (cloud, _) = cloud();
    volume(&cloud, "data");
    assert_error(
        cloud.create_volume(request("data", 5)),
        409,
        "already exists",
    );
    let mut other = request("data", 5);
    other.region = "sfo3".into();
    assert!(cloud.create_volume(other).is_ok());
}

#[test]
fn capacity_quota_is_enforced_on_create_and_resize() {
    let (cloud, _) = cloud_with(CloudConfig {
        capacity_quota_gib: 100,
        ..config()
    });
    let v = cloud.create_volume(request("a", 60)).unwrap();
    assert_error(
        cloud.create_volume(request("b", 41)),
        403,
        "capacity limit exceeded",
    );
    assert!(cloud.create_volume(request("b", 40)).is_ok());
    assert_error(cloud.resize(&v.id, 61), 403, "capacity limit exceeded");
    let account = cloud.account();
    assert_eq!((account.used_gib, account.capacity_quota_gib), (100, 100));
}

#[test]
fn attach_takes_effect_only_when_its_action_completes() {
    let (cloud, clock) = cloud();
    let v = volume(&cloud, "v");
    let action = cloud.attach(&v.id, 1).unwrap();
    assert_eq!(action.status, ActionStatus::InProgress);
    assert_eq!(action.kind, ActionKind::Attach);
    assert_eq!(action.completed_at, None);
    assert_eq!(action.droplet_id, Some(1));

    clock.advance(Duration::from_millis(9_999));
    assert!(cloud.get_volume(&v.id).unwrap().droplet_ids.is_empty());
    assert_eq!(
        cloud.get_action(action.id).unwrap().status,
        ActionStatus::InProgress
    );

    clock.advance(Duration::from_millis(1));
    let done = cloud.get_action(action.id).unwrap();
    assert_eq!(done.status, ActionStatus::Completed);
    assert_eq!(
        done.completed_at,
        Some(action.started_at + chrono::Duration::seconds(10))
    );
    assert_eq!(cloud.get_volume(&v.id).unwrap().droplet_ids, vec![1]);
    assert_eq!(cloud.get_droplet(1).unwrap().volume_ids, vec![v.id.clone()]);
}

#[test]
fn detach_leaves_the_volume_attached_until_it_completes() {
    let (cloud, clock) = cloud();
    let v = volume(&cloud, "v");
    attached(&cloud, &clock, &v.id, 1);
    let action = cloud.detach(&v.id, 1).unwrap();
    clock.advance(Duration::from_secs(19));
    assert_eq!(cloud.get_volume(&v.id).unwrap().droplet_ids, vec![1]);
    assert_error(
        cloud.delete_volume(&v.id),
        409,
        "attached volume cannot be deleted",
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        cloud.get_action(action.id).unwrap().status,
        ActionStatus::Completed
    );
    assert!(cloud.get_volume(&v.id).unwrap().droplet_ids.is_empty());
    assert!(cloud.get_droplet(1).unwrap().volume_ids.is_empty());
}

#[test]
fn a_droplet_runs_one_action_at_a_time() {
    let (cloud, clock) = cloud();
    let a = volume(&cloud, "a");
    let b = volume(&cloud, "b");
    cloud.attach(&a.id, 1).unwrap();
    assert_error(
        cloud.attach(&b.id, 1),
        422,
        "Droplet already has a pending event",
    );
    // The same volume cannot be sent elsewhere while its attach is in flight.
    assert_error(cloud.attach(&a.id, 2), 422, "pending event");
    // Another droplet is free.
    cloud.attach(&b.id, 2).unwrap();
    clock.advance(Duration::from_secs(10));
    cloud.detach(&a.id, 1).unwrap();
    let c = volume(&cloud, "c");
    assert_error(
        cloud.attach(&c.id, 1),
        422,
        "Droplet already has a pending event",
    );
    let e = cloud.attach(&c.id, 1).unwrap_err();
    assert!(e.is_pending_event());
}

#[test]
fn attach_and_detach_errors_match_digitalocean() {
    let (cloud, clock) = cloud();
    let v = volume(&cloud, "v");
    assert_error(cloud.detach(&v.id, 1), 422, "Attachment not found");
    attached(&cloud, &clock, &v.id, 1);
    assert_error(
        cloud.attach(&v.id, 2),
        422,
        "This volume is already attached",
    );
    assert_error(
        cloud.attach(&v.id, 1),
        422,
        "This volume is already attached",
    );
    assert_error(cloud.detach(&v.id, 2), 422, "Attachment not found");
    assert_error(cloud.attach("no-such-volume", 1), 404, "could not be found");
    assert_error(cloud.attach(&v.id, 99), 404, "could not be found");
    // Droplet 3 is in sfo3, the volume in nyc3.
    let w = volume(&cloud, "w");
    assert_error(cloud.attach(&w.id, 3), 422, "same region");
}

#[test]
fn the_per_droplet_volume_limit_counts_attached_volumes() {
    let (cloud, clock) = cloud_with(CloudConfig {
        volume_limit: 2,
        ..config()
    });
    let vs: Vec<Volume> = ["a", "b", "c"].iter().map(|n| volume(&cloud, n)).collect();
    attached(&cloud, &clock, &vs[0].id, 1);
    cloud.attach(&vs[1].id, 1).unwrap();
    clock.advance(Duration::from_secs(10));
    assert_error(
        cloud.attach(&vs[2].id, 1),
        422,
        "cannot attach more volumes to the Droplet",
    );
    assert_eq!(cloud.account().volume_limit, 2);
    assert!(cloud.attach(&vs[2].id, 2).is_ok());
}

#[test]
fn the_default_volume_limit_is_seven() {
    let (cloud, clock) = cloud();
    for i in 0..7 {
        let v = volume(&cloud, &format!("v{i}"));
        attached(&cloud, &clock, &v.id, 1);
    }
    let v = volume(&cloud, "eighth");
    assert_error(
        cloud.attach(&v.id, 1),
        422,
        "cannot attach more volumes to the Droplet",
    );
}

#[test]
fn resize_grows_only_and_one_at_a_time() {
    let (cloud, clock) = cloud();
    let v = volume(&cloud, "v");
    assert_error(cloud.resize(&v.id, 10), 422, "greater than");
    assert_error(cloud.resize(&v.id, 5), 422, "greater than");
    assert_error(cloud.resize(&v.id, 16385), 422, "size_gigabytes");
    let action = cloud.resize(&v.id, 20).unwrap();
    assert_eq!(action.kind, ActionKind::Resize);
    assert_eq!(action.size_gib, Some(20));
    assert_error(cloud.resize(&v.id, 30), 422, "pending");
    assert_error(cloud.delete_volume(&v.id), 409, "pending");
    clock.advance(Duration::from_secs(29));
    assert_eq!(cloud.get_volume(&v.id).unwrap().size_gib, 10);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cloud.get_volume(&v.id).unwrap().size_gib, 20);
    assert_eq!(cloud.list_volume_actions(&v.id).unwrap().len(), 1);
}

#[test]
fn deleting_volumes_follows_attachment_state() {
    let (cloud, clock) = cloud();
    let v = volume(&cloud, "v");
    cloud.attach(&v.id, 1).unwrap();
    // An attach in flight already reserves the volume.
    assert_error(
        cloud.delete_volume(&v.id),
        409,
        "attached volume cannot be deleted",
    );
    clock.advance(Duration::from_secs(10));
    assert_error(
        cloud.delete_volume(&v.id),
        409,
        "attached volume cannot be deleted",
    );
    cloud.detach(&v.id, 1).unwrap();
    clock.advance(Duration::from_secs(20));
    cloud.delete_volume(&v.id).unwrap();
    assert!(cloud.get_volume(&v.id).unwrap_err().is_not_found());
    assert!(cloud.delete_volume(&v.id).unwrap_err().is_not_found());
}

#[test]
fn snapshots_have_unique_names_and_bound_new_volume_sizes() {
    let (cloud, _) = cloud();
    let v = volume(&cloud, "v");
    let snap = cloud
        .create_snapshot(&v.id, "snap-1", vec!["t1".into()])
        .unwrap();
    assert_eq!(snap.min_disk_size_gib, 10);
    assert_eq!(snap.volume_id, v.id);
    assert_eq!(snap.region, "nyc3");
    assert_error(
        cloud.create_snapshot(&v.id, "snap-1", vec![]),
        409,
        "already exists",
    );
    assert_error(
        cloud.create_snapshot(&v.id, "", vec![]),
        422,
        "snapshot name",
    );
    assert_error(
        cloud.create_snapshot("nope", "snap-2", vec![]),
        404,
        "could not be found",
    );

    let mut small = request("restored", 9);
    small.snapshot_id = Some(snap.id.clone());
    assert_error(cloud.create_volume(small), 422, "min_disk_size");
    let mut missing = request("restored", 10);
    missing.snapshot_id = Some("no-such-snapshot".into());
    assert_error(cloud.create_volume(missing), 404, "could not be found");
    let mut ok = request("restored", 10);
    ok.snapshot_id = Some(snap.id.clone());
    let restored = cloud.create_volume(ok).unwrap();
    assert_eq!(restored.snapshot_id, Some(snap.id.clone()));

    // Deleting the source volume keeps its snapshots.
    cloud.delete_volume(&v.id).unwrap();
    assert_eq!(cloud.get_snapshot(&snap.id).unwrap().name, "snap-1");
    assert_eq!(cloud.list_snapshots(None, 1, 20).unwrap().total, 1);
    assert!(cloud
        .list_snapshots(Some(&v.id), 1, 20)
        .unwrap_err()
        .is_not_found());
    cloud.delete_snapshot(&snap.id).unwrap();
    assert!(cloud.get_snapshot(&snap.id).unwrap_err().is_not_found());
    assert!(cloud.delete_snapshot(&snap.id).unwrap_err().is_not_found());
}

#[test]
fn clone_volume_checks_region_and_size() {
    let (cloud, _) = cloud();
    let src = volume(&cloud, "src");
    assert_error(
        cloud.clone_volume(&src.id, request("c", 5)),
        422,
        "at least",
    );
    let mut far = request("c", 10);
    far.region = "sfo3".into();
    assert_error(cloud.clone_volume(&src.id, far), 422, "region");
    assert_error(
        cloud.clone_volume("nope", request("c", 10)),
        404,
        "could not be found",
    );
    let c = cloud.clone_volume(&src.id, request("c", 12)).unwrap();
    assert_eq!(c.source_volume_id, Some(src.id));
    assert_eq!(c.size_gib, 12);
}

#[test]
fn tags_can_be_replaced() {
    let (cloud, _) = cloud();
    let v = volume(&cloud, "v");
    let updated = cloud
        .update_tags(&v.id, vec!["a".into(), "k8s:b".into()])
        .unwrap();
    assert_eq!(updated.tags, vec!["a", "k8s:b"]);
    assert_error(cloud.update_tags(&v.id, vec!["bad tag".into()]), 422, "tag");
    assert_eq!(cloud.get_volume(&v.id).unwrap().tags, vec!["a", "k8s:b"]);
    assert!(cloud
        .update_tags("nope", vec![])
        .unwrap_err()
        .is_not_found());
}

#[test]
fn lists_filter_and_paginate_in_creation_order() {
    let (cloud, clock) = cloud();
    for i in 0..5 {
        volume(&cloud, &format!("v{i}"));
        clock.advance(Duration::from_secs(1));
    }
    let mut other = request("v0", 1);
    other.region = "sfo3".into();
    cloud.create_volume(other).unwrap();

    let page = cloud.list_volumes(None, Some("nyc3"), 2, 2).unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(page.last_page(), 3);
    let names: Vec<&str> = page.items.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["v2", "v3"]);
    assert_eq!(
        cloud.list_volumes(Some("v0"), None, 1, 20).unwrap().total,
        2
    );
    assert_eq!(
        cloud
            .list_volumes(Some("v0"), Some("sfo3"), 1, 20)
            .unwrap()
            .total,
        1
    );
    assert!(cloud
        .list_volumes(None, None, 9, 20)
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        cloud.list_volumes(None, None, 0, 20).unwrap_err().status,
        400
    );
    assert_eq!(
        cloud.list_volumes(None, None, 1, 0).unwrap_err().status,
        400
    );
    assert_eq!(
        cloud.list_volumes(None, None, 1, 201).unwrap_err().status,
        400
    );
}

#[test]
fn droplets_register_once_per_id() {
    let (cloud, _) = cloud();
    assert_eq!(cloud.add_droplet(7, "ams3").unwrap().region, "ams3");
    assert_eq!(cloud.add_droplet(7, "ams3").unwrap().id, 7);
    assert_eq!(cloud.add_droplet(7, "nyc3").unwrap_err().status, 409);
    assert_eq!(cloud.add_droplet(8, "mars1").unwrap_err().status, 422);
    assert_eq!(cloud.add_droplet(0, "nyc3").unwrap_err().status, 422);
    assert!(cloud.get_droplet(9).unwrap_err().is_not_found());
    assert_eq!(cloud.account().droplet_count, 4);
}

#[test]
fn errored_actions_change_nothing_and_say_why() {
    let (cloud, clock) = cloud_with(CloudConfig {
        faults: Faults {
            action_error_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    });
    let v = volume(&cloud, "v");
    let action = cloud.attach(&v.id, 1).unwrap();
    clock.advance(Duration::from_secs(10));
    let done = cloud.get_action(action.id).unwrap();
    assert_eq!(done.status, ActionStatus::Errored);
    assert!(done.error.as_deref().unwrap_or("").contains("injected"));
    assert!(done.completed_at.is_some());
    assert!(cloud.get_volume(&v.id).unwrap().droplet_ids.is_empty());
    // The droplet is free again; with faults off the retry succeeds.
    cloud.set_faults(Faults::default());
    let retry = cloud.attach(&v.id, 1).unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cloud.get_action(retry.id).unwrap().status,
        ActionStatus::Completed
    );
}

/// The statuses of `n` attach/detach actions on a cloud seeded with `seed`.
fn action_outcomes(seed: u64, n: usize) -> Vec<ActionStatus> {
    let (cloud, clock) = cloud_with(CloudConfig {
        faults: Faults {
            seed,
            action_error_rate: 0.5,
            ..Faults::default()
        },
        latency: LatencyConfig {
            jitter: Duration::from_secs(5),
            ..latency(1, 1, 1)
        },
        ..config()
    });
    let v = volume(&cloud, "v");
    let mut out = Vec::new();
    for _ in 0..n {
        let attached = !cloud.get_volume(&v.id).unwrap().droplet_ids.is_empty();
        let action = if attached {
            cloud.detach(&v.id, 1).unwrap()
        } else {
            cloud.attach(&v.id, 1).unwrap()
        };
        clock.advance(Duration::from_secs(60));
        out.push(cloud.get_action(action.id).unwrap().status);
    }
    out
}

#[test]
fn action_errors_are_reproducible_from_the_seed() {
    let a = action_outcomes(42, 40);
    assert_eq!(a, action_outcomes(42, 40));
    assert!(a.contains(&ActionStatus::Errored) && a.contains(&ActionStatus::Completed));
    assert_ne!(a, action_outcomes(43, 40));
}

#[test]
fn jitter_adds_at_most_its_bound() {
    let (cloud, clock) = cloud_with(CloudConfig {
        latency: LatencyConfig {
            jitter: Duration::from_secs(5),
            ..latency(10, 10, 10)
        },
        ..config()
    });
    for i in 0..10 {
        let v = volume(&cloud, &format!("v{i}"));
        let action = cloud.attach(&v.id, 1).unwrap();
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(
            cloud.get_action(action.id).unwrap().status,
            ActionStatus::InProgress
        );
        clock.advance(Duration::from_millis(5_001));
        let done = cloud.get_action(action.id).unwrap();
        assert_eq!(done.status, ActionStatus::Completed);
        let took = done.completed_at.unwrap() - done.started_at;
        assert!(took >= chrono::Duration::seconds(10) && took <= chrono::Duration::seconds(15));
        cloud.detach(&v.id, 1).unwrap();
        clock.advance(Duration::from_secs(60));
    }
}

#[test]
fn zero_latency_actions_complete_on_the_next_read() {
    let (cloud, _) = cloud_with(CloudConfig {
        latency: LatencyConfig::default(),
        ..config()
    });
    let v = volume(&cloud, "v");
    let action = cloud.attach(&v.id, 1).unwrap();
    assert_eq!(action.status, ActionStatus::InProgress);
    assert_eq!(
        cloud.get_action(action.id).unwrap().status,
        ActionStatus::Completed
    );
    assert!(cloud.get_action(999).unwrap_err().is_not_found());
}

#[test]
fn latency_can_change_at_run_time() {
    let (cloud, clock) = cloud();
    cloud.set_latency(latency(100, 100, 100));
    assert_eq!(cloud.config().latency.attach, Duration::from_secs(100));
    let v = volume(&cloud, "v");
    let action = cloud.attach(&v.id, 1).unwrap();
    clock.advance(Duration::from_secs(99));
    assert_eq!(
        cloud.get_action(action.id).unwrap().status,
        ActionStatus::InProgress
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        cloud.get_action(action.id).unwrap().status,
        ActionStatus::Completed
    );
}

#[test]
fn the_cloud_is_shared_safely_across_threads() {
    let (cloud, _) = cloud();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let cloud = cloud.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    cloud
                        .create_volume(request(&format!("t{t}-v{i}"), 1))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(cloud.list_volumes(None, None, 1, 200).unwrap().total, 200);
    assert_eq!(cloud.account().used_gib, 200);
}

fn disk_config(dir: &std::path::Path) -> CloudConfig {
    CloudConfig {
        data_dir: Some(dir.to_path_buf()),
        ..config()
    }
}

#[test]
fn a_restarted_cloud_keeps_volumes_snapshots_attachments_and_actions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(VirtualClock::starting_now());
    let (v, snap, attach, detach_volume) = {
        let cloud = Cloud::open_with_clock(disk_config(dir.path()), clock.clone()).unwrap();
        let v = volume(&cloud, "v");
        let w = volume(&cloud, "w");
        attached(&cloud, &clock, &w.id, 2);
        let snap = cloud.create_snapshot(&v.id, "s", vec![]).unwrap();
        let attach = cloud.attach(&v.id, 1).unwrap();
        (v, snap, attach, w)
    };
    assert!(dir.path().join("state.json").is_file());

    // The restarted cloud sees the same time: the attach is still in flight.
    let cloud = Cloud::open_with_clock(disk_config(dir.path()), clock.clone()).unwrap();
    assert_eq!(cloud.get_volume(&v.id).unwrap().name, "v");
    assert_eq!(cloud.get_snapshot(&snap.id).unwrap().name, "s");
    assert_eq!(
        cloud.get_volume(&detach_volume.id).unwrap().droplet_ids,
        vec![2]
    );
    assert_eq!(
        cloud.get_action(attach.id).unwrap().status,
        ActionStatus::InProgress
    );
    assert_error(
        cloud.attach(&detach_volume.id, 1),
        422,
        "Droplet already has a pending event",
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cloud.get_action(attach.id).unwrap().status,
        ActionStatus::Completed
    );
    assert_eq!(cloud.get_volume(&v.id).unwrap().droplet_ids, vec![1]);
    // Action ids keep counting from where they were.
    let next = cloud.detach(&v.id, 1).unwrap();
    assert!(next.id > attach.id);
    drop(cloud);

    // A restart long after the due time finds the action done, completed at
    // its due time.
    clock.advance(Duration::from_secs(3600));
    let cloud = Cloud::open_with_clock(disk_config(dir.path()), clock.clone()).unwrap();
    let done = cloud.get_action(next.id).unwrap();
    assert_eq!(done.status, ActionStatus::Completed);
    assert_eq!(
        done.completed_at,
        Some(next.started_at + chrono::Duration::seconds(20))
    );
}

#[test]
fn a_restart_on_the_system_clock_completes_overdue_actions() {
    let dir = tempfile::tempdir().unwrap();
    let config = CloudConfig {
        latency: LatencyConfig {
            attach: Duration::from_millis(50),
            ..LatencyConfig::default()
        },
        ..disk_config(dir.path())
    };
    let (v, action) = {
        let cloud = Cloud::open(config.clone()).unwrap();
        let v = volume(&cloud, "v");
        let action = cloud.attach(&v.id, 1).unwrap();
        (v, action)
    };
    std::thread::sleep(Duration::from_millis(100));
    let cloud = Cloud::open(config).unwrap();
    assert_eq!(
        cloud.get_action(action.id).unwrap().status,
        ActionStatus::Completed
    );
    assert_eq!(cloud.get_volume(&v.id).unwrap().droplet_ids, vec![1]);
}

#[test]
fn a_corrupt_state_file_is_an_error_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), b"{ not json").unwrap();
    let err = Cloud::open(disk_config(dir.path())).unwrap_err();
    assert!(err.is_server_error());
}

#[test]
fn volume_data_lives_in_sparse_image_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(VirtualClock::starting_now());
    let cloud = Cloud::open_with_clock(disk_config(dir.path()), clock.clone()).unwrap();
    let v = volume(&cloud, "v");
    let path = cloud.volume_image_path(&v.id).unwrap();
    assert_eq!(
        path,
        dir.path().join("volumes").join(format!("{}.img", v.id))
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 10 * GIB);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(b"payload", 5 * GIB)
        .unwrap();

    let snap = cloud.create_snapshot(&v.id, "s", vec![]).unwrap();
    let snap_path = dir
        .path()
        .join("snapshots")
        .join(format!("{}.img", snap.id));
    assert_eq!(std::fs::metadata(&snap_path).unwrap().len(), 10 * GIB);
    assert_eq!(read_at(&snap_path, 5 * GIB, 7), b"payload");
    // A snapshot of a 10 GiB volume does not write 10 GiB.
    assert!(allocated(&snap_path) < 64 << 20);

    let mut from_snap = request("restored", 12);
    from_snap.snapshot_id = Some(snap.id.clone());
    let restored = cloud.create_volume(from_snap).unwrap();
    let restored_path = cloud.volume_image_path(&restored.id).unwrap();
    assert_eq!(std::fs::metadata(&restored_path).unwrap().len(), 12 * GIB);
    assert_eq!(read_at(&restored_path, 5 * GIB, 7), b"payload");

    let clone = cloud.clone_volume(&v.id, request("clone", 10)).unwrap();
    assert_eq!(
        read_at(&cloud.volume_image_path(&clone.id).unwrap(), 5 * GIB, 7),
        b"payload"
    );

    cloud.resize(&v.id, 20).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 10 * GIB);
    clock.advance(Duration::from_secs(30));
    assert_eq!(cloud.get_volume(&v.id).unwrap().size_gib, 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 20 * GIB);
    assert_eq!(read_at(&path, 5 * GIB, 7), b"payload");

    cloud.delete_volume(&v.id).unwrap();
    assert!(!path.exists());
    // The snapshot and the volume made from it keep their data.
    assert_eq!(read_at(&restored_path, 5 * GIB, 7), b"payload");
    cloud.delete_snapshot(&snap.id).unwrap();
    assert!(!snap_path.exists());
    assert_eq!(read_at(&restored_path, 5 * GIB, 7), b"payload");
}

#[test]
fn without_a_data_dir_there_are_no_images() {
    let (cloud, _) = cloud();
    let v = volume(&cloud, "v");
    assert_eq!(cloud.volume_image_path(&v.id), None);
    assert!(cloud.now() <= fake_cloud::clock::SystemClock.now() + chrono::Duration::days(1));
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn absurd_latencies_do_not_panic_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(VirtualClock::starting_now());
    let config = CloudConfig {
        latency: LatencyConfig {
            attach: Duration::MAX,
            jitter: Duration::MAX,
            ..LatencyConfig::default()
        },
        ..disk_config(dir.path())
    };
    let v = {
        let cloud = Cloud::open_with_clock(config.clone(), clock.clone()).unwrap();
        let v = volume(&cloud, "v");
        let action = cloud.attach(&v.id, 1).unwrap();
        clock.advance(Duration::from_secs(86400 * 365));
        assert_eq!(
            cloud.get_action(action.id).unwrap().status,
            ActionStatus::InProgress
        );
        v
    };
    let cloud = Cloud::open_with_clock(config, clock).unwrap();
    assert!(cloud.get_volume(&v.id).unwrap().droplet_ids.is_empty());
}

#[test]
fn an_unpersisted_cloud_keeps_images_on_disk_but_writes_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::open_unpersisted(disk_config(dir.path())).unwrap();
    let v = volume(&cloud, "v");
    assert!(cloud.volume_image_path(&v.id).unwrap().exists());
    assert!(!dir.path().join("state.json").exists());
    // A restart of such a cloud starts empty.
    let image = cloud.volume_image_path(&v.id).unwrap();
    let snap = cloud.create_snapshot(&v.id, "s", vec![]).unwrap();
    let snap_image = cloud.snapshot_image_path(&snap.id).unwrap();
    assert!(snap_image.exists());
    let note = dir.path().join("volumes").join("README");
    std::fs::write(&note, "not an image").unwrap();
    drop(cloud);
    let again = Cloud::open_unpersisted(disk_config(dir.path())).unwrap();
    assert!(again.get_volume(&v.id).is_err());
    // Nothing names the earlier images any more: they are taken back, other files stay.
    assert!(!image.exists(), "{}", image.display());
    assert!(!snap_image.exists(), "{}", snap_image.display());
    assert!(note.exists());
}

#[test]
fn a_restarted_cloud_removes_images_its_state_does_not_name_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(VirtualClock::starting_now());
    let (kept, snap) = {
        let cloud = Cloud::open_with_clock(disk_config(dir.path()), clock.clone()).unwrap();
        let v = volume(&cloud, "kept");
        let snap = cloud.create_snapshot(&v.id, "s", vec![]).unwrap();
        (v, snap)
    };
    // What a crash between writing an image and recording it leaves.
    let stray = dir.path().join("volumes").join("never-recorded.img");
    std::fs::write(&stray, b"orphan").unwrap();
    let cloud = Cloud::open_with_clock(disk_config(dir.path()), clock).unwrap();
    assert!(!stray.exists());
    assert!(cloud.volume_image_path(&kept.id).unwrap().exists());
    assert!(cloud.snapshot_image_path(&snap.id).unwrap().exists());
}
