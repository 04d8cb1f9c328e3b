//! What a spec runs against: the clients, the configuration, the driver's advertised
//! capabilities, the run's shared state, and a tracker of what the spec created.
//!
//! A runner builds one [`RunState`] per run and asks it for a [`Ctx`] per spec
//! ([`RunState::ctx`]). Every spec gets its own names ([`Ctx::unique_name`]), its own
//! paths ([`Ctx::target_path`], [`Ctx::staging_path`]) and its own [`Tracker`]; the
//! runner calls [`Ctx::cleanup`] after the spec, whatever its outcome. The fixtures
//! that create things (see `fixtures.rs`) record them in the tracker, so no spec
//! cleans up by hand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::group_controller_client::GroupControllerClient;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::{CreateSnapshotRequest, NodeGetInfoResponse};
use tonic::transport::Channel;

use crate::capabilities::Capabilities;
use crate::check::Failure;
use crate::config::SuiteConfig;
use crate::paths::{PathKind, PathRole};
use crate::secrets::Secret;
use crate::tracker::{Endpoints, Ledger, Resource, Tracker};

/// gRPC clients for the endpoints under test.
#[derive(Clone)]
pub struct Clients {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
    /// Served by the controller endpoint.
    pub group_controller: GroupControllerClient<Channel>,
    /// The controller endpoint's Identity service, when the controller is served at an
    /// endpoint of its own (`--csi.controllerendpoint`): the Identity specs ask it too.
    pub controller_identity: Option<IdentityClient<Channel>>,
    /// Node plugins of further nodes of the same driver, each on a node of its own.
    /// Specs running at once are spread over `node` and these (see [`RunState::ctx`]),
    /// as a cluster spreads pods, so that node-side work and attachments overlap.
    pub extra_nodes: Vec<NodeClient<Channel>>,
}

impl Clients {
    /// Clients for a node endpoint and (possibly the same) controller endpoint.
    pub fn new(node_channel: Channel, controller_channel: Channel) -> Self {
        Clients {
            identity: IdentityClient::new(node_channel.clone()),
            controller: ControllerClient::new(controller_channel.clone()),
            node: NodeClient::new(node_channel),
            group_controller: GroupControllerClient::new(controller_channel),
            controller_identity: None,
            extra_nodes: Vec::new(),
        }
    }

    /// The same clients, with the Identity service of a separate controller endpoint.
    pub fn with_separate_controller(mut self, controller_channel: Channel) -> Self {
        self.controller_identity = Some(IdentityClient::new(controller_channel));
        self
    }

    /// The node endpoint's client, then the extra nodes'.
    pub fn all_nodes(&self) -> impl Iterator<Item = &NodeClient<Channel>> {
        std::iter::once(&self.node).chain(&self.extra_nodes)
    }

    /// The same clients with node plugins of further nodes.
    pub fn with_extra_nodes(mut self, channels: impl IntoIterator<Item = Channel>) -> Self {
        self.extra_nodes = channels.into_iter().map(NodeClient::new).collect();
        self
    }
}

pub(crate) struct RunInner {
    pub(crate) clients: Clients,
    pub(crate) config: SuiteConfig,
    pub(crate) caps: Capabilities,
    /// This run's name prefix (the configured prefix plus a random part).
    pub(crate) prefix: String,
    spec_seq: AtomicU64,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    /// The node endpoint first, then the extra ones.
    nodes: Vec<Arc<NodeSlot>>,
    /// Held while a spec picks its node, so two specs starting at once see each other.
    picking: Mutex<()>,
    /// Which RPCs stopped answering, and whether the endpoint went ([`crate::breaker`]).
    pub(crate) breaker: Arc<crate::breaker::Breaker>,
}

/// One node plugin of the run, its cached NodeGetInfo, and how many specs use it now.
pub(crate) struct NodeSlot {
    pub(crate) client: NodeClient<Channel>,
    pub(crate) info: tokio::sync::OnceCell<NodeGetInfoResponse>,
    in_use: AtomicUsize,
}

/// A spec's hold on one node; the node counts as free again when the spec's context goes.
pub(crate) struct NodeLease {
    pub(crate) slot: Arc<NodeSlot>,
}

