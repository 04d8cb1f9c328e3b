//! The `csi-sanity` binary as a CI script sees it: Go csi-sanity's flags, exit codes
//! (0 passed, 1 a spec failed, 2 usage or connection error), the closing summary line,
//! JUnit XML, JSON output, and a fast, clear failure when nothing answers.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Fault, Proxy, TestDriver};

fn csi_sanity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_csi-sanity"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

#[test]
fn version_prints_and_exits_zero() {
    for flag in ["-version", "--version"] {
        let o = csi_sanity(&[flag]);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).starts_with("Version = "), "{}", stdout(&o));
    }
}

#[test]
fn usage_errors_exit_two() {
    for args in [
        &["--csi.nosuch=1"][..],
        &["--csi.endpoint"],
        &["--csi.testvolumeaccesstype=disk"],
    ] {
        let o = csi_sanity(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn a_bad_or_silent_endpoint_fails_fast_and_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let missing = format!("unix://{}", dir.path().join("missing.sock").display());
    let o = csi_sanity(&["--csi.endpoint", &missing]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no socket"), "{}", stderr(&o));

    // Something listens but never speaks gRPC.
    let socket = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let silent = format!("unix://{}", socket.display());
    let o = csi_sanity(&["--csi.endpoint", &silent, "--csi.connect-timeout", "2s"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no answer"), "{}", stderr(&o));

    let o = csi_sanity(&["-csi.endpoint=tcp://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn list_names_every_spec() {
    let o = csi_sanity(&["--list"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let specs = out.lines().filter(|l| l.ends_with(": test")).count();
    assert!(specs >= 96, "only {specs} specs listed");
    let o = csi_sanity(&["--list", "--ginkgo.focus", "^Identity::"]);
    assert_eq!(
        stdout(&o).lines().filter(|l| l.ends_with(": test")).count(),
        3
    );
}

#[test]
fn a_focus_or_skip_that_selects_nothing_is_a_usage_error() {
    for args in [
        &["--ginkgo.focus", "NodeStageVolum3"][..],
        &["--ginkgo.skip", ".*", "--csi.profile", "compat"],
        &["--csi.profile", "compat", "--ginkgo.focus", "Beyond"],
    ] {
        let o = csi_sanity(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains("no spec is selected"), "{err}");
        assert!(err.contains(args[1]), "the message names the regex: {err}");
    }
    let o = csi_sanity(&["--ginkgo.focus", "NodeStageVolum3"]);
    assert!(stderr(&o).contains("closest spec names"), "{}", stderr(&o));
    assert!(stderr(&o).contains("NodeStageVolume"), "{}", stderr(&o));
}

#[test]
fn go_names_select_in_list_and_compat_lists_exactly_gos_95() {
    let count = |o: &Output| stdout(o).lines().filter(|l| l.ends_with(": test")).count();
    let o = csi_sanity(&["--list", "--csi.profile", "compat"]);
    assert_eq!(count(&o), 95, "{}", stdout(&o));
    let o = csi_sanity(&["--list", "--ginkgo.focus", "Node Service"]);
    assert_eq!(count(&o), 24, "{}", stdout(&o));
    let o = csi_sanity(&[
        "--list",
        "--ginkgo.focus",
        r"\[Controller Server\]",
        "--ginkgo.skip",
        "should work",
    ]);
    assert!(!stdout(&o).contains("Beyond::"), "{}", stdout(&o));
    assert!(
        !stdout(&o).contains("a volume can be created, published"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("Controller::CreateVolume::"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn compat_junit_names_test_cases_the_go_way_and_all_skipped_is_loud() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let junit = driver.dir.path().join("go.xml");
    let o = csi_sanity(&[
        &format!("--csi.endpoint={}", driver.endpoint()),
        "--csi.profile=compat",
        "--csi.junit-names=go",
        &format!("--csi.junitfile={}", junit.display()),
        "--ginkgo.focus",
        "Identity Service|GroupController Service",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert_eq!(last_line(&out), "3 passed, 0 failed, 6 skipped", "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"name="[It] Identity Service Probe should return appropriate information""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testsuite name="CSI Driver Test Suite""#),
        "{xml}"
    );

    let o = csi_sanity(&[
        &format!("--csi.endpoint={}", driver.endpoint()),
        "--ginkgo.focus",
        "GroupController Service",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("WARNING: every one of the 6 selected specs was skipped: nothing was checked"),
        "{out}"
    );
}

#[test]
fn a_go_style_script_runs_unchanged_and_writes_junit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let junit = driver.dir.path().join("report.xml");
    let mount = driver.dir.path().join("m");
    let staging = driver.dir.path().join("s");
    let o = csi_sanity(&[
        &format!("-csi.endpoint={}", driver.endpoint()),
        "-csi.mountdir",
        mount.to_str().unwrap(),
        &format!("--csi.stagingdir={}", staging.display()),
        "--csi.testvolumesize",
        "1073741824",
        "--csi.junitfile",
        junit.to_str().unwrap(),
        "--ginkgo.v",
        "--ginkgo.focus",
        "^(Identity|GroupController)::",
        "--test.timeout=0",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    // The closing line, exactly; skipped specs listed with their reasons above it.
    assert_eq!(last_line(&out), "3 passed, 0 failed, 6 skipped", "{out}");
    assert!(
        out.contains("ignored (driver does not advertise GROUP_CONTROLLER_SERVICE)"),
        "{out}"
    );
    assert!(out.contains("skipped:\n"), "{out}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("well-formed JUnit");
    assert_eq!(report.tests, 9);
    assert_eq!(report.failures, 0);
    let names: Vec<&str> = report.test_suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Identity", "GroupController"]);
    assert!(
        xml.contains(r#"<skipped message="driver does not advertise GROUP_CONTROLLER_SERVICE"/>"#),
        "{xml}"
    );
    for case in report.test_suites.iter().flat_map(|s| s.test_cases.iter()) {
        assert!(case.classname.is_some() && case.time.is_some(), "{case:?}");
    }
}

#[test]
fn a_failing_spec_exits_one_and_its_junit_failure_explains_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let proxy = rt.block_on(Proxy::start(&driver.endpoint(), Fault::ProbeFails));
    let junit = driver.dir.path().join("failed.xml");
    let o = csi_sanity(&[
        "--csi.endpoint",
        &proxy.endpoint,
        "--csi.junitfile",
        junit.to_str().unwrap(),
        "--ginkgo.focus",
        "^Identity::",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(last_line(&out), "2 passed, 1 failed, 0 skipped");
    assert!(
        out.contains("RPC:      Probe")
            && out.contains("expected: OK")
            && out.contains("FailedPrecondition"),
        "{out}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(report.failures, 1);
    assert!(
        xml.contains("<failure message=") && xml.contains("RPC:      Probe"),
        "{xml}"
    );

    // The findings page: the finding, its rule and severity, the response, and a
    // command that reruns that one spec.
    let page = driver.dir.path().join("findings.md");
    let o = csi_sanity(&[
        "--csi.endpoint",
        &proxy.endpoint,
        "--csi.report",
        page.to_str().unwrap(),
        "--ginkgo.focus",
        "^Identity::",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let md = std::fs::read_to_string(&page).unwrap();
    assert!(md.contains("## 1. Identity::Probe answers"), "{md}");
    assert!(
        md.contains(
            "- Go csi-sanity name: `Identity Service Probe should return appropriate information`"
        ),
        "{md}"
    );
    assert!(md.contains("- severity: **MUST (fails the run)**"), "{md}");
    assert!(md.contains("- breaks: spec Probe:"), "{md}");
    assert!(md.contains("FailedPrecondition"), "{md}");
    assert!(
        md.contains(&format!(
            "- reproduce: `csi-sanity --csi.endpoint {} --ginkgo.focus '^Identity::Probe answers, and a ready value when given is a boolean$'`",
            proxy.endpoint
        )),
        "{md}"
    );
    assert_eq!(md.matches("\n## ").count(), 1, "one finding: {md}");
    let html = driver.dir.path().join("findings.html");
    let o = csi_sanity(&[
        "--csi.endpoint",
        &proxy.endpoint,
        "--csi.report",
        html.to_str().unwrap(),
        "--ginkgo.focus",
        "^Identity::",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.starts_with("<!doctype html>") && page.contains("&lt;details&gt;"),
        "{page}"
    );
}

#[test]
fn json_output_stays_json_and_strict_mode_fails_what_is_not_covered() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let ep = driver.endpoint();
    let o = csi_sanity(&[
        "--csi.endpoint",
        &ep,
        "--ginkgo.focus",
        "^Identity::",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for line in stdout(&o).lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert_eq!(last_line(&stderr(&o)), "3 passed, 0 failed, 0 skipped");

    let o = csi_sanity(&[
        "--csi.endpoint",
        &ep,
        "--ginkgo.focus",
        "^GroupController::",
        "--csi.strict",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("not covered") && out.contains("GROUP_CONTROLLER_SERVICE (6 specs)"),
        "{out}"
    );
    assert_eq!(last_line(&out), "0 passed, 6 failed, 0 skipped");
}

#[test]
fn parallel_specs_pass_as_they_do_one_at_a_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let mount = driver.dir.path().join("m");
    let staging = driver.dir.path().join("s");
    let o = csi_sanity(&[
        "--csi.endpoint",
        &driver.endpoint(),
        "--csi.mountdir",
        mount.to_str().unwrap(),
        "--csi.stagingdir",
        staging.to_str().unwrap(),
        "--csi.testvolumesize",
        "1073741824",
        "--csi.parallel",
        "4",
        "--ginkgo.focus",
        "^Controller::(ListVolumes|ListSnapshots|CreateSnapshot|DeleteSnapshot)",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(last_line(&out).ends_with("0 failed, 0 skipped"), "{out}");
}

#[test]
fn parallel_specs_spread_over_the_bundled_drivers_nodes() {
    // No endpoint: the bundled driver, here with 3 nodes (droplets 1 to 3, each its own
    // node plugin) and droplet 4 as the second node. Node-side specs and attachments run
    // on whichever node is free.
    let o = csi_sanity(&[
        "--csi.parallel",
        "3",
        "--csi.bundlednodes",
        "3",
        "--ginkgo.focus",
        "^(Node::|Controller::ControllerPublishVolume|Beyond::DataIntegrity)",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(last_line(&out).contains(" 0 failed"), "{out}");
}

/// Runs csi-sanity on the Identity specs with `args`; it must exit 2 saying `says`.
fn refused(args: &[&str], says: &str) {
    let mut all = args.to_vec();
    all.extend(["--ginkgo.focus", "^Identity::"]);
    let o = csi_sanity(&all);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
}

#[test]
fn node_endpoints_must_be_distinct_nodes_other_than_the_second_node() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let other = rt.block_on(TestDriver::start_with(&["--node-id=2"]));
    let ep = driver.endpoint();
    refused(
        &["--csi.endpoint", &ep, "--csi.nodeendpoints", &ep],
        "--csi.nodeendpoints entry 1 is node \"1\" again",
    );
    let second = [
        "--csi.nodeendpoints",
        &other.endpoint(),
        "--csi.secondnodeid",
        "2",
    ];
    refused(
        &[&["--csi.endpoint", ep.as_str()][..], &second].concat(),
        "also --csi.secondnodeid",
    );
    // The bundled driver's nodes are droplets 1 and 2 here.
    refused(
        &["--csi.parallel", "2", "--csi.secondnodeid", "2"],
        "also --csi.secondnodeid",
    );
    refused(
        &["--csi.bundlednodes", "0"],
        "-csi.bundlednodes: must be from 1 to 64",
    );
    refused(
        &["--csi.endpoint", &ep, "--csi.bundlednodes", "2"],
        "--csi.bundlednodes is for the bundled driver",
    );
    refused(
        &["--csi.nodeendpoints", &ep],
        "--csi.nodeendpoints needs --csi.endpoint",
    );
}

#[test]
fn a_hung_rpc_is_cut_off_after_three_deadlines_and_the_run_ends() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let proxy = rt.block_on(Proxy::start(&driver.endpoint(), Fault::CreateVolumeHangs));
    let started = Instant::now();
    let o = csi_sanity(&[
        "--csi.endpoint",
        &proxy.endpoint,
        "--csi.timeout",
        "1s",
        "--ginkgo.focus",
        "^Controller::(CreateVolume|ListVolumes|ControllerPublishVolume)",
    ]);
    let elapsed = started.elapsed();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    // Three calls wait out the 1 s deadline; every later CreateVolume fails at once.
    // Specs run 3 at once, so a few more calls may be under way when the third ends.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}: {out}");
    let specs: usize = out
        .split("CreateVolume has not answered within 1s in ")
        .nth(1)
        .and_then(|rest| rest.split(" specs; not called again").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cut-off line: {out}"));
    assert!(
        (3..=9).contains(&specs),
        "cut off after {specs} specs: {out}"
    );
    assert!(
        out.contains("cut off (the specs that needed these failed at once):"),
        "{out}"
    );
    // Specs that need no CreateVolume still pass.
    assert!(
        out.contains("fails with INVALID_ARGUMENT when no volume id is given ... ok")
            || out.contains("ok"),
        "{out}"
    );
}

#[test]
fn warnings_show_in_json_events_and_the_summary_and_fail_only_under_strict() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the spec mounts)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let proxy = rt.block_on(Proxy::start(&driver.endpoint(), Fault::DropsMountFlags));
    let mount = driver.dir.path().join("m");
    let staging = driver.dir.path().join("s");
    let args = |extra: &[&str]| {
        let mut a = vec![
            format!("--csi.endpoint={}", proxy.endpoint),
            format!("--csi.mountdir={}", mount.display()),
            format!("--csi.stagingdir={}", staging.display()),
            "--csi.testvolumesize=1073741824".to_string(),
            "--ginkgo.focus=^Node::a volume can be staged, published, unpublished and unstaged$"
                .to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        csi_sanity(&a)
    };
    let o = run(args(&["--format", "json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let warning = events
        .iter()
        .find(|e| e["event"] == "warning")
        .expect("a warning event");
    assert_eq!(warning["severity"], "SHOULD");
    assert!(
        warning["message"].as_str().unwrap().contains("noatime"),
        "{warning}"
    );
    assert!(
        last_line(&stderr(&o)).ends_with(", 1 warning"),
        "{}",
        stderr(&o)
    );

    let o = run(args(&["--csi.strict"]));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("strict mode: 1 SHOULD-level warning(s)"),
        "{}",
        stdout(&o)
    );
}
