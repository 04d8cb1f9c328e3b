//! Slow clouds: the project's driver with its fake cloud's attach, detach and resize
//! taking 2s, and a CO whose every call has a 500ms deadline. The retry and slow-cloud
//! specs must pass — each attach resumes, none is duplicated, no error is final — and
//! must fail against a driver that restarts the attach on every retry, reports a
//! resize or detach in flight as a final error, or leaks a volume from a cut-off call.

mod beyond_common;
mod common;

use std::time::Duration;

use beyond_common::{BeyondFault, FaultProxy};
use common::TestDriver;

const LATENCY: &[&str] = &[
    "--attach-latency=2s",
    "--detach-latency=2s",
    "--resize-latency=2s",
];

fn slow_config(driver: &common::TestDriver, endpoint: &str, focus: &str) -> csi_sanity::Config {
    let mut config = driver.config(endpoint).focus(focus);
    config.suite.short_deadline = Duration::from_millis(500);
    config.suite.retry_budget = Duration::from_secs(20);
    config
}

#[test]
fn retries_resume_the_slow_clouds_actions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start_with(LATENCY));
    let report = csi_sanity::run(slow_config(
        &driver,
        &driver.endpoint(),
        "^Beyond::(SlowCloud|Retries)::",
    ))
    .expect("the run starts");
    assert!(report.success(), "{report}");
    let slow = report
        .outcomes
        .iter()
        .filter(|o| o.full_name().starts_with("Beyond::SlowCloud::"))
        .count();
    assert_eq!(slow, 4, "{report}");
    assert!(report.passed >= 4, "{report}");
    rt.block_on(driver.driver.stop()).unwrap();
}

#[test]
fn slow_cloud_specs_fail_against_a_driver_that_does_not_resume() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start_with(LATENCY));
    let cases = [
        (
            BeyondFault::AttachRestartsOnRetry,
            "Beyond::SlowCloud::ControllerPublishVolume retried",
        ),
        (
            BeyondFault::ResizeInProgressIsFinal,
            "Beyond::SlowCloud::ControllerExpandVolume retried",
        ),
        (
            BeyondFault::DetachInProgressIsFinal,
            "Beyond::SlowCloud::ControllerUnpublishVolume retried",
        ),
        (
            BeyondFault::CreateVolumeLeaksOnCutOff,
            "Beyond::SlowCloud::CreateVolume retried",
        ),
    ];
    for (fault, spec) in cases {
        let proxy = rt.block_on(FaultProxy::start(&driver.endpoint(), fault));
        let mut config = slow_config(&driver, &proxy.endpoint, "^Beyond::SlowCloud::");
        config.suite.retry_budget = Duration::from_secs(8);
        let report = csi_sanity::run(config).expect("the run starts");
        let failed = report.failed_names();
        assert!(
            failed.len() == 1 && failed[0].starts_with(spec),
            "{fault:?}: expected only {spec}… to fail, got {failed:#?}\n{report}"
        );
        drop(proxy);
    }
    rt.block_on(driver.driver.stop()).unwrap();
}
