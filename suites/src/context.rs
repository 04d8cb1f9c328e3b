//! What a spec runs against: the clients, the configuration, the driver's advertised
//! capabilities, and a tracker of what the spec created.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::plugin_capability::service::Type as PluginService;
use tonic::transport::Channel;

use crate::spec::Need;

/// gRPC clients for the endpoints under test.
#[derive(Clone)]
pub struct Clients {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Clients {
    /// Clients for a node endpoint and (possibly the same) controller endpoint.
    pub fn new(node_channel: Channel, controller_channel: Channel) -> Self {
        Clients {
            identity: IdentityClient::new(node_channel.clone()),
            controller: ControllerClient::new(controller_channel),
            node: NodeClient::new(node_channel),
        }
    }
}

/// What the driver advertised, read once before the run.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub plugin: Vec<PluginService>,
    pub controller: Vec<ControllerRpc>,
    pub node: Vec<NodeRpc>,
    /// Whether the node service answered NodeGetCapabilities.
    pub node_service: bool,
    /// Whether the harness runs as root.
    pub root: bool,
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
        }
    }

    /// The first unmet need of a list, if any.
    pub fn first_unmet<'a>(&self, needs: &'a [Need]) -> Option<&'a Need> {
        needs.iter().find(|n| !self.meets(n))
    }
}

/// Settings that shape the specs (the `--csi.*` flags land here).
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Root under which each spec gets its own target directories.
    pub mount_dir: PathBuf,
    /// Root under which each spec gets its own staging directories.
    pub staging_dir: PathBuf,
    /// Per-RPC secrets, keyed like csi-sanity's secrets file (e.g. `CreateVolumeSecret`).
    pub secrets: HashMap<String, HashMap<String, String>>,
    /// `mount` or `block`.
    pub access_type: String,
    /// Size of test volumes, in bytes.
    pub volume_size: i64,
    /// Size to expand test volumes to, in bytes (0: twice the size).
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
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig {
            mount_dir: std::env::temp_dir().join("csi-mount"),
            staging_dir: std::env::temp_dir().join("csi-staging"),
            secrets: HashMap::new(),
            access_type: "mount".into(),
            volume_size: 1 << 30,
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
        }
    }
}

struct CtxInner {
    clients: Clients,
    config: SuiteConfig,
    caps: Capabilities,
    spec_name: String,
    counter: AtomicU64,
}

/// One spec's view of the run. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<CtxInner>,
}

impl Ctx {
    /// A context for the spec `spec_name`.
    pub fn new(clients: Clients, config: SuiteConfig, caps: Capabilities, spec_name: &str) -> Ctx {
        Ctx {
            inner: Arc::new(CtxInner {
                clients,
                config,
                caps,
                spec_name: spec_name.to_string(),
                counter: AtomicU64::new(0),
            }),
        }
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        self.inner.clients.identity.clone()
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        self.inner.clients.controller.clone()
    }

    pub fn node(&self) -> NodeClient<Channel> {
        self.inner.clients.node.clone()
    }

    pub fn config(&self) -> &SuiteConfig {
        &self.inner.config
    }

    pub fn caps(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// The spec this context belongs to.
    pub fn spec_name(&self) -> &str {
        &self.inner.spec_name
    }

    /// A name unique to this run and spec, for volumes and snapshots.
    pub fn unique_name(&self, what: &str) -> String {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{what}-{n}", self.inner.config.name_prefix)
    }
}

/// Make an RPC and keep its name and request for the checks:
/// `call!(ctx.identity(), get_plugin_info, "GetPluginInfo", GetPluginInfoRequest {})`.
#[macro_export]
macro_rules! call {
    ($client:expr, $method:ident, $rpc:literal, $req:expr) => {{
        let request = $req;
        let mut client = $client;
        let result = client
            .$method(request.clone())
            .await
            .map(|r| r.into_inner());
        $crate::check::Call::new($rpc, &request, result)
    }};
}
