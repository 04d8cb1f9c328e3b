//! `--cloud http`: a client for the DigitalOcean v2 block storage API (or fake-cloud, which
//! serves the same shape). Same paths and bodies as DigitalOcean, so pointed at
//! `https://api.digitalocean.com` with a real token it works unchanged.
//!
//! Every request is bounded by `--cloud-timeout` and the gRPC request's deadline. 5xx
//! answers and connection errors are retried with jittered exponential backoff (a bounded
//! number of times, never past the deadline); that includes POSTs, because every caller
//! reconciles with the cloud's state ("name in use", "pending event") after a retry whose
//! first attempt was applied. A 429 waits out `retry-after`, and the [`pacing::Pacer`]
//! slows requests down as `ratelimit-remaining` nears zero. Lists are read page by page
//! (`per_page=200`) while `links.pages.next` is present.
//!
//! Facts that change rarely are kept for a short while instead of fetched per call: the
//! regions for [`REGIONS_TTL`], a droplet for [`DROPLET_TTL`] (the controller only asks
//! whether it exists), and each volume's name and region, which never change
//! ([`CloudApi::known_volume`]). Every cache is bounded.
//!
//! Two calls go beyond DigitalOcean: ControllerModifyVolume's tags use fake-cloud's
//! `PATCH /v2/volumes/{id}` (DigitalOcean tags resources through `/v2/tags/{tag}/resources`
//! instead), and GetCapacity reads fake-cloud's `volume_quota_gigabytes` from the account
//! when present. CSI clones go the portable way: snapshot the source, create from the
//! snapshot, delete the snapshot.

mod errors;
pub mod pacing;
pub mod wire;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use reqwest::header::{HeaderMap, ACCEPT, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;

use super::names;
use super::wait::Waits;
use super::{
    Account, Action, CloudApi, CloudError, Deadline, Droplet, NewVolume, PollPolicy, Snapshot,
    Volume,
};
use crate::config::{Config, TOKEN_ENV};
use errors::{error_message, timeout, transport};
use pacing::{Class, Pacer};
use wire::{
    AccountBody, ActionBody, ActionWire, DropletBody, ListPage, RegionWire, SnapshotBody,
    SnapshotWire, VolumeBody, VolumeWire,
};

/// Most attempts of one request that fails with a 5xx or a connection error.
const MAX_ATTEMPTS: u32 = 8;
/// Most attempts of one request answered 429.
const MAX_THROTTLED_ATTEMPTS: u32 = 10;
/// First retry delay; doubled per attempt, up to [`MAX_BACKOFF`], then jittered.
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// Page size of list calls (the API's maximum).
const PER_PAGE: &str = "200";
/// Stop paging after this many pages, whatever the API says.
const MAX_PAGES: u32 = 10_000;
/// How long the list of regions is kept.
pub const REGIONS_TTL: Duration = Duration::from_secs(300);
/// How long a droplet is kept.
pub const DROPLET_TTL: Duration = Duration::from_secs(30);
/// Most droplets, and most volumes' names and regions, kept at once; past it the
/// cache starts again empty.
const CACHE_ENTRIES: usize = 4096;

/// The API token. Its Debug form is "<redacted>", so it never reaches a log.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Read from `--token-file`, else from `$DIGITALOCEAN_ACCESS_TOKEN`; never from a flag.
    pub fn from_config(config: &Config) -> anyhow::Result<Token> {
        let text = match &config.token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading --token-file {}", path.display()))?,
            None => std::env::var(TOKEN_ENV).map_err(|_| {
                anyhow::anyhow!("--cloud http needs an API token: set --token-file or ${TOKEN_ENV}")
            })?,
        };
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!("the API token is empty (--token-file or ${TOKEN_ENV})");
        }
        Ok(Token(token.to_string()))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The [`CloudApi`] over HTTP.
#[derive(Debug)]
pub struct HttpCloud {
    client: reqwest::Client,
    base: Url,
    token: Token,
    timeout: Duration,
    pacer: Pacer,
    waits: Waits,
    regions: Mutex<Option<(Instant, Vec<String>)>>,
    droplets: Mutex<HashMap<u64, (Instant, Droplet)>>,
    /// Volume id → (name, region).
    volumes: Mutex<HashMap<String, (String, String)>>,
}

/// A successful answer's body.
struct Answer {
    body: bytes::Bytes,
}

