//! The settings that shape the specs: the `--csi.*` flags land in a [`SuiteConfig`],
//! and its [`Profile`] says whether the core specs check what Go's csi-sanity checks or
//! more.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use csi_proto::v1::TopologyRequirement;

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
    pub profile: Profile,
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
            profile: Profile::Full,
            keep_waiting: false,
            mount_flags: vec!["noatime".to_string()],
        }
    }
}

impl SuiteConfig {
    /// Whether the compat profile runs ([`Profile::Compat`]).
    pub fn compat(&self) -> bool {
        self.profile == Profile::Compat
    }

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
