//! Property-based fuzzing of the fake-cloud HTTP server: arbitrary methods, paths, query
//! strings, headers and bodies, with the right token and without.
//!
//! Properties, checked after every request:
//! - the server answers (no dropped connection, which is what a panicking handler gives);
//! - without the right bearer token the answer is 401; with it, never a 5xx (no fault
//!   is configured), and every error carries the DigitalOcean error body (`id`,
//!   `message`);
//! - the state stays consistent: the volume list pages add up to `meta.total`, every
//!   listed volume and snapshot can be fetched, and the account's used capacity is the
//!   sum of the volumes' sizes.
//!
//! `PROPTEST_CASES` sets the number of requests (default 256); the count is printed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fake_cloud::{Cloud, CloudConfig, Faults};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};

const TOKEN: &str = "fuzz-token";

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// One arbitrary request.
#[derive(Debug, Clone)]
struct Fuzzed {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    auth: Auth,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Auth {
    Right,
    Missing,
    Wrong(String),
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z][a-z0-9-]{0,20}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => prop::sample::select(vec![
            "..", "%2e%2e", "%00", "../../etc/passwd", "-1", "0", "18446744073709551616",
            "1e308", "NaN", "null", "true", "{}", "[]", "🦀", "\u{202e}",
        ])
        .prop_map(String::from),
        1 => (100usize..3000).prop_map(|n| "v".repeat(n)),
    ]
    .boxed()
}

/// Percent-encode everything but unreserved characters, so any string is a valid path
/// segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Bodies close to what the API reads, with arbitrary values in the fields it reads.
fn plausible_body() -> BoxedStrategy<Value> {
    let number = prop_oneof![
        2 => (1u64..100).prop_map(|n| json!(n)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<u64>().prop_map(|n| json!(n)),
        1 => Just(json!(1.5)),
        1 => Just(json!("10")),
        1 => Just(json!(null)),
    ];
    let region = prop_oneof![
        3 => Just(json!("nyc3")),
        1 => text().prop_map(Value::String),
    ];
    prop_oneof![
        (text(), region.clone(), number.clone()).prop_map(|(name, region, size)| json!({
            "name": name, "region": region, "size_gigabytes": size,
        })),
        (
            prop::sample::select(vec!["attach", "detach", "resize", "explode"]),
            number.clone(),
            region
        )
            .prop_map(|(kind, n, region)| json!({
                "type": kind, "droplet_id": n, "size_gigabytes": n, "region": region,
            })),
        text().prop_map(|name| json!({ "name": name })),
        (number.clone(), number.clone()).prop_map(|(a, b)| json!({
            "attach_ms": a, "detach_ms": b, "resize_ms": a, "jitter_ms": b,
        })),
        (number, text()).prop_map(|(id, region)| json!({ "id": id, "region": region })),
        prop::collection::vec(text(), 0..5).prop_map(|tags| json!({ "tags": tags })),
    ]
    .boxed()
}

fn fuzzed(known: &[String]) -> BoxedStrategy<Fuzzed> {
    let id = prop_oneof![
        3 => prop::sample::select(known.to_vec()),
        2 => text(),
        1 => any::<u64>().prop_map(|n| n.to_string()),
    ];
    let path = (
        prop::sample::select(vec![
            "/v2/volumes",
            "/v2/volumes/{id}",
            "/v2/volumes/{id}/actions",
            "/v2/volumes/{id}/actions/{id}",
            "/v2/actions/{id}",
            "/v2/volumes/{id}/snapshots",
            "/v2/snapshots",
            "/v2/snapshots/{id}",
            "/v2/droplets",
            "/v2/droplets/{id}",
            "/v2/account",
            "/v2/regions",
            "/v2",
            "/",
            "/admin/latency",
            "/admin/droplets",
            "/v2/volumes/{id}/{id}",
            "/{id}",
        ]),
        id.clone(),
        id,
    )
        .prop_map(|(template, a, b)| {
            template
                .replacen("{id}", &encode(&a), 1)
                .replacen("{id}", &encode(&b), 1)
        });
    let query = prop::collection::vec(
        (
            prop_oneof![
                3 => prop::sample::select(vec![
                    "page", "per_page", "name", "region", "resource_type",
                ])
                .prop_map(String::from),
                1 => text(),
            ],
            prop_oneof![
                2 => (0i64..300).prop_map(|n| n.to_string()),
                2 => text(),
            ],
        ),
        0..4,
    );
    let auth = prop_oneof![
        6 => Just(Auth::Right),
        1 => Just(Auth::Missing),
        1 => prop::sample::select(vec![
            "Bearer wrong", "Bearer ", TOKEN, "bearer fuzz-token", "Basic fuzz-token",
            "Bearer fuzz-tokenx", "Bearer  fuzz-token",
        ])
        .prop_map(|s| Auth::Wrong(s.to_string())),
    ];
    let headers = prop::collection::vec(
        (
            prop::sample::select(vec![
                "content-type",
                "accept",
                "x-forwarded-for",
                "content-encoding",
                "x-fuzz",
                "transfer-encoding-x",
                "range",
            ])
            .prop_map(String::from),
            "[ -~]{0,40}",
        ),
        0..3,
    );
    let body = prop_oneof![
        2 => Just(None),
        3 => plausible_body().prop_map(|v| Some(v.to_string().into_bytes())),
        2 => json_value().prop_map(|v| Some(v.to_string().into_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Some),
        1 => (1usize..4).prop_map(|n| Some(vec![b'['; n << 16])),
    ];
    // Half the time a method the route serves, so requests reach the handlers.
    let method_for = |path: &str| -> Vec<&'static str> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v2", "volumes"] => vec!["GET", "POST", "DELETE"],
            ["v2", "volumes", _] => vec!["GET", "DELETE", "PATCH"],
            ["v2", "volumes", _, "actions"] | ["v2", "volumes", _, "snapshots"] => {
                vec!["GET", "POST"]
            }
            ["v2", "snapshots", _] => vec!["GET", "DELETE"],
            ["admin", _] => vec!["GET", "PUT", "POST"],
            _ => vec!["GET"],
        }
    };
    let any_method = prop::sample::select(vec![
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FUZZ",
    ]);
    let method_and_path = (
        path,
        any::<bool>(),
        any_method,
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(path, aligned, method, pick)| {
            let method = if aligned {
                let served = method_for(&path);
                served[pick.index(served.len())]
            } else {
                method
            };
            (method, path)
        });
    (method_and_path, query, auth, headers, body)
        .prop_map(|((method, path), query, auth, headers, body)| Fuzzed {
            method: method.to_string(),
            path,
            query,
            auth,
            headers,
            body,
        })
        .boxed()
}