impl Answer {
    fn parse<T: DeserializeOwned>(&self) -> Result<T, CloudError> {
        serde_json::from_slice(&self.body).map_err(|e| CloudError::Transport {
            message: format!("unreadable answer from the cloud API: {e}"),
        })
    }
}

impl HttpCloud {
    /// Build the client from `--cloud-url`, `--cloud-timeout` and the token.
    pub fn from_config(config: &Config) -> anyhow::Result<HttpCloud> {
        let token = Token::from_config(config)?;
        HttpCloud::new(&config.cloud_url, token, config.cloud_timeout)
    }

    /// A client of the API at `base_url`.
    pub fn new(base_url: &str, token: Token, timeout: Duration) -> anyhow::Result<HttpCloud> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .with_context(|| format!("--cloud-url {base_url:?} is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            anyhow::bail!("--cloud-url {base_url:?} must be an http:// or https:// URL");
        }
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .context("building the HTTP client")?;
        Ok(HttpCloud {
            client,
            base,
            token,
            timeout,
            pacer: Pacer::default(),
            waits: Waits::new(PollPolicy::Learned),
            regions: Mutex::new(None),
            droplets: Mutex::new(HashMap::new()),
            volumes: Mutex::new(HashMap::new()),
        })
    }

    /// Remember a volume's name and region; the volume as it was.
    fn remember(&self, volume: Volume) -> Volume {
        let mut known = lock(&self.volumes);
        if known.len() >= CACHE_ENTRIES && !known.contains_key(&volume.id) {
            known.clear();
        }
        known.insert(
            volume.id.clone(),
            (volume.name.clone(), volume.region.clone()),
        );
        volume
    }

    fn forget(&self, volume_id: &str) {
        lock(&self.volumes).remove(volume_id);
    }

    /// The URL of a path, each segment percent-encoded (ids come from requests).
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One API call, with retries, pacing and metrics; the body of a 2xx answer.
    async fn send(
        &self,
        call: &'static str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        deadline: Deadline,
    ) -> Result<Answer, CloudError> {
        let mut failures = 0u32;
        let mut throttled = 0u32;
        let class = if call == "get_action" {
            Class::Poll
        } else {
            Class::Call
        };
        loop {
            self.pacer.take_turn(deadline, class).await?;
            let remaining = deadline.remaining();
            if remaining.is_zero() {
                return Err(timeout(call));
            }
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(self.token.expose())
                .header(ACCEPT, "application/json")
                .header(
                    USER_AGENT,
                    concat!("csi-driver/", env!("CARGO_PKG_VERSION")),
                )
                .timeout(remaining.min(self.timeout));
            if let Some(body) = body {
                request = request.json(body);
            }
            let started = Instant::now();
            let (status, headers, bytes) = match exchange(request).await {
                Ok(answer) => answer,
                Err(e) => {
                    crate::metrics::record_cloud_call(call, "error", started.elapsed());
                    failures += 1;
                    let err = transport(call, &e, deadline);
                    self.back_off(failures, err, deadline).await?;
                    continue;
                }
            };
            crate::metrics::record_cloud_call(call, status.as_str(), started.elapsed());
            self.pacer.observe(&headers);
            tracing::debug!(call, %method, path = url.path(), status = status.as_u16(), "cloud API call");
            if status.is_success() {
                return Ok(Answer { body: bytes });
            }
            let message = error_message(status, &bytes);
            if status == StatusCode::TOO_MANY_REQUESTS {
                throttled += 1;
                let wait = pacing::retry_after(&headers)
                    .or_else(|| self.pacer.until_reset())
                    .unwrap_or_else(|| backoff_delay(throttled));
                if throttled >= MAX_THROTTLED_ATTEMPTS || Instant::now() + wait > deadline.instant()
                {
                    return Err(CloudError::RateLimited {
                        retry_after: Some(wait),
                    });
                }
                tracing::debug!(
                    call,
                    wait_ms = wait.as_millis() as u64,
                    "cloud API rate limited; waiting"
                );
                self.pacer.hold_for(wait);
                continue;
            }
            if status.is_server_error() {
                failures += 1;
                let err = CloudError::Api {
                    status: status.as_u16(),
                    message,
                };
                self.back_off(failures, err, deadline).await?;
                continue;
            }
            return Err(CloudError::from_api(status.as_u16(), &message));
        }
    }