impl NodeLease {
    /// The node that the fewest running specs use, the first such in order, so that one
    /// spec at a time always gets the node endpoint itself.
    fn take(run: &RunInner) -> NodeLease {
        let _picking = run.picking.lock().unwrap_or_else(|e| e.into_inner());
        let slot = run
            .nodes
            .iter()
            .min_by_key(|n| n.in_use.load(Ordering::Acquire))
            .expect("a run has at least its node endpoint")
            .clone();
        slot.in_use.fetch_add(1, Ordering::AcqRel);
        NodeLease { slot }
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.slot.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// State shared by every spec of one run: clients, configuration, capabilities, the
/// ledger of what the run created, and cached answers (NodeGetInfo). Cheap to clone.
#[derive(Clone)]
pub struct RunState {
    inner: Arc<RunInner>,
}

impl RunState {
    /// A run against `clients`. Names get the configured prefix plus a random part, so
    /// two runs against one driver never collide.
    pub fn new(clients: Clients, config: SuiteConfig, caps: Capabilities) -> RunState {
        let random = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("{}-{}", config.name_prefix, &random[..8]);
        Self::with_prefix(clients, config, caps, prefix)
    }

    fn with_prefix(
        clients: Clients,
        config: SuiteConfig,
        caps: Capabilities,
        prefix: String,
    ) -> RunState {
        let nodes = clients
            .all_nodes()
            .map(|client| {
                Arc::new(NodeSlot {
                    client: client.clone(),
                    info: tokio::sync::OnceCell::new(),
                    in_use: AtomicUsize::new(0),
                })
            })
            .collect();
        let breaker = crate::breaker::Breaker::new(config.rpc_timeout, config.keep_waiting);
        RunState {
            inner: Arc::new(RunInner {
                breaker,
                clients,
                config,
                caps,
                prefix,
                spec_seq: AtomicU64::new(0),
                ledger: Arc::new(Mutex::new(Ledger::default())),
                nodes,
                picking: Mutex::new(()),
            }),
        }
    }

    /// The run's breaker: put a spec and its cleanup in it with
    /// [`crate::breaker::scope`], and read what it cut off at the end.
    pub fn breaker(&self) -> Arc<crate::breaker::Breaker> {
        self.inner.breaker.clone()
    }

    /// A fresh context for the spec `spec_name`, with its own names, paths and tracker.
    /// With extra node endpoints, the spec gets the node that the fewest running specs
    /// use, and keeps it until its context (every clone) is dropped.
    pub fn ctx(&self, spec_name: &str) -> Ctx {
        let seq = self.inner.spec_seq.fetch_add(1, Ordering::Relaxed);
        Ctx {
            run: self.inner.clone(),
            spec: Arc::new(SpecInner {
                name: spec_name.to_string(),
                seq,
                node: NodeLease::take(&self.inner),
                counter: AtomicU64::new(0),
                tracker: Tracker::new(self.inner.ledger.clone(), spec_name),
                paths: Mutex::new(SpecPaths::default()),
                snapshot_requests: Mutex::new(HashMap::new()),
                warnings: Mutex::new(Vec::new()),
            }),
        }
    }

    /// This run's name prefix: every volume and snapshot name of the run starts with it.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// What the run created so far.
    pub fn ledger(&self) -> Ledger {
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clients(&self) -> &Clients {
        &self.inner.clients
    }

    pub fn config(&self) -> &SuiteConfig {
        &self.inner.config
    }

    pub fn caps(&self) -> &Capabilities {
        &self.inner.caps
    }
}

#[derive(Default)]
pub(crate) struct SpecPaths {
    pub(crate) target: Option<String>,
    pub(crate) staging: Option<String>,
}

pub(crate) struct SpecInner {
    pub(crate) name: String,
    pub(crate) seq: u64,
    /// The node this spec runs its node-side calls on.
    pub(crate) node: NodeLease,
    counter: AtomicU64,
    pub(crate) tracker: Tracker,
    pub(crate) paths: Mutex<SpecPaths>,
    /// How each tracked snapshot was asked for, so a wait can re-ask idempotently.
    pub(crate) snapshot_requests: Mutex<HashMap<String, CreateSnapshotRequest>>,
    /// SHOULD-level deviations this spec found ([`Ctx::warn`]).
    pub(crate) warnings: Mutex<Vec<Failure>>,
}

/// One spec's view of the run. Cheap to clone; clones share the spec's tracker.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) run: Arc<RunInner>,
    pub(crate) spec: Arc<SpecInner>,
}

impl Ctx {
    /// A context for the spec `spec_name`, in a run of its own. Runners that run many
    /// specs use [`RunState::ctx`] instead, so the specs share the run's ledger.
    pub fn new(clients: Clients, config: SuiteConfig, caps: Capabilities, spec_name: &str) -> Ctx {
        let prefix = config.name_prefix.clone();
        RunState::with_prefix(clients, config, caps, prefix).ctx(spec_name)
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        self.run.clients.identity.clone()
    }

    /// Every Identity service of the driver under test, named: the node endpoint's, and
    /// the controller endpoint's when it is separate.
    pub fn identities(&self) -> Vec<(&'static str, IdentityClient<Channel>)> {
        let mut all = vec![("the node endpoint", self.identity())];
        if let Some(c) = &self.run.clients.controller_identity {
            all.push(("the controller endpoint", c.clone()));
        }
        all
    }

    /// What the whole run (every spec) has created so far: specs that count volumes
    /// use it to tell another spec's volume from a leaked one.
    pub fn run_ledger(&self) -> Ledger {
        self.run
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        self.run.clients.controller.clone()
    }

    /// The node plugin of this spec's node.
    pub fn node(&self) -> NodeClient<Channel> {
        self.spec.node.slot.client.clone()
    }

    pub fn group_controller(&self) -> GroupControllerClient<Channel> {
        self.run.clients.group_controller.clone()
    }

    pub fn config(&self) -> &SuiteConfig {
        &self.run.config
    }

    pub fn caps(&self) -> &Capabilities {
        &self.run.caps
    }

    /// Record a deviation from a SHOULD or MAY of the spec (or a judgement the spec
    /// leaves to the plugin): the spec goes on, and the runner reports a warning, which
    /// fails the spec only under `--csi.strict`. In the compat profile warnings are
    /// dropped, as Go does not check these.
    pub fn warn(&self, finding: Failure) {
        if self.compat() {
            return;
        }
        self.spec
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(finding);
    }

    /// Turn a SHOULD-level check's failure into a warning; `Ok` either way.
    pub fn should(&self, check: Result<(), Failure>) {
        if let Err(f) = check {
            self.warn(f);
        }
    }

    /// The warnings this spec has recorded so far.
    pub fn warnings(&self) -> Vec<Failure> {
        self.spec
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the compat profile runs: the core specs then check what the Go
    /// csi-sanity checks, no more, so their verdicts equal Go's.
    pub fn compat(&self) -> bool {
        self.run.config.compat()
    }

    /// The spec this context belongs to.
    pub fn spec_name(&self) -> &str {
        &self.spec.name
    }

    /// What this spec created and has not undone yet.
    pub fn tracker(&self) -> &Tracker {
        &self.spec.tracker
    }

    /// A name unique to this run, spec and call, for volumes and snapshots:
    /// `<run prefix>-<spec number>-<what>-<n>`, lowercase letters, digits and dashes.
    pub fn unique_name(&self, what: &str) -> String {
        let n = self.spec.counter.fetch_add(1, Ordering::Relaxed);
        let what: String = what
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        format!("{}-{}-{what}-{n}", self.run.prefix, self.spec.seq)
    }

    /// A name of exactly `len` bytes that is still unique to this run and spec.
    pub fn unique_name_of_len(&self, len: usize) -> String {
        let mut name = self.unique_name("x");
        while name.len() < len {
            name.push('x');
        }
        name.truncate(len);
        name
    }
}

/// Paths, secrets and cleanup: the spec's view of the leaf modules.
impl Ctx {
    /// This spec's target path for NodePublishVolume: `<new directory>/target`, where
    /// the directory is created on first use and removed after the spec. The driver
    /// creates (and on unpublish removes) the target itself.
    pub async fn target_path(&self) -> Result<String, Failure> {
        if let Some(p) = self.spec_paths().target.clone() {
            return Ok(p);
        }
        let p = self.new_target_path().await?;
        self.spec_paths().target = Some(p.clone());
        Ok(p)
    }

    /// This spec's staging path for NodeStageVolume: a directory created on first use
    /// and removed after the spec.
    pub async fn staging_path(&self) -> Result<String, Failure> {
        if let Some(p) = self.spec_paths().staging.clone() {
            return Ok(p);
        }
        let p = self.new_staging_path().await?;
        self.spec_paths().staging = Some(p.clone());
        Ok(p)
    }

    /// Another target path, distinct from [`Ctx::target_path`].
    pub async fn new_target_path(&self) -> Result<String, Failure> {
        let dir = self.create_dir(PathRole::Target).await?;
        Ok(format!("{}/target", dir.trim_end_matches('/')))
    }

    /// Another staging path, distinct from [`Ctx::staging_path`].
    pub async fn new_staging_path(&self) -> Result<String, Failure> {
        self.create_dir(PathRole::Staging).await
    }

    fn spec_paths(&self) -> std::sync::MutexGuard<'_, SpecPaths> {
        self.spec.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn create_dir(&self, role: PathRole) -> Result<String, Failure> {
        let name = self.unique_name(role.tag());
        let created = crate::paths::create_dir(self.config(), role, &name).await?;
        self.tracker().track(Resource::Path {
            path: created.clone(),
            role,
        });
        Ok(created)
    }

    /// What is at `path`, by the check-path command or `stat`.
    pub async fn check_path(&self, path: &str) -> Result<PathKind, Failure> {
        crate::paths::check_path(self.config(), path).await
    }

    /// The secrets configured for `rpc` (empty when none are).
    pub fn secrets(&self, rpc: Secret) -> HashMap<String, String> {
        rpc.in_file(&self.config().secrets)
    }

    /// Undo everything this spec's tracker holds, in order. Runners call this after
    /// every spec; a spec may call it early. Every step accepts OK and NOT_FOUND.
    pub async fn cleanup(&self) -> Result<(), Failure> {
        let via = Endpoints {
            controller: self.controller(),
            node: self.node(),
            group_controller: self.group_controller(),
            config: self.config(),
        };
        self.tracker().undo_all(&via).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy_channel() -> Channel {
        tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy()
    }

    fn run_with_nodes(extra: usize) -> RunState {
        let clients = Clients::new(lazy_channel(), lazy_channel())
            .with_extra_nodes((0..extra).map(|_| lazy_channel()));
        RunState::new(clients, SuiteConfig::default(), Capabilities::default())
    }

    fn node_of(run: &RunState, ctx: &Ctx) -> usize {
        run.inner
            .nodes
            .iter()
            .position(|n| Arc::ptr_eq(n, &ctx.spec.node.slot))
            .expect("the lease is one of the run's nodes")
    }

    #[tokio::test]
    async fn specs_at_once_get_different_nodes_and_free_them_when_done() {
        let run = run_with_nodes(2);
        let a = run.ctx("a");
        let b = run.ctx("b");
        let c = run.ctx("c");
        assert_eq!(
            [node_of(&run, &a), node_of(&run, &b), node_of(&run, &c)],
            [0, 1, 2]
        );
        // A fourth spec shares the first node.
        let d = run.ctx("d");
        assert_eq!(node_of(&run, &d), 0);
        let in_use = |i: usize| run.inner.nodes[i].in_use.load(Ordering::Acquire);
        assert_eq!([in_use(0), in_use(1), in_use(2)], [2, 1, 1]);
        // A clone of a context keeps its lease; the last one frees the node.
        let b_clone = b.clone();
        drop(b);
        assert_eq!(in_use(1), 1, "the clone still holds node 1");
        drop(b_clone);
        assert_eq!(in_use(1), 0);
        let f = run.ctx("f");
        assert_eq!(node_of(&run, &f), 1, "the free node, not a busy one");
        drop((a, c, d, f));
        assert!(run
            .inner
            .nodes
            .iter()
            .all(|n| n.in_use.load(Ordering::Acquire) == 0));
    }

    #[tokio::test]
    async fn one_spec_at_a_time_always_runs_on_the_endpoints_own_node() {
        let run = run_with_nodes(3);
        for name in ["a", "b", "c"] {
            let ctx = run.ctx(name);
            assert_eq!(node_of(&run, &ctx), 0);
        }
        let single = run_with_nodes(0);
        let x = single.ctx("x");
        let y = single.ctx("y");
        assert_eq!((node_of(&single, &x), node_of(&single, &y)), (0, 0));
    }
}
