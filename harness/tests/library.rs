//! The crate docs' example, for real: a driver author's one `#[test]` that runs the
//! whole suite against their driver — here the project's own, started the way a
//! driver's test would start it.

use clap::Parser;

#[test]
fn the_whole_suite_passes_against_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let (data, devices) = (dir.path().join("cloud"), dir.path().join("by-id"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&devices).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt
        .block_on(csi_driver::start(
            csi_driver::Config::try_parse_from([
                "csi-driver".to_string(),
                format!("--endpoint=unix://{}", socket.display()),
                format!("--data-dir={}", data.display()),
                format!("--device-dir={}", devices.display()),
                "--log-level=warn".to_string(),
            ])
            .unwrap(),
        ))
        .unwrap();

    let mut config = csi_sanity::Config::for_endpoint(driver.endpoint.clone());
    config.suite.volume_size = 1 << 30;
    config.suite.mount_dir = dir.path().join("mount");
    config.suite.staging_dir = dir.path().join("staging");
    config.suite.second_node_id = Some("2".into());
    config.suite.mutable_parameters = [("tags".to_string(), "csi-sanity".to_string())].into();
    let report = csi_sanity::run(config).expect("the run could not start");
    assert!(report.success(), "{report}");
    assert!(report.passed >= 80, "too few specs ran:\n{report}");

    rt.block_on(driver.stop()).unwrap();
}

#[test]
fn the_bundled_driver_runs_with_no_endpoint() {
    // Config::default() starts the bundled driver itself; a few specs are enough to
    // show it answers.
    let config = csi_sanity::Config::default().focus("^Identity::");
    let report = csi_sanity::run(config).expect("the run could not start");
    assert!(report.success(), "{report}");
    assert_eq!(report.passed, 3, "{report}");
}