    /// Sleep before retry number `failures`, or give up with `err` when out of attempts or
    /// the sleep would pass the deadline.
    async fn back_off(
        &self,
        failures: u32,
        err: CloudError,
        deadline: Deadline,
    ) -> Result<(), CloudError> {
        if failures >= MAX_ATTEMPTS || matches!(err, CloudError::Timeout { .. }) {
            return Err(err);
        }
        let delay = backoff_delay(failures);
        if Instant::now() + delay >= deadline.instant() {
            return Err(err);
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        call: &'static str,
        segments: &[&str],
        deadline: Deadline,
    ) -> Result<T, CloudError> {
        self.send(call, Method::GET, self.url(segments, &[]), None, deadline)
            .await?
            .parse()
    }

    async fn post<T: DeserializeOwned>(
        &self,
        call: &'static str,
        segments: &[&str],
        body: serde_json::Value,
        deadline: Deadline,
    ) -> Result<T, CloudError> {
        self.send(
            call,
            Method::POST,
            self.url(segments, &[]),
            Some(&body),
            deadline,
        )
        .await?
        .parse()
    }

    async fn delete(
        &self,
        call: &'static str,
        segments: &[&str],
        deadline: Deadline,
    ) -> Result<(), CloudError> {
        self.send(
            call,
            Method::DELETE,
            self.url(segments, &[]),
            None,
            deadline,
        )
        .await
        .map(|_| ())
    }

    /// Every page of a list whose items are under `key`.
    async fn list_all<T: DeserializeOwned>(
        &self,
        call: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
        key: &str,
        deadline: Deadline,
    ) -> Result<Vec<T>, CloudError> {
        let mut all: Vec<T> = Vec::new();
        for page in 1..=MAX_PAGES {
            let page_text = page.to_string();
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("page", &page_text));
            q.push(("per_page", PER_PAGE));
            let answer = self
                .send(call, Method::GET, self.url(segments, &q), None, deadline)
                .await?;
            let parsed: ListPage<T> =
                ListPage::parse(&answer.body, key).map_err(|e| CloudError::Transport {
                    message: format!("unreadable {key} list from the cloud API: {e}"),
                })?;
            let got = parsed.items.len();
            all.extend(parsed.items);
            let more = parsed.has_next || parsed.total.is_some_and(|t| (all.len() as u64) < t);
            if !more || got == 0 {
                break;
            }
        }
        Ok(all)
    }

    async fn volume_action(
        &self,
        volume_id: &str,
        body: serde_json::Value,
        deadline: Deadline,
    ) -> Result<Action, CloudError> {
        let answer: ActionBody = self
            .post(
                "volume_action",
                &["v2", "volumes", volume_id, "actions"],
                body,
                deadline,
            )
            .await?;
        Ok(answer.action.into_action(volume_id))
    }

    /// An attach or detach (`kind`) of the volume to or from the droplet. The answer does not
    /// always name the droplet, so the action is given it here.
    async fn attachment_action(
        &self,
        kind: &str,
        volume: &Volume,
        droplet_id: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError> {
        let body = json!({ "type": kind, "droplet_id": droplet_id, "region": volume.region });
        let mut action = self.volume_action(&volume.id, body, deadline).await?;
        action.droplet_id = Some(droplet_id);
        Ok(action)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Send a request and read its whole answer. Failing at either step is a transport error.
async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, bytes::Bytes), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    Ok((status, headers, response.bytes().await?))
}

/// Exponential backoff with jitter: the n-th retry waits between half and all of
/// `BASE_BACKOFF * 2^(n-1)`, capped at `MAX_BACKOFF`.
fn backoff_delay(attempt: u32) -> Duration {
    let exp = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter: f64 = rand::rng().random_range(0.5..=1.0);
    exp.mul_f64(jitter)
}

fn tags_json(tags: &[String]) -> serde_json::Value {
    json!(tags)
}

#[async_trait::async_trait]
impl CloudApi for HttpCloud {
    async fn ping(&self, deadline: Deadline) -> Result<(), CloudError> {
        self.account(deadline).await.map(|_| ())
    }

    async fn account(&self, deadline: Deadline) -> Result<Account, CloudError> {
        let body: AccountBody = self.get("account", &["v2", "account"], deadline).await?;
        Ok(Account {
            volume_limit: body.account.volume_limit,
            quota_gib: body.account.volume_quota_gigabytes,
            used_gib: body.account.volume_used_gigabytes,
        })
    }