struct Target {
    rt: tokio::runtime::Runtime,
    _server: fake_cloud::server::SpawnedServer,
    base: String,
    http: reqwest::Client,
}

impl Target {
    fn send(&self, f: &Fuzzed) -> Result<(u16, Vec<u8>), String> {
        self.rt.block_on(async {
            let method =
                reqwest::Method::from_bytes(f.method.as_bytes()).map_err(|e| e.to_string())?;
            let query: String = f
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let url = if query.is_empty() {
                format!("{}{}", self.base, f.path)
            } else {
                format!("{}{}?{query}", self.base, f.path)
            };
            let mut request = self.http.request(method, url);
            match &f.auth {
                Auth::Right => request = request.header("authorization", format!("Bearer {TOKEN}")),
                Auth::Missing => {}
                Auth::Wrong(v) => request = request.header("authorization", v.as_str()),
            }
            for (k, v) in &f.headers {
                request = request.header(k.as_str(), v.as_str());
            }
            if let Some(body) = &f.body {
                request = request.body(body.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("no answer (a handler panicked?): {e}"))?;
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("the answer broke off: {e}"))?;
            Ok((status, body.to_vec()))
        })
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.send(&Fuzzed {
            method: "GET".into(),
            path: path.into(),
            query: vec![],
            auth: Auth::Right,
            headers: vec![],
            body: None,
        })?;
        if status != 200 {
            return Err(format!(
                "GET {path}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: not JSON: {e}"))
    }

    /// Every item of a paged list.
    fn all(&self, path: &str, key: &str) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        for page in 1.. {
            let v = self.get(&format!("{path}?page={page}&per_page=50"))?;
            let batch = v[key].as_array().cloned().unwrap_or_default();
            let total = v["meta"]["total"].as_u64().unwrap_or(0) as usize;
            let empty = batch.is_empty();
            items.extend(batch);
            if empty || items.len() >= total {
                if items.len() != total {
                    return Err(format!(
                        "{path}: pages hold {} items, meta.total says {total}",
                        items.len()
                    ));
                }
                break;
            }
            if page > 10_000 {
                return Err(format!("{path}: paging never ends"));
            }
        }
        Ok(items)
    }

