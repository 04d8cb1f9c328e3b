//! The command line: every `--csi.*` flag of Go csi-sanity v5 with the same meaning and
//! default, a few of our own, `--ginkgo.focus`/`--ginkgo.skip` (regexes on the full
//! spec name), and everything else handed to libtest (`--list`, filters, `--skip`,
//! `--exact`, `--format`, `-q`, `--test-threads`).
//!
//! Flags follow Go's `flag` package: `-flag value`, `-flag=value`, `--flag value`,
//! `--flag=value`; booleans as `-flag` or `-flag=true|false`. Unknown `--ginkgo.*` and
//! `--test.*` flags (Go CI scripts pass `--ginkgo.v`, `--test.timeout=0`) are accepted
//! and ignored with a warning, so a script written for the Go binary runs unchanged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use csi_proto::v1::{Topology, TopologyRequirement};

use crate::runner::Config;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run (or list) the suite.
    Run(Box<Config>),
    /// Print the version and exit 0.
    Version,
    /// Print the usage and exit 0.
    Help,
}

/// A usage error: exit 2 with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// How a flag takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value,
    Bool,
}

/// The flags we know: Go csi-sanity's 22 `csi.*` flags, ours, and the ginkgo ones we map.
const FLAGS: &[(&str, Kind, &str)] = &[
    ("csi.endpoint", Kind::Value, "CSI endpoint (unix:///path or tcp://host:port); none: the bundled driver"),
    ("csi.controllerendpoint", Kind::Value, "CSI controller endpoint, when the controller is served elsewhere"),
    ("csi.mountdir", Kind::Value, "root of target paths for NodePublish (default /tmp/csi-mount)"),
    ("csi.stagingdir", Kind::Value, "root of staging paths for NodeStage (default /tmp/csi-staging)"),
    ("csi.createmountpathcmd", Kind::Value, "command that creates a target directory: gets the path, prints the path to use"),
    ("csi.createstagingpathcmd", Kind::Value, "command that creates a staging directory: gets the path, prints the path to use"),
    ("csi.createpathcmdtimeout", Kind::Value, "timeout of the create-path commands (default 10s)"),
    ("csi.removemountpathcmd", Kind::Value, "command that removes a target directory"),
    ("csi.removestagingpathcmd", Kind::Value, "command that removes a staging directory"),
    ("csi.removepathcmdtimeout", Kind::Value, "timeout of the remove-path commands (default 10s)"),
    ("csi.checkpathcmd", Kind::Value, "command that checks a path: prints file, directory, not_found or other"),
    ("csi.checkpathcmdtimeout", Kind::Value, "timeout of the check-path command (default 10s)"),
    ("csi.secrets", Kind::Value, "YAML file of secrets per RPC (CreateVolumeSecret, NodeStageVolumeSecret, ...)"),
    ("csi.testvolumeaccesstype", Kind::Value, "access type of test volumes: mount or block (default mount)"),
    ("csi.testvolumesize", Kind::Value, "size of test volumes: bytes, or 512Mi, 1Gi, 10G (default 10737418240; 1 GiB with the bundled driver)"),
    ("csi.testvolumeexpandsize", Kind::Value, "size to expand test volumes to: bytes, or 512Mi, 1Gi, 10G (default: the volume size + 1 GiB)"),
    ("csi.testvolumeparameters", Kind::Value, "YAML file of CreateVolume parameters"),
    ("csi.testvolumemutableparameters", Kind::Value, "YAML file of mutable parameters for ModifyVolume"),
    ("csi.testsnapshotparameters", Kind::Value, "YAML file of CreateSnapshot parameters"),
    ("csi.testtopologyrequirements", Kind::Value, "YAML file of the topology requirement of test volumes"),
    ("csi.testnodevolumeattachlimit", Kind::Bool, "also test the node's volume attach limit"),
    ("csi.junitfile", Kind::Value, "write a JUnit XML report to this file"),
    // Ours.
    ("csi.idempotentcount", Kind::Value, "how often the idempotency specs repeat each call (default 10; 0 skips them)"),
    ("csi.strict", Kind::Bool, "a capability a spec needs but the driver lacks fails the spec instead of skipping it"),
    ("csi.nodeunpublish-notfound", Kind::Value, "NodeUnpublishVolume of an unknown volume: notfound (default, the spec table) or ok (spec issue #433)"),
    ("csi.parallel", Kind::Value, "run this many specs at once (default: 3 in the full profile; 1 in compat, as Go runs them)"),
    ("csi.timeout", Kind::Value, "deadline of one RPC (default 60s)"),
    ("csi.connect-timeout", Kind::Value, "how long to wait for the endpoint to answer (default 10s)"),
    ("csi.secondnodeid", Kind::Value, "a second node id, for specs that need two nodes; not one of the node endpoints (bundled: the droplet after its nodes)"),
    ("csi.nodeendpoints", Kind::Value, "node endpoints of further nodes of the same driver, comma-separated: specs running at once spread over these and --csi.endpoint's node"),
    ("csi.bundlednodes", Kind::Value, "how many nodes the bundled driver runs, each a droplet with its own node plugin (default: --csi.parallel)"),
    ("csi.readytimeout", Kind::Value, "how long to wait for a snapshot to be ready to use (default 300s)"),
    ("csi.shortdeadline", Kind::Value, "client deadline the retry and slow-cloud specs cut calls off with (default 200ms)"),
    ("csi.retrybudget", Kind::Value, "how long the retry specs keep retrying a call before calling it stuck (default 120s)"),
    ("csi.profile", Kind::Value, "full (default: the core specs, at least as strict as Go's, plus Beyond) or compat (exactly Go csi-sanity's specs and verdicts)"),
    ("csi.mountflags", Kind::Value, "mount flags the full profile sends in every mount capability, comma-separated (default noatime; empty: none), checked in the target's mount options where the harness can see it"),
    ("csi.keep-waiting", Kind::Bool, "keep calling an RPC that has run out --csi.timeout in 3 specs (default: later specs that need it fail at once)"),
    ("csi.report", Kind::Value, "write a findings page (Markdown, or HTML for a .html name): each finding's rule, severity, request, response and how to reproduce it"),
    ("csi.junit-names", Kind::Value, "how JUnit names test cases: ours (default) or go ([It] <Go full name>, suite \"CSI Driver Test Suite\")"),
    ("csi.version", Kind::Bool, "print the version and exit"),
    ("version", Kind::Bool, "print the version and exit"),
    ("ginkgo.focus", Kind::Value, "run only specs whose full name matches this regex (repeatable)"),
    ("ginkgo.skip", Kind::Value, "skip specs whose full name matches this regex (repeatable)"),
    ("ginkgo.junit-report", Kind::Value, "same as --csi.junitfile"),
];