    async fn regions(&self, deadline: Deadline) -> Result<Vec<String>, CloudError> {
        if let Some((at, regions)) = lock(&self.regions).as_ref() {
            if at.elapsed() < REGIONS_TTL {
                return Ok(regions.clone());
            }
        }
        let regions: Vec<RegionWire> = self
            .list_all("list_regions", &["v2", "regions"], &[], "regions", deadline)
            .await?;
        let slugs: Vec<String> = regions
            .into_iter()
            .filter(|r| r.available && r.features.iter().any(|f| f == "storage"))
            .map(|r| r.slug)
            .collect();
        *lock(&self.regions) = Some((Instant::now(), slugs.clone()));
        Ok(slugs)
    }

    async fn create_volume(
        &self,
        req: NewVolume,
        deadline: Deadline,
    ) -> Result<Volume, CloudError> {
        let mut body = json!({
            "size_gigabytes": req.size_gib,
            "name": req.name,
            "description": req.description,
            "region": req.region,
        });
        if let Some(snapshot) = &req.snapshot_id {
            body["snapshot_id"] = json!(snapshot);
        }
        if !req.tags.is_empty() {
            body["tags"] = tags_json(&req.tags);
        }
        let answer: VolumeBody = self
            .post("create_volume", &["v2", "volumes"], body, deadline)
            .await?;
        Ok(self.remember(answer.volume.into()))
    }

