//! Cleanup never leaks: whatever a spec created is undone after it, in order, even when
//! the spec fails or panics; anything still there at the end of the run is reported.

mod common;

use common::TestDriver;
use csi_suites::{spec, Ctx, Failure, Resource, Spec, Stop};

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().to_string();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

fn volumes_of(rt: &tokio::runtime::Runtime, endpoint: &str) -> Vec<String> {
    rt.block_on(async {
        let channel = csi_sanity::connect::connect(endpoint, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let mut c = csi_proto::v1::controller_client::ControllerClient::new(channel);
        c.list_volumes(csi_proto::v1::ListVolumesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries
            .into_iter()
            .filter_map(|e| e.volume.map(|v| v.volume_id))
            .collect()
    })
}

fn specs() -> Vec<Spec> {
    vec![
        spec!(
            "Test",
            "panics with a volume published",
            "",
            [],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("panics")).await?;
                ctx.make_available(&v).await?;
                ctx.create_snapshot(&ctx.unique_name("panics-snap"), &v.volume_id)
                    .await?;
                panic!("deliberately, with everything still published");
            }
        ),
        spec!(
            "Test",
            "fails with a volume published",
            "",
            [],
            |ctx: Ctx| async move {
                let v = ctx.create_volume(&ctx.unique_name("fails")).await?;
                ctx.make_available(&v).await?;
                Err(Failure::new("nothing", "a deliberate failure", "test").into())
            }
        ),
    ]
}

#[test]
fn a_failing_or_panicking_spec_is_cleaned_up_in_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let before = volumes_of(&rt, &driver.endpoint());
    let config = driver.config(&driver.endpoint());
    let report = csi_sanity::run_specs(config, specs()).unwrap();

    assert_eq!(report.failed, 2, "{report}");
    let panicked = report
        .outcome("Test::panics with a volume published")
        .unwrap();
    assert!(
        matches!(&panicked.status, csi_sanity::Status::Failed(m) if m.contains("panicked") && !m.contains("cleanup failed")),
        "{panicked:?}"
    );
    let failed = report
        .outcome("Test::fails with a volume published")
        .unwrap();
    assert!(
        matches!(&failed.status, csi_sanity::Status::Failed(m) if m.contains("a deliberate failure") && !m.contains("cleanup failed")),
        "{failed:?}"
    );
    assert!(report.leftovers.is_empty(), "{report}");
    assert_eq!(
        volumes_of(&rt, &driver.endpoint()),
        before,
        "volumes left behind"
    );
    assert!(
        mounts_under(driver.dir.path()).is_empty(),
        "mounts left behind: {:?}",
        mounts_under(driver.dir.path())
    );
    for sub in ["mount", "staging"] {
        let left: Vec<_> = std::fs::read_dir(driver.dir.path().join(sub))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "directories left behind: {left:?}");
    }
}

#[test]
fn a_volume_a_spec_leaks_is_reported_as_a_failure_and_removed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let leaky = vec![spec!(
        "Test",
        "leaks a volume",
        "",
        [],
        |ctx: Ctx| async move {
            let v = ctx.create_volume(&ctx.unique_name("leaked")).await?;
            // Forgotten: the tracker won't undo it, so only the end-of-run check sees it.
            ctx.tracker().forget(&Resource::Volume {
                id: v.volume_id.clone(),
            });
            Ok(())
        }
    )];
    let before = volumes_of(&rt, &driver.endpoint());
    let report = csi_sanity::run_specs(driver.config(&driver.endpoint()), leaky).unwrap();
    assert_eq!(report.passed, 1, "{report}");
    assert_eq!(
        report.failed, 1,
        "the leftover counts as a failure:\n{report}"
    );
    assert_eq!(report.leftovers.len(), 1, "{report}");
    assert!(
        report.summary().contains("left over"),
        "{}",
        report.summary()
    );
    assert!(
        report
            .summary()
            .ends_with("1 passed, 1 failed, 0 skipped\n"),
        "{}",
        report.summary()
    );
    assert_eq!(
        volumes_of(&rt, &driver.endpoint()),
        before,
        "the leftover is removed after being reported"
    );
}

#[test]
fn specs_run_in_parallel_with_their_own_names_and_paths() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let mut config = driver
        .config(&driver.endpoint())
        .focus("^Controller::(CreateVolume|DeleteVolume|ValidateVolumeCapabilities)::");
    config.parallel = Some(4);
    let report = csi_sanity::run(config).unwrap();
    assert!(report.success(), "{report}");
    assert!(report.passed >= 15, "{report}");
    assert!(report.leftovers.is_empty());
}

mod alone {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Specs of the run inside their bodies now, the most seen at once, and what the
    /// alone spec saw beside it.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);
    static BESIDE_ALONE: AtomicUsize = AtomicUsize::new(0);

    async fn shared_body(_ctx: Ctx) -> Result<(), Stop> {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    async fn alone_body(_ctx: Ctx) -> Result<(), Stop> {
        for _ in 0..4 {
            BESIDE_ALONE.fetch_max(RUNNING.load(Ordering::SeqCst), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn specs() -> Vec<Spec> {
        let shared = |name: &'static str| spec!("Test", name, "", [], shared_body);
        vec![
            shared("a"),
            shared("b"),
            shared("c"),
            spec!("Test", "alone", "", [], alone_body).alone(),
            shared("d"),
            shared("e"),
            shared("f"),
        ]
    }

    #[test]
    fn a_spec_marked_alone_runs_with_no_other_spec_beside_it() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let driver = rt.block_on(TestDriver::start());
        let mut config = driver.config(&driver.endpoint());
        config.parallel = Some(4);
        let report = csi_sanity::run_specs(config, specs()).unwrap();
        assert_eq!(report.passed, 7, "{report}");
        assert!(
            MOST.load(Ordering::SeqCst) >= 2,
            "the other specs ran at once, so the test shows something"
        );
        assert_eq!(
            BESIDE_ALONE.load(Ordering::SeqCst),
            0,
            "a spec ran beside the alone one"
        );
    }
}