/// Ginkgo and go-test flags that take a value; any other `ginkgo.*`/`test.*` flag is
/// taken as a boolean. All are ignored.
const FOREIGN_VALUE_FLAGS: &[&str] = &[
    "ginkgo.seed",
    "ginkgo.parallel.process",
    "ginkgo.parallel.total",
    "ginkgo.parallel.host",
    "ginkgo.focus-file",
    "ginkgo.skip-file",
    "ginkgo.label-filter",
    "ginkgo.timeout",
    "ginkgo.slow-spec-threshold",
    "ginkgo.slowSpecThreshold",
    "ginkgo.json-report",
    "ginkgo.teamcity-report",
    "ginkgo.output-dir",
    "ginkgo.poll-progress-after",
    "ginkgo.poll-progress-interval",
    "ginkgo.source-root",
    "ginkgo.grace-period",
    "ginkgo.flake-attempts",
    "ginkgo.flakeAttempts",
    "ginkgo.must-pass-repeatedly",
    "ginkgo.reportFile",
    "ginkgo.junit-report-file",
    "ginkgo.randomSeed",
    "test.timeout",
    "test.run",
    "test.skip",
    "test.count",
    "test.parallel",
    "test.cpu",
    "test.coverprofile",
    "test.outputdir",
    "test.memprofile",
    "test.cpuprofile",
    "test.blockprofile",
    "test.mutexprofile",
    "test.trace",
    "test.benchtime",
    "test.bench",
    "test.list",
    "test.shuffle",
    "test.testlogfile",
    "test.gocoverdir",
    "test.fuzz",
    "test.fuzztime",
    "test.memprofilerate",
    "test.blockprofilerate",
    "test.mutexprofilefraction",
];