    async fn clone_volume(
        &self,
        source_volume_id: &str,
        req: NewVolume,
        deadline: Deadline,
    ) -> Result<Volume, CloudError> {
        // DigitalOcean has no clone: go through a snapshot named after the new volume, so
        // a retry after a timeout finds the one it already made.
        let temp_name = names::clone_snapshot_name(&req.name);
        let snapshot = match self
            .create_snapshot(source_volume_id, &temp_name, Vec::new(), deadline)
            .await
        {
            Ok(s) => s,
            Err(CloudError::NameInUse { message }) => self
                .list_snapshots(Some(source_volume_id), deadline)
                .await?
                .into_iter()
                .find(|s| s.name == temp_name)
                .ok_or(CloudError::NameInUse { message })?,
            Err(e) => return Err(e),
        };
        let created = self
            .create_volume(
                NewVolume {
                    snapshot_id: Some(snapshot.id.clone()),
                    ..req
                },
                deadline,
            )
            .await;
        match self.delete_snapshot(&snapshot.id, deadline).await {
            Ok(()) | Err(CloudError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(
                snapshot = %snapshot.id,
                error = %e,
                "could not delete the temporary snapshot of a clone; delete it by hand"
            ),
        }
        created
    }

    async fn get_volume(&self, id: &str, deadline: Deadline) -> Result<Volume, CloudError> {
        let answer: Result<VolumeBody, CloudError> = self
            .get("get_volume", &["v2", "volumes", id], deadline)
            .await;
        match answer {
            Ok(answer) => Ok(self.remember(answer.volume.into())),
            Err(e) => {
                if e.is_not_found() {
                    self.forget(id);
                }
                Err(e)
            }
        }
    }

    async fn volumes_named(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<Vec<Volume>, CloudError> {
        let all: Vec<VolumeWire> = self
            .list_all(
                "list_volumes",
                &["v2", "volumes"],
                &[("name", name)],
                "volumes",
                deadline,
            )
            .await?;
        Ok(all.into_iter().map(Volume::from).collect())
    }

    async fn list_volumes(&self, deadline: Deadline) -> Result<Vec<Volume>, CloudError> {
        let all: Vec<VolumeWire> = self
            .list_all("list_volumes", &["v2", "volumes"], &[], "volumes", deadline)
            .await?;
        Ok(all.into_iter().map(Volume::from).collect())
    }

    async fn delete_volume(&self, id: &str, deadline: Deadline) -> Result<(), CloudError> {
        let deleted = self
            .delete("delete_volume", &["v2", "volumes", id], deadline)
            .await;
        if matches!(deleted, Ok(()) | Err(CloudError::NotFound { .. })) {
            self.forget(id);
        }
        deleted
    }

    async fn set_volume_tags(
        &self,
        id: &str,
        tags: Vec<String>,
        deadline: Deadline,
    ) -> Result<Volume, CloudError> {
        let body = json!({ "tags": tags });
        let answer: VolumeBody = self
            .send(
                "update_volume",
                Method::PATCH,
                self.url(&["v2", "volumes", id], &[]),
                Some(&body),
                deadline,
            )
            .await?
            .parse()?;
        Ok(answer.volume.into())
    }

    async fn attach(
        &self,
        volume: &Volume,
        droplet_id: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError> {
        self.attachment_action("attach", volume, droplet_id, deadline)
            .await
    }

    async fn detach(
        &self,
        volume: &Volume,
        droplet_id: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError> {
        self.attachment_action("detach", volume, droplet_id, deadline)
            .await
    }

    async fn resize(
        &self,
        volume: &Volume,
        size_gib: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError> {
        let body = json!({ "type": "resize", "size_gigabytes": size_gib, "region": volume.region });
        self.volume_action(&volume.id, body, deadline).await
    }

    async fn get_action(
        &self,
        volume_id: &str,
        action_id: u64,
        deadline: Deadline,
    ) -> Result<Action, CloudError> {
        let id = action_id.to_string();
        let answer: ActionBody = self
            .get(
                "get_action",
                &["v2", "volumes", volume_id, "actions", &id],
                deadline,
            )
            .await?;
        Ok(answer.action.into_action(volume_id))
    }

    async fn volume_actions(
        &self,
        volume_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<Action>, CloudError> {
        let all: Vec<ActionWire> = self
            .list_all(
                "list_volume_actions",
                &["v2", "volumes", volume_id, "actions"],
                &[],
                "actions",
                deadline,
            )
            .await?;
        Ok(all.into_iter().map(|a| a.into_action(volume_id)).collect())
    }

    /// A droplet, as fetched up to [`DROPLET_TTL`] ago: its `volume_ids` may be that old.
    async fn get_droplet(&self, id: u64, deadline: Deadline) -> Result<Droplet, CloudError> {
        if let Some((at, droplet)) = lock(&self.droplets).get(&id) {
            if at.elapsed() < DROPLET_TTL {
                return Ok(droplet.clone());
            }
        }
        let path_id = id.to_string();
        let answer: DropletBody = self
            .get("get_droplet", &["v2", "droplets", &path_id], deadline)
            .await?;
        let droplet: Droplet = answer.droplet.into();
        let mut cached = lock(&self.droplets);
        if cached.len() >= CACHE_ENTRIES {
            cached.clear();
        }
        cached.insert(id, (Instant::now(), droplet.clone()));
        Ok(droplet)
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        tags: Vec<String>,
        deadline: Deadline,
    ) -> Result<Snapshot, CloudError> {
        let mut body = json!({ "name": name });
        if !tags.is_empty() {
            body["tags"] = tags_json(&tags);
        }
        let answer: SnapshotBody = self
            .post(
                "create_snapshot",
                &["v2", "volumes", volume_id, "snapshots"],
                body,
                deadline,
            )
            .await?;
        Ok(answer.snapshot.into())
    }

    async fn get_snapshot(&self, id: &str, deadline: Deadline) -> Result<Snapshot, CloudError> {
        let answer: SnapshotBody = self
            .get("get_snapshot", &["v2", "snapshots", id], deadline)
            .await?;
        Ok(answer.snapshot.into())
    }

    async fn list_snapshots(
        &self,
        volume_id: Option<&str>,
        deadline: Deadline,
    ) -> Result<Vec<Snapshot>, CloudError> {
        let all: Vec<SnapshotWire> = match volume_id {
            Some(v) => {
                self.list_all(
                    "list_snapshots",
                    &["v2", "volumes", v, "snapshots"],
                    &[],
                    "snapshots",
                    deadline,
                )
                .await?
            }
            None => {
                self.list_all(
                    "list_snapshots",
                    &["v2", "snapshots"],
                    &[("resource_type", "volume")],
                    "snapshots",
                    deadline,
                )
                .await?
            }
        };
        Ok(all.into_iter().map(Snapshot::from).collect())
    }

    async fn delete_snapshot(&self, id: &str, deadline: Deadline) -> Result<(), CloudError> {
        self.delete("delete_snapshot", &["v2", "snapshots", id], deadline)
            .await
    }

    fn waits(&self) -> &Waits {
        &self.waits
    }

    fn known_volume(&self, id: &str) -> Option<Volume> {
        let (name, region) = lock(&self.volumes).get(id).cloned()?;
        Some(Volume {
            id: id.to_string(),
            name,
            description: String::new(),
            size_gib: 0,
            region,
            droplet_ids: Vec::new(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            tags: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
