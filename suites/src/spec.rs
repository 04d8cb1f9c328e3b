//! What a spec is: a named rule, what it needs, and the function that checks it.

use std::future::Future;
use std::pin::Pin;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::group_controller_service_capability::rpc::Type as GroupControllerRpc;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;
use csi_proto::v1::plugin_capability::service::Type as PluginService;

use crate::check::Failure;
use crate::context::Ctx;

/// The future a spec returns.
pub type SpecFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

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

/// One rule of the spec, checked against a driver.
#[derive(Clone)]
pub struct Spec {
    /// The service or group, e.g. `Controller::CreateVolume`.
    pub group: &'static str,
    /// The rule, as a sentence: "fails with INVALID_ARGUMENT when no name is given".
    pub name: &'static str,
    /// The spec text or section it enforces, quoted or cited.
    pub rule: &'static str,
    /// What must hold for the spec to apply.
    pub needs: &'static [Need],
    /// The check itself.
    pub run: fn(Ctx) -> SpecFuture,
    /// The Go csi-sanity's full name for this spec's counterpart, if it has one
    /// ([`crate::go_names`]); [`crate::all`] fills it in.
    pub go_name: Option<&'static str>,
    /// The spec needs the driver to itself: no other spec of the run may hold volumes
    /// while it runs (it fills a node to its attach limit). A runner that runs specs at
    /// once runs this one alone ([`Spec::alone`]).
    pub alone: bool,
}

impl Spec {
    /// Mark the spec as one that runs with no other spec at the same time.
    pub const fn alone(mut self) -> Self {
        self.alone = true;
        self
    }

    /// The trial name a runner shows and filters on: `Group::sentence`.
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }

    /// Whether this spec goes beyond the Go csi-sanity (the `Beyond::` groups): it runs
    /// only in the full profile, and a focus selects it only when it names it.
    pub fn is_beyond(&self) -> bool {
        self.group.starts_with("Beyond")
    }

    /// Whether the compat profile runs this spec: it has a Go counterpart that Go runs.
    pub fn in_compat(&self) -> bool {
        self.go_name
            .is_some_and(|go| go != crate::go_names::GO_PENDING)
    }

    /// The names `--ginkgo.focus`/`--ginkgo.skip` match: our own, and Go's if any.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.full_name()];
        names.extend(self.go_name.map(str::to_string));
        names
    }
}

/// Which specs run, and how strictly the core specs check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The core specs, at least as strong as the Go csi-sanity on every assertion, plus
    /// the Beyond specs (the default).
    #[default]
    Full,
    /// Exactly the Go csi-sanity's specs, with its requests, assertions and gating, so a
    /// driver gets the verdicts Go would give it.
    Compat,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s {
            "full" => Ok(Profile::Full),
            "compat" => Ok(Profile::Compat),
            other => Err(format!(
                "unknown profile {other:?}: expected full or compat"
            )),
        }
    }
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.full_name())
            .field("needs", &self.needs)
            .finish()
    }
}

/// Declare a spec: `spec!(group, name, rule, needs, |ctx| async move { ... })`.
#[macro_export]
macro_rules! spec {
    ($group:expr, $name:expr, $rule:expr, [$($need:expr),* $(,)?], $body:expr) => {
        $crate::Spec {
            group: $group,
            name: $name,
            rule: $rule,
            needs: &[$($need),*],
            run: |ctx| Box::pin(($body)(ctx)),
            go_name: None,
            alone: false,
        }
    };
}