/// The usage text for `--help`.
pub fn help_text() -> String {
    let mut s = String::from(
        "csi-sanity: a CSI conformance harness (drop-in for kubernetes-csi's csi-sanity)\n\n\
         usage: csi-sanity [--csi.endpoint unix:///path/csi.sock] [flags] [libtest options] [FILTER]\n\n\
         With no --csi.endpoint, runs against the bundled driver and its in-memory cloud.\n\nFlags:\n",
    );
    for (name, kind, help) in FLAGS {
        let value = if *kind == Kind::Value { " VALUE" } else { "" };
        s.push_str(&format!("  --{name}{value}\n        {help}\n"));
    }
    s.push_str(
        "\nOther --ginkgo.* and --test.* flags are accepted and ignored.\n\
         libtest options: --list, --exact, --skip FILTER, --format pretty|terse|json, -q, --test-threads N, --include-ignored\n\
         Durations: 10s, 500ms, 1m30s, or plain seconds. Sizes: bytes, or 512Mi, 1Gi, 10G. Exit: 0 all passed, 1 a spec failed, 2 usage or connection error.\n",
    );
    s
}

pub use csi_suites::units::parse_duration;

fn parse_i64(name: &str, v: &str) -> Result<i64, UsageError> {
    let v = v.trim();
    let parsed = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16)
    } else {
        v.parse::<i64>()
    };
    parsed.map_err(|_| {
        usage(format!(
            "invalid value {v:?} for flag -{name}: expected an integer"
        ))
    })
}

fn parse_bool(name: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(usage(format!("invalid boolean value {v:?} for -{name}"))),
    }
}

fn read_yaml(flag: &str, path: &Path) -> Result<serde_yaml::Value, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("-{flag}: cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Ok(serde_yaml::Value::Mapping(Default::default()));
    }
    serde_yaml::from_str(&text).map_err(|e| {
        usage(format!(
            "-{flag}: {} is not valid YAML: {e}",
            path.display()
        ))
    })
}

fn scalar_string(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    }
}

/// A YAML mapping of strings to scalars, as a string map.
fn string_map(flag: &str, v: &serde_yaml::Value) -> Result<HashMap<String, String>, UsageError> {
    let bad = || usage(format!("-{flag}: expected a mapping of names to values"));
    let serde_yaml::Value::Mapping(m) = v else {
        return if v.is_null() {
            Ok(HashMap::new())
        } else {
            Err(bad())
        };
    };
    m.iter()
        .map(|(k, v)| {
            Ok((
                scalar_string(k).ok_or_else(bad)?,
                scalar_string(v).ok_or_else(bad)?,
            ))
        })
        .collect()
}

/// Read a parameters file (`--csi.testvolumeparameters` and friends).
pub fn read_parameters(flag: &str, path: &Path) -> Result<HashMap<String, String>, UsageError> {
    string_map(flag, &read_yaml(flag, path)?)
}

/// Read a secrets file: `CreateVolumeSecret: {key: value}` and so on.
pub fn read_secrets(path: &Path) -> Result<HashMap<String, HashMap<String, String>>, UsageError> {
    const FLAG: &str = "csi.secrets";
    let doc = read_yaml(FLAG, path)?;
    let serde_yaml::Value::Mapping(m) = &doc else {
        return Err(usage(format!(
            "-{FLAG}: expected a mapping like CreateVolumeSecret: {{key: value}}"
        )));
    };
    let mut out = HashMap::new();
    for (k, v) in m {
        let key =
            scalar_string(k).ok_or_else(|| usage(format!("-{FLAG}: keys must be strings")))?;
        if !csi_suites::Secret::ALL.iter().any(|s| s.key() == key) {
            eprintln!("csi-sanity: warning: {}: unknown secrets key {key:?} (known: CreateVolumeSecret, DeleteVolumeSecret, ...)", path.display());
        }
        out.insert(key, string_map(FLAG, v)?);
    }
    Ok(out)
}