    /// The state is consistent: counts add up and everything listed can be fetched.
    fn consistent(&self) -> Result<(), String> {
        let volumes = self.all("/v2/volumes", "volumes")?;
        let mut used = 0;
        for v in &volumes {
            let id = v["id"].as_str().ok_or("a volume without an id")?;
            self.get(&format!("/v2/volumes/{}", encode(id)))?;
            used += v["size_gigabytes"].as_u64().unwrap_or(0);
        }
        let account = self.get("/v2/account")?;
        let reported = account["account"]["volume_used_gigabytes"].as_u64();
        if reported != Some(used) {
            return Err(format!(
                "account says {reported:?} GiB used, the volumes add up to {used}"
            ));
        }
        for s in self.all("/v2/snapshots", "snapshots")? {
            let id = s["id"].as_str().ok_or("a snapshot without an id")?;
            self.get(&format!("/v2/snapshots/{}", encode(id)))?;
        }
        Ok(())
    }
}

fn start() -> (Target, Vec<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cloud = Cloud::new(CloudConfig {
        droplets: vec![(1, "nyc3".into()), (2, "nyc3".into()), (3, "sfo3".into())],
        faults: Faults::none(),
        ..CloudConfig::default()
    });
    // Something real to aim at: a volume, attached, with a snapshot.
    let volume = cloud
        .create_volume(fake_cloud::CreateVolumeRequest {
            name: "fuzz-known".into(),
            region: "nyc3".into(),
            size_gib: 1,
            ..Default::default()
        })
        .expect("a volume");
    let action = cloud.attach(&volume.id, 1).expect("an attach");
    let snapshot = cloud
        .create_snapshot(&volume.id, "fuzz-known-snap", vec![])
        .expect("a snapshot");
    let server = rt
        .block_on(fake_cloud::server::spawn(cloud, TOKEN.into()))
        .expect("fake-cloud serves");
    let known = vec![
        volume.id,
        snapshot.id,
        action.id.to_string(),
        "1".into(),
        "2".into(),
    ];
    let target = Target {
        base: server.base_url(),
        _server: server,
        rt,
        // A fresh connection per request: a server may close a connection whose request
        // body it did not read, and a reused one would then fail for the next request.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    (target, known)
}

#[test]
fn arbitrary_requests_get_deliberate_answers_and_leave_consistent_state() {
    let (target, known) = start();
    target.consistent().expect("consistent before fuzzing");
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    let tally = statuses.clone();
    let result = runner.run(&fuzzed(&known), |f| {
        let (status, body) = target.send(&f).map_err(TestCaseError::fail)?;
        let key = format!(
            "{} {}",
            if f.auth == Auth::Right {
                "token"
            } else {
                "no-token"
            },
            status
        );
        *tally.lock().unwrap().entry(key).or_default() += 1;
        if f.auth != Auth::Right {
            prop_assert_eq!(status, 401, "without the right token: {:?}", f);
        } else {
            prop_assert!(
                status < 500,
                "a 5xx with no fault configured: {} {}",
                status,
                String::from_utf8_lossy(&body)
            );
        }
        if status >= 400 && f.method != "HEAD" {
            let error: Value = serde_json::from_slice(&body).map_err(|e| {
                TestCaseError::fail(format!(
                    "a {status} without a JSON error body ({e}): {}",
                    String::from_utf8_lossy(&body)
                ))
            })?;
            prop_assert!(
                error["id"].is_string() && error["message"].is_string(),
                "a {} error body lacks id or message: {}",
                status,
                error
            );
        }
        target.consistent().map_err(TestCaseError::fail)?;
        Ok(())
    });
    if let Err(e) = result {
        let mut text = e.to_string();
        text.truncate(3000);
        panic!("{text}");
    }
    let statuses = statuses.lock().unwrap();
    let total: u64 = statuses.values().sum();
    println!(
        "fuzzed fake-cloud with {total} requests ({} requested; PROPTEST_CASES overrides)",
        cases()
    );
    for (what, n) in statuses.iter() {
        println!("  {what}: {n}");
    }
}
