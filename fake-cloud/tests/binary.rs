//! The `fake-cloud` binary: it binds port 0, says where on stdout, checks the
//! token from its flags, and comes back after a restart with its data.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

struct Server {
    child: Child,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-cloud"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--attach-latency",
            "0",
            "--jitter",
            "0",
        ])
        .args(extra)
        .env_remove("FAKE_CLOUD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fake-cloud");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read stdout");
    let base_url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server { child, base_url }
}

async fn get(server: &Server, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", server.base_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn serves_on_a_free_port_with_the_default_token_and_droplets() {
    let server = start(&[]);
    assert!(server.base_url.starts_with("http://127.0.0.1:"));
    let (status, body) = get(&server, "/v2/droplets/3", "fake-token").await;
    assert_eq!(status, 200);
    assert_eq!(body["droplet"]["region"]["slug"], "nyc3");
    assert_eq!(get(&server, "/v2/account", "other").await.0, 401);
    let (_, faults) = get(&server, "/admin/faults", "fake-token").await;
    assert_eq!(faults["rate_limit_per_minute"], 250);
}

#[tokio::test]
async fn flags_set_the_token_limits_and_droplets() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-file\n").unwrap();
    let server = start(&[
        "--token-file",
        token_file.to_str().unwrap(),
        "--volume-limit",
        "15",
        "--droplet",
        "77:ams3",
        "--regions",
        "ams3,fra1",
        "--seed",
        "9",
    ]);
    let (status, account) = get(&server, "/v2/account", "from-file").await;
    assert_eq!(status, 200);
    assert_eq!(account["account"]["volume_limit"], 15);
    assert_eq!(get(&server, "/v2/droplets/77", "from-file").await.0, 200);
    assert_eq!(get(&server, "/v2/droplets/1", "from-file").await.0, 404);
    assert_eq!(
        get(&server, "/v2/regions", "from-file").await.1["meta"]["total"],
        2
    );
    assert_eq!(
        get(&server, "/admin/faults", "from-file").await.1["seed"],
        9
    );
}

#[tokio::test]
async fn a_restarted_server_keeps_its_volumes_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let id = {
        let server = start(&["--data-dir", &data]);
        let r = reqwest::Client::new()
            .post(format!("{}/v2/volumes", server.base_url))
            .bearer_auth("fake-token")
            .json(&json!({"name": "kept", "size_gigabytes": 2, "region": "nyc3"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        body["volume"]["id"].as_str().unwrap().to_string()
    };
    let image = Path::new(&data).join("volumes").join(format!("{id}.img"));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 2 << 30);
    let server = start(&["--data-dir", &data]);
    let (status, body) = get(&server, &format!("/v2/volumes/{id}"), "fake-token").await;
    assert_eq!(status, 200);
    assert_eq!(body["volume"]["name"], "kept");
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_fake-cloud"))
        .args(["--attach-latency", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("duration"));
}