/// Read a topology requirements file: `requisite: [{segments: {k: v}}]`, `preferred: [...]`.
pub fn read_topology(path: &Path) -> Result<TopologyRequirement, UsageError> {
    const FLAG: &str = "csi.testtopologyrequirements";
    let doc = read_yaml(FLAG, path)?;
    let list = |key: &str| -> Result<Vec<Topology>, UsageError> {
        match doc.get(key) {
            None | Some(serde_yaml::Value::Null) => Ok(Vec::new()),
            Some(serde_yaml::Value::Sequence(items)) => items
                .iter()
                .map(|item| {
                    let segments = item.get("segments").unwrap_or(item);
                    Ok(Topology {
                        segments: string_map(FLAG, segments)?,
                    })
                })
                .collect(),
            Some(_) => Err(usage(format!(
                "-{FLAG}: {key} must be a list of {{segments: {{key: value}}}}"
            ))),
        }
    };
    Ok(TopologyRequirement {
        requisite: list("requisite")?,
        preferred: list("preferred")?,
    })
}

/// Parse the command line (without the program name).
pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = Config::default();
    let mut rest: Vec<String> = vec!["csi-sanity".to_string()];
    let mut args = args.into_iter().map(Into::into).peekable();
    let mut focus = Vec::new();
    let mut skip = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--" {
            rest.extend(args.by_ref());
            break;
        }
        let Some(stripped) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            rest.push(arg);
            continue;
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (stripped.to_string(), None),
        };
        if matches!(name.as_str(), "h" | "help") {
            return Ok(Command::Help);
        }
        let known = FLAGS.iter().find(|(n, _, _)| *n == name);
        let Some((_, kind, _)) = known else {
            if name.starts_with("csi.") {
                return Err(usage(format!(
                    "flag provided but not defined: -{name} (see --help)"
                )));
            }
            if name.starts_with("ginkgo.") || name.starts_with("test.") {
                // Accepted for compatibility, ignored.
                if inline.is_none() && FOREIGN_VALUE_FLAGS.contains(&name.as_str()) {
                    args.next();
                }
                eprintln!("csi-sanity: warning: ignoring -{name} (Go test/ginkgo flag without an equivalent here)");
                continue;
            }
            rest.push(arg);
            continue;
        };
        let value = match kind {
            Kind::Bool => inline.unwrap_or_else(|| "true".to_string()),
            Kind::Value => match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| usage(format!("flag needs an argument: -{name}")))?,
            },
        };
        apply(&mut config, &name, &value, &mut focus, &mut skip)?;
        if (name == "version" || name == "csi.version") && parse_bool(&name, &value)? {
            return Ok(Command::Version);
        }
    }
    config.focus = focus;
    config.skip = skip;
    for re in config.focus.iter().chain(config.skip.iter()) {
        regex::Regex::new(re).map_err(|e| usage(format!("invalid regex {re:?}: {e}")))?;
    }
    let at = config.suite.access_type.trim().to_ascii_lowercase();
    if at != "mount" && at != "block" {
        return Err(usage(
            "--csi.testvolumeaccesstype valid values are mount or block",
        ));
    }
    config.suite.access_type = at;
    config.args = libtest_mimic::Arguments::from_iter(rest);
    Ok(Command::Run(Box::new(config)))
}

