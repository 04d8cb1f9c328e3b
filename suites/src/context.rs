//! What a spec runs against: the clients, the configuration, the driver's advertised
//! capabilities, the run's shared state, and a tracker of what the spec created.
//!
//! A runner builds one [`RunState`] per run and asks it for a [`Ctx`] per spec
//! ([`RunState::ctx`]). Every spec gets its own names ([`Ctx::unique_name`]), its own
//! paths ([`Ctx::target_path`], [`Ctx::staging_path`]) and its own [`Tracker`]; the
//! runner calls [`Ctx::cleanup`] after the spec, whatever its outcome. The fixtures
//! that create things (see `fixtures.rs`) record them in the tracker, so no spec
//! cleans up by hand.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::group_controller_client::GroupControllerClient;
use csi_proto::v1::group_controller_service_capability::rpc::Type as GroupControllerRpc;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::plugin_capability::service::Type as PluginService;
use csi_proto::v1::plugin_capability::volume_expansion::Type as VolumeExpansion;
use csi_proto::v1::{CreateSnapshotRequest, NodeGetInfoResponse, TopologyRequirement};
use tonic::transport::Channel;

use crate::check::Failure;
use crate::spec::Need;
use crate::tracker::Tracker;

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

/// What the driver advertised, read once before the run, plus what the environment
/// allows.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub plugin: Vec<PluginService>,
    pub controller: Vec<ControllerRpc>,
    pub node: Vec<NodeRpc>,
    /// Whether the node service answered NodeGetCapabilities.
    pub node_service: bool,
    /// NodeGetCapabilities failed with something other than UNIMPLEMENTED: the specs
    /// that need the node's capabilities fail with this, as in Go, rather than skip.
    pub node_caps_error: Option<String>,
    /// GroupControllerGetCapabilities failed although GROUP_CONTROLLER_SERVICE is
    /// advertised: the specs that need its capabilities fail with this.
    pub group_caps_error: Option<String>,
    /// Whether the harness runs as root.
    pub root: bool,
    /// What the group controller advertised (empty without GROUP_CONTROLLER_SERVICE).
    pub group_controller: Vec<GroupControllerRpc>,
    /// The plugin's VolumeExpansion capabilities.
    pub expansion: Vec<VolumeExpansion>,
    /// Whether the node can really stage and publish (see [`Need::Mounts`]).
    pub mounts: bool,
    /// `--csi.secondnodeid` is set.
    pub second_node: bool,
    /// `--csi.testnodevolumeattachlimit` is set.
    pub attach_limit_test: bool,
    /// Mutable parameters are configured.
    pub mutable_parameters: bool,
    /// `--csi.idempotentcount` > 0.
    pub idempotent_repeats: bool,
}

impl Capabilities {
    /// Whether `need` holds.
    pub fn meets(&self, need: &Need) -> bool {
        match need {
            Need::PluginService(s) => self.plugin.contains(s),
            Need::ControllerCap(c) => self.controller.contains(c),
            Need::NodeCap(c) => self.node.contains(c),
            Need::NodeService => self.node_service,
            Need::Root => self.root,
            Need::GroupControllerCap(c) => self.group_controller.contains(c),
            Need::Mounts => self.mounts,
            Need::SecondNode => self.second_node,
            Need::AttachLimitTest => self.attach_limit_test,
            Need::MutableParameters => self.mutable_parameters,
            Need::IdempotentRepeats => self.idempotent_repeats,
        }
    }

    /// The first unmet need of a list, if any.
    pub fn first_unmet<'a>(&self, needs: &'a [Need]) -> Option<&'a Need> {
        needs.iter().find(|n| !self.meets(n))
    }

    /// Whether the controller advertises `rpc`.
    pub fn controller_has(&self, rpc: ControllerRpc) -> bool {
        self.controller.contains(&rpc)
    }

    /// Whether the node advertises `rpc`.
    pub fn node_has(&self, rpc: NodeRpc) -> bool {
        self.node.contains(&rpc)
    }

    /// Fill in the configuration-derived flags from `config`.
    pub fn with_config(mut self, config: &SuiteConfig) -> Self {
        self.second_node = config.second_node_id.is_some();
        self.attach_limit_test = config.test_node_volume_attach_limit;
        self.mutable_parameters = !config.mutable_parameters.is_empty();
        self.idempotent_repeats = config.idempotent_count > 0;
        self
    }
}

