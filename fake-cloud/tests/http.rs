//! The HTTP surface over real HTTP on loopback: the DigitalOcean v2 shapes,
//! status codes and messages, authentication, pagination, bad requests,
//! rate limiting and injected faults, and the admin routes.

use std::sync::Arc;
use std::time::Duration;

use fake_cloud::clock::VirtualClock;
use fake_cloud::server::{spawn, SpawnedServer};
use fake_cloud::{Cloud, CloudConfig, Faults, LatencyConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "test-token";

struct Api {
    server: SpawnedServer,
    http: reqwest::Client,
    cloud: Cloud,
    clock: Arc<VirtualClock>,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Api {
    async fn start(config: CloudConfig) -> Api {
        let clock = Arc::new(VirtualClock::starting_now());
        let cloud = Cloud::with_clock(config, clock.clone());
        let server = spawn(cloud.clone(), TOKEN.to_string())
            .await
            .expect("spawn server");
        Api {
            server,
            http: reqwest::Client::new(),
            cloud,
            clock,
        }
    }

    async fn default() -> Api {
        Api::start(config()).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.base_url()));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(TOKEN), None).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, Some(TOKEN), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(TOKEN), Some(&body.to_string()))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(TOKEN), Some(&body.to_string()))
            .await
    }

    async fn create_volume(&self, name: &str, size: u64) -> Value {
        let r = self
            .post(
                "/v2/volumes",
                json!({"name": name, "size_gigabytes": size, "region": "nyc3", "description": "d"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["volume"].clone()
    }

    async fn action(&self, volume_id: &str, body: Value) -> Reply {
        self.post(&format!("/v2/volumes/{volume_id}/actions"), body)
            .await
    }
}

fn config() -> CloudConfig {
    CloudConfig {
        droplets: vec![(1, "nyc3".into()), (2, "nyc3".into())],
        faults: Faults::none(),
        ..CloudConfig::default()
    }
}

fn assert_error(r: &Reply, status: u16, id: &str, text: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.body["id"], id, "{}", r.text);
    let message = r.body["message"].as_str().unwrap_or("");
    assert!(
        message.contains(text),
        "{message:?} should contain {text:?}"
    );
    assert!(
        r.body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn requests_without_the_right_token_get_401() {
    let api = Api::default().await;
    for token in [None, Some("wrong"), Some("")] {
        let r = api.send(Method::GET, "/v2/volumes", token, None).await;
        assert_error(&r, 401, "unauthorized", "Unable to authenticate you.");
        assert_eq!(r.body["message"], "Unable to authenticate you.");
    }
    let r = api.send(Method::GET, "/admin/faults", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = api
        .send(Method::GET, "/v2/volumes", Some(&format!("{TOKEN}x")), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_volume_lives_through_create_attach_detach_and_delete() {
    let api = Api::default().await;
    let v = api.create_volume("pvc-1", 5).await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).map(|_| ()), Ok(()));
    assert_eq!(v["name"], "pvc-1");
    assert_eq!(v["description"], "d");
    assert_eq!(v["size_gigabytes"], 5);
    assert_eq!(v["region"]["slug"], "nyc3");
    assert_eq!(v["region"]["name"], "New York 3");
    assert_eq!(v["region"]["available"], true);
    assert!(v["region"]["sizes"].is_array() && v["region"]["features"].is_array());
    assert_eq!(v["droplet_ids"], json!([]));
    assert_eq!(v["filesystem_type"], "");
    assert_eq!(v["filesystem_label"], "");
    assert_eq!(v["tags"], json!([]));
    assert!(chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap()).is_ok());

    let got = api.get(&format!("/v2/volumes/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["volume"]["id"], id.as_str());
    assert_eq!(got.headers["content-type"], "application/json");

    let r = api
        .action(
            &id,
            json!({"type": "attach", "droplet_id": 1, "region": "nyc3"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let action = &r.body["action"];
    assert_eq!(action["status"], "in-progress");
    assert_eq!(action["type"], "attach_volume");
    assert_eq!(action["resource_type"], "volume");
    assert_eq!(action["resource_id"], 1);
    assert_eq!(action["region_slug"], "nyc3");
    assert_eq!(action["volume_id"], id.as_str());
    assert_eq!(action["completed_at"], Value::Null);
    let action_id = action["id"].as_u64().unwrap();

    // Zero latency: done at the next read.
    let done = api.get(&format!("/v2/actions/{action_id}")).await;
    assert_eq!(done.body["action"]["status"], "completed");
    assert!(done.body["action"]["completed_at"].is_string());
    let same = api
        .get(&format!("/v2/volumes/{id}/actions/{action_id}"))
        .await;
    assert_eq!(same.body["action"]["id"], action_id);
    let list = api.get(&format!("/v2/volumes/{id}/actions")).await;
    assert_eq!(list.body["meta"]["total"], 1);
    assert_eq!(
        api.get(&format!("/v2/volumes/{id}")).await.body["volume"]["droplet_ids"],
        json!([1])
    );

    let droplet = api.get("/v2/droplets/1").await;
    assert_eq!(droplet.status, StatusCode::OK);
    assert_eq!(droplet.body["droplet"]["id"], 1);
    assert_eq!(droplet.body["droplet"]["volume_ids"], json!([id]));
    assert_eq!(droplet.body["droplet"]["region"]["slug"], "nyc3");

    assert_error(
        &api.delete(&format!("/v2/volumes/{id}")).await,
        409,
        "conflict",
        "attached volume cannot be deleted",
    );
    let r = api
        .action(&id, json!({"type": "detach", "droplet_id": 1}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["action"]["type"], "detach_volume");

    let r = api.delete(&format!("/v2/volumes/{id}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.text, "");
    assert_error(
        &api.get(&format!("/v2/volumes/{id}")).await,
        404,
        "not_found",
        "could not be found",
    );
    assert_error(
        &api.delete(&format!("/v2/volumes/{id}")).await,
        404,
        "not_found",
        "",
    );
}

#[tokio::test]
async fn state_machine_errors_keep_digitalocean_texts() {
    let api = Api::start(CloudConfig {
        latency: LatencyConfig {
            attach: Duration::from_secs(30),
            detach: Duration::from_secs(30),
            resize: Duration::from_secs(30),
            jitter: Duration::ZERO,
        },
        volume_limit: 1,
        ..config()
    })
    .await;
    let a = api.create_volume("a", 1).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = api.create_volume("b", 1).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    assert_error(
        &api.action(&a, json!({"type": "detach", "droplet_id": 1}))
            .await,
        422,
        "unprocessable_entity",
        "Attachment not found",
    );
    assert_eq!(
        api.action(&a, json!({"type": "attach", "droplet_id": 1}))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_error(
        &api.action(&b, json!({"type": "attach", "droplet_id": 1}))
            .await,
        422,
        "unprocessable_entity",
        "Droplet already has a pending event",
    );
    // Until the attach completes, the volume is not attached.
    assert_eq!(
        api.get(&format!("/v2/volumes/{a}")).await.body["volume"]["droplet_ids"],
        json!([])
    );
    api.clock.advance(Duration::from_secs(30));
    assert_eq!(
        api.get(&format!("/v2/volumes/{a}")).await.body["volume"]["droplet_ids"],
        json!([1])
    );
    assert_error(
        &api.action(&a, json!({"type": "attach", "droplet_id": 2}))
            .await,
        422,
        "unprocessable_entity",
        "This volume is already attached",
    );
    assert_error(
        &api.action(&b, json!({"type": "attach", "droplet_id": 1}))
            .await,
        422,
        "unprocessable_entity",
        "cannot attach more volumes to the Droplet",
    );
    assert_error(
        &api.action(&a, json!({"type": "resize", "size_gigabytes": 1}))
            .await,
        422,
        "unprocessable_entity",
        "greater than",
    );
    assert_error(
        &api.action(&a, json!({"type": "attach", "droplet_id": 9}))
            .await,
        404,
        "not_found",
        "",
    );
    assert_error(
        &api.action("nope", json!({"type": "attach", "droplet_id": 1}))
            .await,
        404,
        "not_found",
        "",
    );
    assert_error(
        &api.action(
            &a,
            json!({"type": "resize", "size_gigabytes": 2, "region": "sfo3"}),
        )
        .await,
        422,
        "unprocessable_entity",
        "region",
    );

    let r = api
        .action(
            &b,
            json!({"type": "resize", "size_gigabytes": 3, "region": "nyc3"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["action"]["type"], "resize_volume");
    assert_error(
        &api.action(&b, json!({"type": "resize", "size_gigabytes": 4}))
            .await,
        422,
        "unprocessable_entity",
        "pending",
    );
    api.clock.advance(Duration::from_secs(30));
    assert_eq!(
        api.get(&format!("/v2/volumes/{b}")).await.body["volume"]["size_gigabytes"],
        3
    );

    let dup = api
        .post(
            "/v2/volumes",
            json!({"name": "a", "size_gigabytes": 1, "region": "nyc3"}),
        )
        .await;
    assert_error(&dup, 409, "conflict", "already exists");
}

#[tokio::test]
async fn pagination_links_show_only_the_pages_that_apply() {
    let api = Api::default().await;
    for i in 0..5 {
        api.create_volume(&format!("v{i}"), 1).await;
        api.clock.advance(Duration::from_secs(1));
    }
    let pages = |r: &Reply| {
        let mut keys: Vec<String> = r.body["links"]["pages"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };

    let single = api.get("/v2/volumes").await;
    assert_eq!(single.body["meta"]["total"], 5);
    assert_eq!(single.body["volumes"].as_array().unwrap().len(), 5);
    assert_eq!(single.body["links"]["pages"], json!({}));

    let first = api.get("/v2/volumes?page=1&per_page=2").await;
    assert_eq!(pages(&first), ["last", "next"]);
    let next = first.body["links"]["pages"]["next"].as_str().unwrap();
    assert!(next.starts_with(&api.server.base_url()), "{next}");
    assert!(next.ends_with("/v2/volumes?page=2&per_page=2"), "{next}");
    assert!(first.body["links"]["pages"]["last"]
        .as_str()
        .unwrap()
        .contains("page=3"));
    assert_eq!(first.body["volumes"][0]["name"], "v0");

    let middle = api.get("/v2/volumes?page=2&per_page=2").await;
    assert_eq!(pages(&middle), ["first", "last", "next", "prev"]);
    assert_eq!(middle.body["volumes"][0]["name"], "v2");

    let last = api.get("/v2/volumes?page=3&per_page=2").await;
    assert_eq!(pages(&last), ["first", "prev"]);
    assert_eq!(last.body["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(last.body["meta"]["total"], 5);

    let past = api.get("/v2/volumes?page=7&per_page=2").await;
    assert_eq!(past.status, StatusCode::OK);
    assert_eq!(past.body["volumes"], json!([]));

    // Filters survive in the links and narrow the total.
    api.post(
        "/v2/volumes",
        json!({"name": "v0", "size_gigabytes": 1, "region": "sfo3"}),
    )
    .await;
    let named = api.get("/v2/volumes?name=v0&per_page=1").await;
    assert_eq!(named.body["meta"]["total"], 2);
    assert!(named.body["links"]["pages"]["next"]
        .as_str()
        .unwrap()
        .contains("name=v0&page=2&per_page=1"));
    let both = api.get("/v2/volumes?name=v0&region=sfo3").await;
    assert_eq!(both.body["meta"]["total"], 1);
    assert_eq!(both.body["volumes"][0]["region"]["slug"], "sfo3");

    let full = api.get("/v2/volumes?per_page=200").await;
    assert_eq!(full.status, StatusCode::OK);
    for bad in [
        "page=0",
        "per_page=0",
        "per_page=201",
        "page=abc",
        "per_page=-1",
    ] {
        assert_error(
            &api.get(&format!("/v2/volumes?{bad}")).await,
            400,
            "bad_request",
            "",
        );
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_in_the_digitalocean_shape_and_change_nothing() {
    let api = Api::default().await;
    let v = api.create_volume("keep", 1).await;
    let id = v["id"].as_str().unwrap();

    let raw = |body: &'static str| api.send(Method::POST, "/v2/volumes", Some(TOKEN), Some(body));
    assert_error(
        &raw("{not json").await,
        400,
        "bad_request",
        "malformed JSON",
    );
    assert_error(&raw("").await, 400, "bad_request", "");
    assert_error(
        &raw(r#"{"name":"x","size_gigabytes":1,"region":"nyc3","color":"red"}"#).await,
        422,
        "unprocessable_entity",
        "unknown field",
    );
    assert_error(
        &raw(r#"{"name":"x","size_gigabytes":-1,"region":"nyc3"}"#).await,
        422,
        "unprocessable_entity",
        "",
    );
    assert_error(
        &raw(r#"{"name":"x","size_gigabytes":"big","region":"nyc3"}"#).await,
        422,
        "unprocessable_entity",
        "",
    );
    assert_error(
        &raw(r#"{"size_gigabytes":1,"region":"nyc3"}"#).await,
        422,
        "unprocessable_entity",
        "name",
    );
    assert_error(
        &raw(r#"{"name":"x","size_gigabytes":0,"region":"nyc3"}"#).await,
        422,
        "unprocessable_entity",
        "size_gigabytes",
    );
    assert_error(
        &raw(r#"{"name":"x","size_gigabytes":99999999999999999999,"region":"nyc3"}"#).await,
        422,
        "unprocessable_entity",
        "",
    );
    assert_error(
        &raw(r#"{"name":"Bad Name","size_gigabytes":1,"region":"nyc3"}"#).await,
        422,
        "unprocessable_entity",
        "name",
    );
    assert_error(
        &raw(r#"{"name":"x","size_gigabytes":1,"region":"mars1"}"#).await,
        422,
        "unprocessable_entity",
        "region",
    );
    assert_error(
        &raw(r#"{"name":"x","size_gigabytes":1}"#).await,
        422,
        "unprocessable_entity",
        "region is required",
    );
    assert_error(&raw(r#"[1,2,3]"#).await, 422, "unprocessable_entity", "");

    let actions_path = format!("/v2/volumes/{id}/actions");
    let act = |body: &'static str| api.send(Method::POST, &actions_path, Some(TOKEN), Some(body));
    assert_error(
        &act(r#"{"type":"explode"}"#).await,
        422,
        "unprocessable_entity",
        "unknown action type",
    );
    assert_error(
        &act(r#"{"type":"attach"}"#).await,
        422,
        "unprocessable_entity",
        "droplet_id",
    );
    assert_error(
        &act(r#"{"type":"resize"}"#).await,
        422,
        "unprocessable_entity",
        "size_gigabytes",
    );
    assert_error(
        &act(r#"{"type":"attach","droplet_id":1,"force":true}"#).await,
        422,
        "unprocessable_entity",
        "unknown field",
    );
    assert_error(
        &act(r#"{"type":"attach","droplet_id":"one"}"#).await,
        422,
        "unprocessable_entity",
        "",
    );

    assert_error(
        &api.get("/v2/actions/not-a-number").await,
        404,
        "not_found",
        "",
    );
    assert_error(&api.get("/v2/actions/123456").await, 404, "not_found", "");
    assert_error(&api.get("/v2/droplets/abc").await, 404, "not_found", "");
    assert_error(
        &api.get("/v2/nothing/here").await,
        404,
        "not_found",
        "could not be found",
    );
    assert_error(
        &api.send(Method::PUT, "/v2/volumes", Some(TOKEN), None)
            .await,
        405,
        "method_not_allowed",
        "",
    );
    assert_error(
        &api.get("/v2/snapshots?resource_type=planet").await,
        400,
        "bad_request",
        "",
    );

    // Nothing above changed the cloud.
    let list = api.get("/v2/volumes").await;
    assert_eq!(list.body["meta"]["total"], 1);
    assert_eq!(list.body["volumes"][0]["droplet_ids"], json!([]));
    assert!(api.cloud.list_volume_actions(id).unwrap().is_empty());
}

#[tokio::test]
async fn snapshots_round_trip_and_seed_new_volumes() {
    let api = Api::default().await;
    let v = api.create_volume("src", 4).await;
    let id = v["id"].as_str().unwrap();
    let r = api
        .post(
            &format!("/v2/volumes/{id}/snapshots"),
            json!({"name": "snap one", "tags": ["a"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let snap = &r.body["snapshot"];
    let snap_id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(snap["name"], "snap one");
    assert_eq!(snap["regions"], json!(["nyc3"]));
    assert_eq!(snap["resource_id"], id);
    assert_eq!(snap["resource_type"], "volume");
    assert_eq!(snap["min_disk_size"], 4);
    assert!(snap["size_gigabytes"].is_f64());
    assert_eq!(snap["tags"], json!(["a"]));

    let dup = api
        .post(
            &format!("/v2/volumes/{id}/snapshots"),
            json!({"name": "snap one"}),
        )
        .await;
    assert_error(&dup, 409, "conflict", "already exists");
    assert_eq!(
        api.get("/v2/snapshots?resource_type=volume").await.body["meta"]["total"],
        1
    );
    assert_eq!(
        api.get("/v2/snapshots?resource_type=droplet").await.body["meta"]["total"],
        0
    );
    assert_eq!(
        api.get(&format!("/v2/volumes/{id}/snapshots")).await.body["snapshots"][0]["id"],
        snap_id.as_str()
    );
    assert_eq!(
        api.get(&format!("/v2/snapshots/{snap_id}")).await.body["snapshot"]["name"],
        "snap one"
    );

    let small = api
        .post(
            "/v2/volumes",
            json!({"name": "restored", "size_gigabytes": 3, "snapshot_id": snap_id}),
        )
        .await;
    assert_error(&small, 422, "unprocessable_entity", "min_disk_size");
    // Region comes from the snapshot when left out.
    let ok = api
        .post(
            "/v2/volumes",
            json!({"name": "restored", "size_gigabytes": 4, "snapshot_id": snap_id}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    assert_eq!(ok.body["volume"]["snapshot_id"], snap_id.as_str());
    assert_eq!(ok.body["volume"]["region"]["slug"], "nyc3");

    let clone = api
        .post(
            "/v2/volumes",
            json!({"name": "clone", "size_gigabytes": 4, "region": "nyc3", "source_volume_id": id}),
        )
        .await;
    assert_eq!(clone.status, StatusCode::CREATED, "{}", clone.text);
    assert_eq!(clone.body["volume"]["source_volume_id"], id);

    assert_eq!(
        api.delete(&format!("/v2/snapshots/{snap_id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &api.get(&format!("/v2/snapshots/{snap_id}")).await,
        404,
        "not_found",
        "",
    );
}

#[tokio::test]
async fn tags_account_regions_and_delete_by_name() {
    let api = Api::default().await;
    let v = api.create_volume("tagged", 2).await;
    let id = v["id"].as_str().unwrap();
    let r = api
        .send(
            Method::PATCH,
            &format!("/v2/volumes/{id}"),
            Some(TOKEN),
            Some(r#"{"tags":["x","k8s:y"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["volume"]["tags"], json!(["x", "k8s:y"]));

    let account = api.get("/v2/account").await;
    assert_eq!(account.body["account"]["volume_limit"], 7);
    assert_eq!(account.body["account"]["status"], "active");
    assert_eq!(api.get("/v2/regions").await.body["meta"]["total"], 3);

    assert_error(
        &api.delete("/v2/volumes?name=tagged").await,
        422,
        "unprocessable_entity",
        "region",
    );
    assert_error(
        &api.delete("/v2/volumes?name=other&region=nyc3").await,
        404,
        "not_found",
        "",
    );
    assert_eq!(
        api.delete("/v2/volumes?name=tagged&region=nyc3")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get("/v2/volumes").await.body["meta"]["total"], 0);
}

#[tokio::test]
async fn the_per_minute_budget_counts_requests_and_429s_past_it() {
    let api = Api::start(CloudConfig {
        faults: Faults {
            rate_limit_per_minute: 3,
            ..Faults::none()
        },
        ..config()
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let r = api.get("/v2/account").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["ratelimit-limit"], "3");
        assert_eq!(r.headers["ratelimit-remaining"], remaining);
        assert!(r.headers["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .is_ok());
    }
    api.clock.advance(Duration::from_secs(20));
    let r = api.get("/v2/account").await;
    assert_error(&r, 429, "too_many_requests", "API rate limit exceeded.");
    assert_eq!(r.headers["retry-after"], "40");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    // Admin calls are not counted.
    assert_eq!(api.get("/admin/faults").await.status, StatusCode::OK);
    api.clock.advance(Duration::from_secs(40));
    let r = api.get("/v2/account").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["ratelimit-remaining"], "2");
}

#[tokio::test]
async fn the_hourly_budget_answers_429_with_its_headers_and_no_retry_after() {
    let api = Api::start(CloudConfig {
        faults: Faults {
            rate_limit_per_minute: 250,
            rate_limit_per_hour: 5_000,
            ..Faults::none()
        },
        ..config()
    })
    .await;
    // While the minute has more left, the headers speak of the minute.
    let r = api.get("/v2/account").await;
    assert_eq!(r.headers["ratelimit-limit"], "250");
    assert_eq!(r.headers["ratelimit-remaining"], "249");
    // The hour nearly spent: now the headers speak of the hour.
    let used = api
        .put("/admin/ratelimit", json!({"hour_used": 4_998}))
        .await;
    assert_eq!(used.status, StatusCode::OK, "{}", used.text);
    assert_eq!(used.body["hour_used"], 4_998);
    let r = api.get("/v2/account").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["ratelimit-limit"], "5000");
    assert_eq!(r.headers["ratelimit-remaining"], "1");
    let reset: i64 = r.headers["ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let until_reset = reset - api.cloud.now().timestamp();
    assert!((3_000..=3_600).contains(&until_reset), "{until_reset}");
    assert_eq!(
        api.get("/v2/account").await.headers["ratelimit-remaining"],
        "0"
    );
    let r = api.get("/v2/account").await;
    assert_error(&r, 429, "too_many_requests", "API rate limit exceeded.");
    assert_eq!(r.headers["ratelimit-limit"], "5000");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    assert!(r.headers.get("retry-after").is_none());
    // A new minute does not help; a new hour does.
    api.clock.advance(Duration::from_secs(120));
    assert_eq!(api.get("/v2/account").await.status.as_u16(), 429);
    api.clock.advance(Duration::from_secs(3_600));
    let r = api.get("/v2/account").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["ratelimit-limit"], "250");
    // The hour's end can be brought near.
    let set = json!({"hour_used": 5_000, "hour_resets_in": 30});
    assert_eq!(
        api.put("/admin/ratelimit", set).await.body["hour_resets_in"],
        30
    );
    assert_eq!(api.get("/v2/account").await.status.as_u16(), 429);
    api.clock.advance(Duration::from_secs(31));
    assert_eq!(api.get("/v2/account").await.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_requests_counts_what_was_served_by_route() {
    let api = Api::start(CloudConfig {
        faults: Faults {
            rate_limit_per_minute: 3,
            ..Faults::none()
        },
        ..config()
    })
    .await;
    let v = api.create_volume("counted", 1).await;
    let id = v["id"].as_str().unwrap();
    api.get(&format!("/v2/volumes/{id}")).await;
    api.get(&format!("/v2/volumes/{id}")).await;
    // Past the budget: counted, and counted as throttled.
    assert_eq!(api.get("/v2/account").await.status.as_u16(), 429);
    let counts = api.get("/admin/requests").await;
    assert_eq!(counts.status, StatusCode::OK);
    let counts: fake_cloud::server::RequestCounts = serde_json::from_value(counts.body).unwrap();
    assert_eq!(counts.total, 4);
    assert_eq!(counts.throttled, 1);
    assert_eq!(counts.by_route["POST /v2/volumes"], 1);
    assert_eq!(counts.by_route["GET /v2/volumes/{id}"], 2);
    assert_eq!(counts.by_route["GET /v2/account"], 1);
    assert_eq!(
        api.delete("/admin/requests").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get("/admin/requests").await.body["total"], 0);
}

/// The statuses of `n` GETs under the server's current faults.
async fn statuses(api: &Api, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(api.get("/v2/account").await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn injected_5xx_and_429_are_reproducible_from_the_seed() {
    let api = Api::default().await;
    let faults =
        json!({"seed": 7, "error_rate_5xx": 0.3, "rate_429": 0.2, "rate_limit_per_minute": 0});
    assert_eq!(
        api.put("/admin/faults", faults.clone()).await.status,
        StatusCode::OK
    );
    let first = statuses(&api, 60).await;
    assert!(
        first.contains(&500) && first.contains(&429) && first.contains(&200),
        "{first:?}"
    );
    // Setting the same faults again reseeds: the same sequence follows.
    api.put("/admin/faults", faults).await;
    assert_eq!(statuses(&api, 60).await, first);
    api.put("/admin/faults", json!({"seed": 8})).await;
    assert_ne!(statuses(&api, 60).await, first);

    api.put(
        "/admin/faults",
        json!({"seed": 7, "error_rate_5xx": 0.0, "rate_429": 1.0}),
    )
    .await;
    let r = api.get("/v2/account").await;
    assert_error(&r, 429, "too_many_requests", "API rate limit exceeded.");
    assert_eq!(r.headers["retry-after"], "1");
    api.put(
        "/admin/faults",
        json!({"rate_429": 0.0, "error_rate_5xx": 1.0}),
    )
    .await;
    assert_error(
        &api.post(
            "/v2/volumes",
            json!({"name": "never", "size_gigabytes": 1, "region": "nyc3"}),
        )
        .await,
        500,
        "server_error",
        "",
    );
    // A 5xx before the change means no change.
    assert_eq!(api.cloud.list_volumes(None, None, 1, 20).unwrap().total, 0);
}

#[tokio::test]
async fn a_lost_response_still_applies_the_change() {
    let api = Api::default().await;
    api.put("/admin/faults", json!({"lost_response_rate": 1.0}))
        .await;
    let r = api
        .post(
            "/v2/volumes",
            json!({"name": "ghost", "size_gigabytes": 1, "region": "nyc3"}),
        )
        .await;
    assert_error(&r, 500, "server_error", "");
    api.put("/admin/faults", json!({"lost_response_rate": 0.0}))
        .await;
    // The retry finds the name taken: the idempotency case a driver must handle.
    let list = api.get("/v2/volumes?name=ghost&region=nyc3").await;
    assert_eq!(list.body["meta"]["total"], 1);
    let retry = api
        .post(
            "/v2/volumes",
            json!({"name": "ghost", "size_gigabytes": 1, "region": "nyc3"}),
        )
        .await;
    assert_error(&retry, 409, "conflict", "already exists");
}

#[tokio::test]
async fn admin_routes_change_faults_latency_and_droplets() {
    let api = Api::default().await;
    let faults = api.get("/admin/faults").await;
    assert_eq!(faults.body["rate_limit_per_minute"], 0);
    assert_eq!(faults.body["seed"], 0);
    assert_error(
        &api.put("/admin/faults", json!({"error_rate_5xx": 1.5}))
            .await,
        422,
        "unprocessable_entity",
        "error_rate_5xx",
    );
    assert_error(
        &api.put("/admin/faults", json!({"typo": 1})).await,
        422,
        "unprocessable_entity",
        "unknown field",
    );
    let r = api
        .put("/admin/faults", json!({"action_error_rate": 1.0}))
        .await;
    assert_eq!(r.body["action_error_rate"], 1.0);
    assert_eq!(api.cloud.faults().action_error_rate, 1.0);

    let r = api
        .put("/admin/latency", json!({"attach_ms": 5000, "jitter_ms": 0}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["attach_ms"], 5000);
    assert_eq!(api.get("/admin/latency").await.body["attach_ms"], 5000);

    let r = api
        .post("/admin/droplets", json!({"id": 42, "region": "nyc3"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["droplet"]["id"], 42);
    assert_error(
        &api.post("/admin/droplets", json!({"id": 43, "region": "mars1"}))
            .await,
        422,
        "unprocessable_entity",
        "region",
    );
    assert_eq!(
        api.get("/admin/droplets").await.body["droplets"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(api.get("/v2/droplets").await.body["meta"]["total"], 3);

    // Attach to the new droplet: slow (5 s) and fated to error.
    let v = api.create_volume("v", 1).await;
    let id = v["id"].as_str().unwrap();
    let r = api
        .action(id, json!({"type": "attach", "droplet_id": 42}))
        .await;
    let action_id = r.body["action"]["id"].as_u64().unwrap();
    api.clock.advance(Duration::from_millis(4_999));
    assert_eq!(
        api.get(&format!("/v2/actions/{action_id}")).await.body["action"]["status"],
        "in-progress"
    );
    api.clock.advance(Duration::from_millis(1));
    let done = api.get(&format!("/v2/actions/{action_id}")).await;
    assert_eq!(done.body["action"]["status"], "errored");
    assert!(done.body["action"]["error_message"]
        .as_str()
        .unwrap()
        .contains("injected"));
    assert_eq!(
        api.get("/v2/droplets/42").await.body["droplet"]["volume_ids"],
        json!([])
    );
}

#[tokio::test]
async fn concurrent_clients_see_consistent_state() {
    let api = Arc::new(Api::default().await);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.create_volume(&format!("c{i}"), 1).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(api.get("/v2/volumes").await.body["meta"]["total"], 16);
}

#[tokio::test]
async fn nodes_claim_stable_droplet_ids_for_the_cluster() {
    let api = Api::start(CloudConfig {
        droplets: vec![(1, "nyc3".into()), (2, "nyc3".into())],
        ..config()
    })
    .await;
    let a = api.get("/admin/droplet-id?node=kind-worker").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let b = api.get("/admin/droplet-id?node=kind-worker2").await;
    let c = api.get("/admin/droplet-id?node=kind-control-plane").await;
    assert_eq!((a.text.as_str(), b.text.as_str()), ("1", "2"));
    // No free droplet left in the region: a new one is registered.
    assert_eq!(c.text, "3");
    assert!(api.cloud.get_droplet(3).is_ok());
    // The same node asks again and gets the same id.
    assert_eq!(
        api.get("/admin/droplet-id?node=kind-worker2").await.text,
        "2"
    );
    let bad = api.get("/admin/droplet-id?node=x&region=mars").await;
    assert!(bad.status.is_client_error(), "{}", bad.text);
    let missing = api.get("/admin/droplet-id").await;
    assert!(missing.status.is_client_error(), "{}", missing.text);
    let unauthenticated = api
        .send(Method::GET, "/admin/droplet-id?node=n", None, None)
        .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
}