fn apply(
    config: &mut Config,
    name: &str,
    value: &str,
    focus: &mut Vec<String>,
    skip: &mut Vec<String>,
) -> Result<(), UsageError> {
    let suite = &mut config.suite;
    let opt = |v: &str| {
        if v.is_empty() {
            None
        } else {
            Some(v.to_string())
        }
    };
    let duration = |v: &str| parse_duration(v).map_err(|e| usage(format!("-{name}: {e}")));
    let size = |v: &str| {
        csi_suites::units::parse_size(v)
            .map_err(|e| usage(format!("invalid value {v:?} for flag -{name}: {e}")))
    };
    match name {
        "csi.endpoint" => config.endpoint = opt(value),
        "csi.controllerendpoint" => config.controller_endpoint = opt(value),
        "csi.mountdir" => suite.mount_dir = PathBuf::from(value),
        "csi.stagingdir" => suite.staging_dir = PathBuf::from(value),
        "csi.createmountpathcmd" => suite.create_target_path_cmd = opt(value),
        "csi.createstagingpathcmd" => suite.create_staging_path_cmd = opt(value),
        "csi.createpathcmdtimeout" => suite.create_path_cmd_timeout = duration(value)?,
        "csi.removemountpathcmd" => suite.remove_target_path_cmd = opt(value),
        "csi.removestagingpathcmd" => suite.remove_staging_path_cmd = opt(value),
        "csi.removepathcmdtimeout" => suite.remove_path_cmd_timeout = duration(value)?,
        "csi.checkpathcmd" => suite.check_path_cmd = opt(value),
        "csi.checkpathcmdtimeout" => suite.check_path_cmd_timeout = duration(value)?,
        "csi.secrets" => {
            if !value.is_empty() {
                suite.secrets = read_secrets(Path::new(value))?;
            }
        }
        "csi.testvolumeaccesstype" => suite.access_type = value.to_string(),
        "csi.testvolumesize" => {
            suite.volume_size = size(value)?;
            config.volume_size_set = true;
        }
        "csi.testvolumeexpandsize" => suite.expand_size = size(value)?,
        "csi.testvolumeparameters" => {
            if !value.is_empty() {
                suite.volume_parameters = read_parameters(name, Path::new(value))?;
            }
        }
        "csi.testvolumemutableparameters" => {
            if !value.is_empty() {
                suite.mutable_parameters = read_parameters(name, Path::new(value))?;
            }
        }
        "csi.testsnapshotparameters" => {
            if !value.is_empty() {
                suite.snapshot_parameters = read_parameters(name, Path::new(value))?;
            }
        }
        "csi.testtopologyrequirements" => {
            if !value.is_empty() {
                suite.topology_requirements = Some(read_topology(Path::new(value))?);
            }
        }
        "csi.testnodevolumeattachlimit" => {
            suite.test_node_volume_attach_limit = parse_bool(name, value)?
        }
        "csi.junitfile" | "ginkgo.junit-report" => {
            config.junit_file = opt(value).map(PathBuf::from)
        }
        "csi.idempotentcount" => {
            let n = parse_i64(name, value)?;
            suite.idempotent_count = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        }
        "csi.strict" => suite.strict = parse_bool(name, value)?,
        "csi.nodeunpublish-notfound" => {
            suite.node_unpublish_not_found_ok = match value.trim().to_ascii_lowercase().as_str() {
                "ok" => true,
                "notfound" | "not_found" | "not-found" => false,
                _ => {
                    return Err(usage(format!(
                        "-{name}: expected ok or notfound, got {value:?}"
                    )))
                }
            }
        }
        "csi.parallel" => {
            let n = parse_i64(name, value)?;
            if n < 1 {
                return Err(usage(format!("-{name}: must be at least 1")));
            }
            config.parallel = Some(n as usize);
        }
        "csi.timeout" => suite.rpc_timeout = duration(value)?,
        "csi.connect-timeout" => config.connect_timeout = duration(value)?,
        "csi.secondnodeid" => suite.second_node_id = opt(value),
        "csi.nodeendpoints" => {
            config.extra_node_endpoints = value
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect()
        }
        "csi.bundlednodes" => {
            let n = parse_i64(name, value)?;
            let max = crate::bundled::MAX_NODES as i64;
            if !(1..=max).contains(&n) {
                return Err(usage(format!("-{name}: must be from 1 to {max}")));
            }
            config.bundled_nodes = Some(n as usize);
        }
        "csi.readytimeout" => suite.ready_timeout = duration(value)?,
        "csi.shortdeadline" => suite.short_deadline = duration(value)?,
        "csi.retrybudget" => suite.retry_budget = duration(value)?,
        "csi.profile" => {
            suite.profile = value
                .trim()
                .parse()
                .map_err(|e| usage(format!("-{name}: {e}")))?
        }
        "csi.mountflags" => {
            suite.mount_flags = value
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        }
        "csi.keep-waiting" => suite.keep_waiting = parse_bool(name, value)?,
        "csi.report" => config.findings_file = opt(value).map(PathBuf::from),
        "csi.junit-names" => {
            config.junit_names = value
                .trim()
                .parse()
                .map_err(|e| usage(format!("-{name}: {e}")))?
        }
        "ginkgo.focus" => focus.push(value.to_string()),
        "ginkgo.skip" => skip.push(value.to_string()),
        "version" | "csi.version" => {}
        other => unreachable!("flag {other} is listed in FLAGS but not applied"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run_config(args: &[&str]) -> Config {
        match parse(args.iter().copied()).unwrap() {
            Command::Run(c) => *c,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn every_go_csi_sanity_flag_is_accepted() {
        let go_flags = [
            "endpoint",
            "controllerendpoint",
            "mountdir",
            "stagingdir",
            "createmountpathcmd",
            "createstagingpathcmd",
            "createpathcmdtimeout",
            "removemountpathcmd",
            "removestagingpathcmd",
            "removepathcmdtimeout",
            "checkpathcmd",
            "checkpathcmdtimeout",
            "secrets",
            "testvolumeaccesstype",
            "testvolumesize",
            "testvolumeexpandsize",
            "testvolumeparameters",
            "testvolumemutableparameters",
            "testsnapshotparameters",
            "testtopologyrequirements",
            "testnodevolumeattachlimit",
            "junitfile",
        ];
        for f in go_flags {
            assert!(
                FLAGS.iter().any(|(n, _, _)| *n == format!("csi.{f}")),
                "missing csi.{f}"
            );
        }
    }

    #[test]
    fn go_flag_syntaxes_all_work() {
        for args in [
            &["-csi.endpoint", "/tmp/a.sock"][..],
            &["-csi.endpoint=/tmp/a.sock"],
            &["--csi.endpoint", "/tmp/a.sock"],
            &["--csi.endpoint=/tmp/a.sock"],
        ] {
            assert_eq!(
                run_config(args).endpoint.as_deref(),
                Some("/tmp/a.sock"),
                "{args:?}"
            );
        }
        let c = run_config(&[
            "-csi.testnodevolumeattachlimit",
            "--csi.strict=false",
            "-csi.testvolumesize",
            "0x10",
        ]);
        assert!(c.suite.test_node_volume_attach_limit);
        assert!(!c.suite.strict);
        assert_eq!(c.suite.volume_size, 16);
    }

    #[test]
    fn defaults_match_go_csi_sanity() {
        let c = run_config(&[]);
        assert_eq!(c.suite.mount_dir, std::env::temp_dir().join("csi-mount"));
        assert_eq!(
            c.suite.staging_dir,
            std::env::temp_dir().join("csi-staging")
        );
        assert_eq!(c.suite.volume_size, 10737418240);
        assert_eq!(c.suite.expand_size, 0);
        assert_eq!(c.suite.expand_to(), 10737418240 + (1 << 30));
        assert_eq!(c.suite.create_path_cmd_timeout, Duration::from_secs(10));
        assert_eq!(c.suite.remove_path_cmd_timeout, Duration::from_secs(10));
        assert_eq!(c.suite.check_path_cmd_timeout, Duration::from_secs(10));
        assert_eq!(c.suite.access_type, "mount");
        assert_eq!(c.suite.idempotent_count, 10);
        assert!(!c.suite.node_unpublish_not_found_ok);
        assert_eq!(c.parallel, None);
        assert_eq!(c.parallel(), crate::runner::FULL_PROFILE_PARALLEL);
    }

    #[test]
    fn the_full_profile_runs_specs_at_once_and_compat_one_at_a_time_as_go_does() {
        assert_eq!(
            run_config(&[]).parallel(),
            crate::runner::FULL_PROFILE_PARALLEL
        );
        assert_eq!(run_config(&["--csi.profile", "compat"]).parallel(), 1);
        assert_eq!(
            run_config(&["--csi.parallel", "2", "--csi.profile", "compat"]).parallel(),
            2
        );
        assert_eq!(run_config(&["--csi.parallel=1"]).parallel(), 1);
    }

    #[test]
    fn durations_take_units_and_plain_seconds() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1").is_err());
        let c = run_config(&["--csi.createpathcmdtimeout", "30", "-csi.timeout=2m"]);
        assert_eq!(c.suite.create_path_cmd_timeout, Duration::from_secs(30));
        assert_eq!(c.suite.rpc_timeout, Duration::from_secs(120));
    }

    #[test]
    fn ginkgo_flags_map_or_are_ignored_and_the_rest_goes_to_libtest() {
        let c = run_config(&[
            "--ginkgo.v",
            "--ginkgo.focus",
            "CreateVolume",
            "--ginkgo.skip=pagination",
            "--ginkgo.seed",
            "42",
            "--test.timeout=0",
            "--test.v",
            "--list",
            "--exact",
            "Identity",
        ]);
        assert_eq!(c.focus, vec!["CreateVolume".to_string()]);
        assert_eq!(c.skip, vec!["pagination".to_string()]);
        assert!(c.args.list);
        assert!(c.args.exact);
        assert_eq!(c.args.filter.as_deref(), Some("Identity"));
    }

    #[test]
    fn version_help_and_usage_errors() {
        assert!(matches!(parse(["-version"]).unwrap(), Command::Version));
        assert!(matches!(parse(["--version"]).unwrap(), Command::Version));
        assert!(matches!(parse(["--help"]).unwrap(), Command::Help));
        assert!(parse(["--csi.nosuchflag=1"]).is_err());
        assert!(parse(["--csi.endpoint"]).is_err());
        assert!(parse(["--csi.testvolumeaccesstype=file"]).is_err());
        assert!(parse(["--csi.testvolumesize=big"]).is_err());
        let sized = run_config(&[
            "--csi.testvolumesize=1Gi",
            "--csi.testvolumeexpandsize",
            "0x80000000",
        ]);
        assert_eq!(
            (sized.suite.volume_size, sized.suite.expand_size),
            (1 << 30, 2 << 30)
        );
        assert!(parse(["--ginkgo.focus=("]).is_err());
        assert!(parse(["--csi.nodeunpublish-notfound=maybe"]).is_err());
        assert!(
            run_config(&["--csi.nodeunpublish-notfound=ok"])
                .suite
                .node_unpublish_not_found_ok
        );
    }

    #[test]
    fn yaml_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets.yaml");
        std::fs::write(
            &secrets,
            "CreateVolumeSecret:\n  user: admin\n  pin: 1234\nNodeStageVolumeSecret:\n  key: v\n",
        )
        .unwrap();
        let params = dir.path().join("params.yaml");
        std::fs::write(&params, "type: ssd\nreplicas: 3\n").unwrap();
        let topo = dir.path().join("topo.yaml");
        std::fs::write(
            &topo,
            "requisite:\n- segments:\n    region: nyc3\npreferred: []\n",
        )
        .unwrap();
        let c = run_config(&[
            &format!("--csi.secrets={}", secrets.display()),
            &format!("--csi.testvolumeparameters={}", params.display()),
            &format!("--csi.testtopologyrequirements={}", topo.display()),
        ]);
        assert_eq!(c.suite.secrets["CreateVolumeSecret"]["pin"], "1234");
        assert_eq!(c.suite.volume_parameters["replicas"], "3");
        let t = c.suite.topology_requirements.unwrap();
        assert_eq!(t.requisite[0].segments["region"], "nyc3");
        assert!(parse([format!(
            "--csi.secrets={}",
            dir.path().join("missing").display()
        )])
        .is_err());
    }
}
