//! What a spec needs before it applies ([`Need`]), and what the driver and the
//! environment offer ([`Capabilities`]): a runner gates each spec on the two.

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::group_controller_service_capability::rpc::Type as GroupControllerRpc;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::plugin_capability::service::Type as PluginService;
use csi_proto::v1::plugin_capability::volume_expansion::Type as VolumeExpansion;

use crate::config::SuiteConfig;

/// Something a spec needs before it applies. A need that is not met makes the spec
/// skipped (or, in strict mode, failed when it is a capability), with
/// [`Need::describe`] as the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    /// The plugin advertises this service capability.
    PluginService(PluginService),
    /// The controller advertises this RPC capability.
    ControllerCap(ControllerRpc),
    /// The node advertises this RPC capability.
    NodeCap(NodeRpc),
    /// The node service is reachable.
    NodeService,
    /// The harness runs as root, so it can check real mounts and data.
    Root,
    /// The group controller advertises this RPC capability.
    GroupControllerCap(GroupControllerRpc),
    /// The node service can really stage and publish: the endpoint is external (the
    /// driver runs with its own privileges), or the harness, which then runs the bundled
    /// driver in process, is root.
    Mounts,
    /// A second node id is configured (`--csi.secondnodeid`).
    SecondNode,
    /// The node-volume-attach-limit spec was asked for (`--csi.testnodevolumeattachlimit`).
    AttachLimitTest,
    /// Mutable parameters are configured (`--csi.testvolumemutableparameters`).
    MutableParameters,
    /// Idempotency repeats are enabled (`--csi.idempotentcount` > 0).
    IdempotentRepeats,
}

impl Need {
    /// Why a spec with this unmet need does not apply.
    pub fn describe(&self) -> String {
        match self {
            Need::PluginService(s) => format!("driver does not advertise {}", s.as_str_name()),
            Need::ControllerCap(c) => format!("driver does not advertise {}", c.as_str_name()),
            Need::NodeCap(c) => format!("driver does not advertise node {}", c.as_str_name()),
            Need::GroupControllerCap(c) => {
                format!(
                    "driver does not advertise group controller {}",
                    c.as_str_name()
                )
            }
            Need::NodeService => "no node service is reachable".to_string(),
            Need::Root => "skipped: needs root".to_string(),
            Need::Mounts => {
                "skipped: needs root (the bundled driver mounts in this process)".to_string()
            }
            Need::SecondNode => "no second node id configured (--csi.secondnodeid)".to_string(),
            Need::AttachLimitTest => {
                "opt-in: pass --csi.testnodevolumeattachlimit to run it".to_string()
            }
            Need::MutableParameters => {
                "no mutable parameters configured (--csi.testvolumemutableparameters)".to_string()
            }
            Need::IdempotentRepeats => {
                "idempotency repeats are off (--csi.idempotentcount 0)".to_string()
            }
        }
    }

    /// Whether a strict run turns this unmet need into a failure (capabilities the driver
    /// chose not to offer), rather than a skip (the environment or the configuration
    /// can't run it).
    pub fn is_capability(&self) -> bool {
        matches!(
            self,
            Need::PluginService(_)
                | Need::ControllerCap(_)
                | Need::NodeCap(_)
                | Need::GroupControllerCap(_)
                | Need::NodeService
        )
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
