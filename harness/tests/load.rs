//! `csi-sanity load` as a user runs it: lifecycles spread over the bundled driver's
//! nodes, everything undone at the end and on Ctrl-C, and usage errors (exit 2) for
//! node flags that do not fit together.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestDriver;

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_csi-sanity"))
        .arg("load")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn lifecycles_spread_over_the_bundled_nodes_and_nothing_is_left() {
    let o = load(&[
        "--lifecycles",
        "12",
        "--concurrency",
        "3",
        "--csi.bundlednodes",
        "3",
        "--volume-size",
        "64Mi",
        "--json",
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", text(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["lifecycles_ok"], 12, "{out}");
    assert_eq!(report["lifecycles_failed"], 0, "{out}");
    assert_eq!(report["leftovers"], serde_json::json!([]), "{out}");
    let nodes = report["nodes"].as_array().expect("nodes");
    let ids: Vec<&str> = nodes.iter().filter_map(|n| n["node_id"].as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"], "{out}");
    let counts: Vec<u64> = nodes
        .iter()
        .filter_map(|n| n["lifecycles"].as_u64())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 12, "{out}");
    // Three at a time over three nodes: each node always has a free turn.
    assert!(counts.iter().all(|c| *c >= 2), "every node ran some: {out}");
    let latencies = &report["latencies"];
    assert!(
        latencies["ControllerPublishVolume"]["calls"].as_u64() >= Some(12),
        "{out}"
    );
    // Durations are milliseconds, plain numbers, in fields named `_ms`.
    assert!(report["elapsed_ms"].as_f64() > Some(0.0), "{out}");
    let create = &latencies["CreateVolume"];
    for field in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(create[field].as_f64() > Some(0.0), "{field}: {out}");
    }
    assert!(
        create["p50_ms"].as_f64() <= create["max_ms"].as_f64(),
        "{out}"
    );
    if root() {
        for rpc in ["NodeStageVolume", "NodePublishVolume", "NodeUnstageVolume"] {
            assert!(latencies[rpc]["calls"].as_u64() >= Some(12), "{rpc}: {out}");
        }
    } else {
        println!("skipped: needs root (node steps against the bundled driver)");
    }
}

#[test]
fn ctrl_c_stops_new_lifecycles_and_undoes_what_was_made() {
    let child = Command::new(env!("CARGO_BIN_EXE_csi-sanity"))
        .args([
            "load",
            "--duration",
            "120s",
            "--concurrency",
            "4",
            "--csi.bundlednodes",
            "2",
            "--volume-size",
            "64Mi",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Long enough for lifecycles to be mid-way, far shorter than the run.
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let asked = Instant::now();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "took {:?} to unwind",
        asked.elapsed()
    );
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("Ctrl-C: no new calls"), "{err}");
    assert!(out.contains("(interrupted;"), "{out}");
    assert!(
        out.contains("cleanup: everything the run created is gone"),
        "{out}"
    );
    assert!(out.contains("lifecycles per node (2 nodes)"), "{out}");
}

#[test]
fn node_flags_that_do_not_fit_are_usage_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = rt.block_on(TestDriver::start());
    let ep = driver.endpoint();
    for (args, says) in [
        (
            &["--csi.nodeendpoints", "unix:///nowhere.sock"][..],
            "--csi.endpoint",
        ),
        (
            &["--csi.endpoint", &ep, "--csi.bundlednodes", "2"],
            "cannot be used with",
        ),
        (&["--csi.bundlednodes", "0"], "0 is not in 1..=64"),
        (&["--csi.bundlednodes", "65"], "65 is not in 1..=64"),
        (
            &["--csi.endpoint", &ep, "--csi.nodeendpoints", &ep],
            "is node \"1\", as --csi.endpoint is",
        ),
    ] {
        let o = load(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
