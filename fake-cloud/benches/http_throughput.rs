//! Throughput of the fake-cloud HTTP server on loopback: create, get and
//! delete volume, at 1, 8 and 64 concurrent clients. Prints a table; asserts
//! nothing about time.
//!
//! Run: `cargo bench -p fake-cloud --bench http_throughput`
//! (`FAKE_CLOUD_BENCH_OPS=N` sets the operations per cell, default 4000).

use std::time::{Duration, Instant};

use fake_cloud::{server, Cloud, CloudConfig, Faults};
use serde_json::{json, Value};

const TOKEN: &str = "bench-token";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn create(&self, name: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v2/volumes", self.base))
            .bearer_auth(TOKEN)
            .json(&json!({"name": name, "size_gigabytes": 1, "region": "nyc3"}))
            .send()
            .await
            .expect("create request");
        assert_eq!(r.status().as_u16(), 201, "create failed");
        let body: Value = r.json().await.expect("create body");
        body["volume"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn get(&self, id: &str) {
        let r = self
            .http
            .get(format!("{}/v2/volumes/{id}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get request");
        assert_eq!(r.status().as_u16(), 200, "get failed");
        let _ = r.bytes().await;
    }

    async fn delete(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/v2/volumes/{id}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("delete request");
        assert_eq!(r.status().as_u16(), 204, "delete failed");
    }
}

/// Runs `per_client` operations on each client concurrently; returns ops/s.
async fn measure<F, Fut>(clients: &[std::sync::Arc<Client>], per_client: usize, op: F) -> f64
where
    F: Fn(std::sync::Arc<Client>, usize, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(w, c)| {
            let futures: Vec<Fut> = (0..per_client).map(|i| op(c.clone(), w, i)).collect();
            tokio::spawn(async move {
                for f in futures {
                    f.await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    (clients.len() * per_client) as f64 / elapsed.as_secs_f64()
}

async fn cell(concurrency: usize, total_ops: usize) -> (f64, f64, f64) {
    let cloud = Cloud::new(CloudConfig {
        faults: Faults::none(),
        capacity_quota_gib: u64::MAX / 2,
        ..CloudConfig::default()
    });
    let srv = server::spawn(cloud, TOKEN.to_string())
        .await
        .expect("spawn server");
    let clients: Vec<std::sync::Arc<Client>> = (0..concurrency)
        .map(|_| {
            std::sync::Arc::new(Client {
                http: reqwest::Client::new(),
                base: srv.base_url(),
            })
        })
        .collect();
    let per_client = (total_ops / concurrency).max(1);
    let ids: Vec<Vec<std::sync::Mutex<String>>> = (0..concurrency)
        .map(|_| {
            (0..per_client)
                .map(|_| std::sync::Mutex::new(String::new()))
                .collect()
        })
        .collect();
    let ids = std::sync::Arc::new(ids);

    let slots = ids.clone();
    let create = measure(&clients, per_client, move |c, w, i| {
        let slots = slots.clone();
        async move {
            let id = c.create(&format!("bench-{w}-{i}")).await;
            if let Ok(mut slot) = slots[w][i].lock() {
                *slot = id;
            }
        }
    })
    .await;
    let id_of = |ids: &std::sync::Arc<Vec<Vec<std::sync::Mutex<String>>>>, w: usize, i: usize| {
        ids[w][i].lock().map(|s| s.clone()).unwrap_or_default()
    };
    let slots = ids.clone();
    let get = measure(&clients, per_client, move |c, w, i| {
        let id = id_of(&slots, w, i);
        async move { c.get(&id).await }
    })
    .await;
    let slots = ids.clone();
    let delete = measure(&clients, per_client, move |c, w, i| {
        let id = id_of(&slots, w, i);
        async move { c.delete(&id).await }
    })
    .await;
    (create, get, delete)
}

fn main() {
    let total_ops: usize = std::env::var("FAKE_CLOUD_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("fake-cloud HTTP throughput on loopback ({total_ops} ops per cell, {threads} CPUs, in-memory, no faults)");
    println!();
    println!("| clients | create volume ops/s | get volume ops/s | delete volume ops/s |");
    println!("|--------:|--------------------:|-----------------:|--------------------:|");
    for concurrency in [1usize, 8, 64] {
        let (create, get, delete) = runtime.block_on(cell(concurrency, total_ops));
        println!("| {concurrency:>7} | {create:>19.0} | {get:>16.0} | {delete:>19.0} |");
    }
}
