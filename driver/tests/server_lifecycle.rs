//! The driver binary as a process: its socket, its signals, its logs and its HTTP side.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::{CreateVolumeRequest, GetPluginInfoRequest};
use tonic::transport::Endpoint;

const DRIVER: &str = env!("CARGO_BIN_EXE_csi-driver");

fn spawn(socket: &Path, extra: &[&str]) -> Child {
    Command::new(DRIVER)
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the driver binary starts")
}

fn wait_for_socket(socket: &Path) {
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "driver never created {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn channel(socket: &Path) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("unix://{}", socket.display()))
        .unwrap()
        .connect()
        .await
        .expect("connects to the driver socket")
}

fn terminate(child: &mut Child) -> (std::process::ExitStatus, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status, stderr);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "driver ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("csi.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_identity_with_a_restricted_socket_and_removes_it_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let mut child = spawn(&socket, &[]);
    wait_for_socket(&socket);

    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode & 0o007,
        0,
        "others must not reach the socket, mode {mode:o}"
    );

    let info = IdentityClient::new(channel(&socket).await)
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, csi_driver::config::DEFAULT_DRIVER_NAME);

    // A second driver on the same live socket is refused, clearly.
    let second = Command::new(DRIVER)
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("live process"), "{err}");

    let (status, _) = terminate(&mut child);
    assert!(status.success(), "graceful stop exits 0, got {status}");
    assert!(!socket.exists(), "the socket is removed on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut child = spawn(&socket, &[]);
    // Wait until the new process answers on it.
    let start = Instant::now();
    loop {
        if let Ok(ep) = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .unwrap()
            .connect()
            .await
        {
            IdentityClient::new(ep)
                .get_plugin_info(GetPluginInfoRequest {})
                .await
                .unwrap();
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "driver never served the stale socket path"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = terminate(&mut child);
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rpcs_are_logged_once_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let mut child = spawn(&socket, &["--log-format=json", "--log-level=trace"]);
    wait_for_socket(&socket);
    let secrets: HashMap<String, String> =
        [("password".to_string(), "hunter2-very-secret".to_string())].into();
    let err = ControllerClient::new(channel(&socket).await)
        .create_volume(CreateVolumeRequest {
            name: String::new(),
            secrets,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    let (_, logs) = terminate(&mut child);
    assert!(
        !logs.contains("hunter2-very-secret"),
        "a secret leaked into the logs:\n{logs}"
    );
    let failures: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("RPC failed") && l.contains("CreateVolume"))
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "exactly one failure line expected:\n{logs}"
    );
    assert!(
        failures[0].contains("password"),
        "the secret's key is shown: {}",
        failures[0]
    );
    assert!(failures[0].contains("<redacted>"), "{}", failures[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_are_served_over_http() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn(&socket, &["--http-address", &addr]);
    wait_for_socket(&socket);
    IdentityClient::new(channel(&socket).await)
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("csi_operations_total{method=\"GetPluginInfo\",code=\"Ok\"}"),
        "{metrics}"
    );
    let (status, _) = terminate(&mut child);
    assert!(status.success());
}