/// Settings that shape the specs (the `--csi.*` flags land here).
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Root under which each spec gets its own target directories (`--csi.mountdir`).
    pub mount_dir: PathBuf,
    /// Root under which each spec gets its own staging directories (`--csi.stagingdir`).
    pub staging_dir: PathBuf,
    /// Per-RPC secrets, keyed like csi-sanity's secrets file (e.g. `CreateVolumeSecret`).
    pub secrets: HashMap<String, HashMap<String, String>>,
    /// `mount` or `block`.
    pub access_type: String,
    /// Size of test volumes, in bytes.
    pub volume_size: i64,
    /// Size to expand test volumes to, in bytes (0: the volume size plus 1 GiB, as
    /// csi-sanity does).
    pub expand_size: i64,
    pub volume_parameters: HashMap<String, String>,
    pub mutable_parameters: HashMap<String, String>,
    pub snapshot_parameters: HashMap<String, String>,
    /// Run the node-volume-attach-limit spec.
    pub test_node_volume_attach_limit: bool,
    /// How many times the idempotency specs repeat each call.
    pub idempotent_count: u32,
    /// NodeUnpublishVolume of an unknown volume: accept OK (`true`) or require NOT_FOUND.
    pub node_unpublish_not_found_ok: bool,
    /// A second node id, for specs that publish to another node.
    pub second_node_id: Option<String>,
    /// Deadline for one RPC.
    pub rpc_timeout: Duration,
    /// Prefix that makes this run's names unique.
    pub name_prefix: String,
    /// Command that creates a target directory (`--csi.createmountpathcmd`): called with
    /// the suggested path, prints the path to use.
    pub create_target_path_cmd: Option<String>,
    /// Command that creates a staging directory (`--csi.createstagingpathcmd`).
    pub create_staging_path_cmd: Option<String>,
    /// Timeout of the create commands.
    pub create_path_cmd_timeout: Duration,
    /// Command that removes a target directory (`--csi.removemountpathcmd`).
    pub remove_target_path_cmd: Option<String>,
    /// Command that removes a staging directory (`--csi.removestagingpathcmd`).
    pub remove_staging_path_cmd: Option<String>,
    /// Timeout of the remove commands.
    pub remove_path_cmd_timeout: Duration,
    /// Command that checks a path (`--csi.checkpathcmd`): prints `file`, `directory`,
    /// `not_found` or `other`.
    pub check_path_cmd: Option<String>,
    /// Timeout of the check command.
    pub check_path_cmd_timeout: Duration,
    /// Topology requirements for test volumes (`--csi.testtopologyrequirements`).
    pub topology_requirements: Option<TopologyRequirement>,
    /// A missing capability fails the specs that need it instead of skipping them.
    pub strict: bool,
    /// How long to wait for a snapshot to become ready to use.
    pub ready_timeout: Duration,
    /// The short client deadline the retry specs cut calls off with, as a CO whose
    /// deadline is shorter than the cloud's slowest action would (`--csi.shortdeadline`).
    pub short_deadline: Duration,
    /// How long the retry specs keep retrying a call (on ABORTED, DEADLINE_EXCEEDED and
    /// the like) before they call it stuck (`--csi.retrybudget`).
    pub retry_budget: Duration,
    /// Mount flags the full profile sends in every mount capability, as a StorageClass's
    /// `mountOptions` reach a driver (`--csi.mountflags`; default `noatime`, which every
    /// Linux filesystem accepts). Where the harness can see a published target, each
    /// flag must show in its mount options.
    pub mount_flags: Vec<String>,
    /// Keep calling an RPC that has run out its deadline again and again, instead of
    /// failing the later specs that need it at once (`--csi.keep-waiting`).
    pub keep_waiting: bool,
    /// Which profile runs: in [`Profile::Compat`] the core specs check what the Go
    /// csi-sanity checks, no more (`--csi.profile`).
    pub profile: crate::Profile,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig {
            mount_dir: std::env::temp_dir().join("csi-mount"),
            staging_dir: std::env::temp_dir().join("csi-staging"),
            secrets: HashMap::new(),
            access_type: "mount".into(),
            volume_size: 10 << 30,
            expand_size: 0,
            volume_parameters: HashMap::new(),
            mutable_parameters: HashMap::new(),
            snapshot_parameters: HashMap::new(),
            test_node_volume_attach_limit: false,
            idempotent_count: 10,
            node_unpublish_not_found_ok: false,
            second_node_id: None,
            rpc_timeout: Duration::from_secs(60),
            name_prefix: "sanity".into(),
            create_target_path_cmd: None,
            create_staging_path_cmd: None,
            create_path_cmd_timeout: Duration::from_secs(10),
            remove_target_path_cmd: None,
            remove_staging_path_cmd: None,
            remove_path_cmd_timeout: Duration::from_secs(10),
            check_path_cmd: None,
            check_path_cmd_timeout: Duration::from_secs(10),
            topology_requirements: None,
            strict: false,
            ready_timeout: Duration::from_secs(300),
            short_deadline: Duration::from_millis(200),
            retry_budget: Duration::from_secs(120),
            profile: crate::Profile::Full,
            keep_waiting: false,
            mount_flags: vec!["noatime".to_string()],
        }
    }
}

impl SuiteConfig {
    /// The size expansion specs ask for.
    pub fn expand_to(&self) -> i64 {
        if self.expand_size > 0 {
            self.expand_size
        } else {
            self.volume_size + (1 << 30)
        }
    }

    /// Whether test volumes use the block access type.
    pub fn is_block(&self) -> bool {
        self.access_type.trim().eq_ignore_ascii_case("block")
    }
}

/// What one run created, by id, so the runner can check at the end that nothing is
/// left over.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Volume id → the spec that created it.
    pub volumes: BTreeMap<String, String>,
    /// Snapshot id → the spec that created it.
    pub snapshots: BTreeMap<String, String>,
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
        self.run.config.profile == crate::Profile::Compat
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

/// Make an RPC and keep its name and request for the checks:
/// `call!(ctx.identity(), get_plugin_info, "GetPluginInfo", GetPluginInfoRequest {})`.
#[macro_export]
macro_rules! call {
    ($client:expr, $method:ident, $rpc:literal, $req:expr) => {{
        let request = $req;
        let mut client = $client;
        let started = ::std::time::Instant::now();
        let result = match $crate::breaker::before($rpc) {
            Some(refused) => Err(refused),
            None => client
                .$method(request.clone())
                .await
                .map(|r| r.into_inner()),
        };
        $crate::breaker::after($rpc, started, &result);
        $crate::check::Call::new($rpc, &request, result)
    }};
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
