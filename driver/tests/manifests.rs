//! The Kubernetes manifests in deploy/ against the driver they deploy, and the
//! CI workflows that deploy them.
//!
//! Renders the kustomize base and overlays (deploy/render.sh: kustomize or
//! kubectl) and checks what would otherwise only fail in a cluster: a flag the
//! driver does not have, a socket the sidecars look for in the wrong place, a
//! CSIDriver name GetPluginInfo does not report, a file the driver reads from
//! a folder nobody mounted. It also runs deploy/validate.sh (schemas) and
//! shellcheck on the deploy scripts.
//!
//! The kind end-to-end run happens only where Docker runs (a fork's CI, see
//! .github/workflows/e2e.yaml), so what it depends on is checked here
//! offline: the test-driver manifest Kubernetes' external storage suite reads
//! (deploy/kind/testdriver.yaml), the order of the steps of deploy/kind/e2e.sh
//! (its --dry-run), the tool versions the workflow pins, and actionlint on
//! every workflow.
//!
//! A missing external tool skips its test with "skipped: needs <tool>",
//! unless $CI is set: there a missing tool fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use clap::{CommandFactory, Parser};
use csi_driver::cloud::{GIB, MAX_VOLUME_GIB, MIN_VOLUME_GIB};
use csi_driver::config::{Config, Mode, DEFAULT_DRIVER_NAME, TOPOLOGY_REGION_KEY};
use csi_driver::mount::fs::FsType;
use serde::Deserialize;
use serde_yaml::Value;

/// The kustomizations, relative to deploy/kubernetes.
const TARGETS: &[&str] = &["base", "overlays/fake-cloud", "overlays/digitalocean"];

/// What deploy/render.sh and deploy/validate.sh exit with when a tool they need is missing.
const EXIT_TOOL_MISSING: i32 = 3;

/// The flags of the `fake-cloud` binary (fake-cloud/src/main.rs), which the
/// fake-cloud overlay runs from the driver image.
const FAKE_CLOUD_FLAGS: &[&str] = &[
    "listen",
    "data-dir",
    "token-file",
    "token",
    "attach-latency",
    "detach-latency",
    "resize-latency",
    "droplet",
    "seed",
    "volume-limit",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the driver crate sits in the workspace root")
        .to_path_buf()
}

/// A missing tool skips the test, except under CI, where it fails it.
fn tool_missing(tool: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is not installed, and CI is set: install it (see deploy/README.md)");
    }
    println!("skipped: needs {tool}");
}

/// Runs a program from the repository root; None when the program itself is not installed.
fn run(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
    {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("could not run {program}: {e}"),
    }
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One rendered kustomization: its name and its objects.
struct Rendered {
    target: &'static str,
    docs: Vec<Value>,
}

/// Every target rendered once for all tests; None when no renderer is installed.
fn rendered() -> Option<&'static [Rendered]> {
    static RENDERED: OnceLock<Option<Vec<Rendered>>> = OnceLock::new();
    let all = RENDERED.get_or_init(|| {
        let mut all = Vec::new();
        for &target in TARGETS {
            let dir = format!("deploy/kubernetes/{target}");
            let output = run("bash", &["deploy/render.sh", &dir])?;
            if output.status.code() == Some(EXIT_TOOL_MISSING) {
                return None;
            }
            assert!(
                output.status.success(),
                "rendering {target} failed: {}",
                describe(&output)
            );
            let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
            let docs = serde_yaml::Deserializer::from_str(&text)
                .map(|doc| Value::deserialize(doc).expect("kustomize prints valid YAML"))
                .filter(|doc| !doc.is_null())
                .collect();
            all.push(Rendered { target, docs });
        }
        Some(all)
    });
    match all {
        Some(all) => Some(all.as_slice()),
        None => {
            tool_missing("kustomize or kubectl");
            None
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|seq| {
            seq.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn kind_and_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        str_of(doc, "kind"),
        str_of(&doc["metadata"], "name")
    )
}

/// A pod template found in a rendered object.
#[derive(Clone)]
struct Pod<'a> {
    /// "DaemonSet/dobs-csi-node" and the like.
    owner: String,
    kind: &'a str,
    spec: &'a Value,
}

impl<'a> Pod<'a> {
    fn containers(&self) -> impl Iterator<Item = Container<'a>> + '_ {
        ["initContainers", "containers"]
            .into_iter()
            .flat_map(move |key| {
                self.spec[key]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(move |c| Container {
                        value: c,
                        init: key == "initContainers",
                    })
            })
    }

    fn volume(&self, name: &str) -> &'a Value {
        self.spec["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| str_of(v, "name") == name)
            .unwrap_or_else(|| panic!("{}: no volume named {name}", self.owner))
    }
}

fn pods(docs: &[Value]) -> Vec<Pod<'_>> {
    docs.iter()
        .filter_map(|doc| {
            let kind = str_of(doc, "kind");
            let spec = match kind {
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
                    &doc["spec"]["template"]["spec"]
                }
                "Pod" => &doc["spec"],
                _ => return None,
            };
            Some(Pod {
                owner: kind_and_name(doc),
                kind,
                spec,
            })
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Container<'a> {
    value: &'a Value,
    init: bool,
}

impl<'a> Container<'a> {
    fn name(&self) -> &'a str {
        str_of(self.value, "name")
    }

    fn image(&self) -> &'a str {
        str_of(self.value, "image")
    }

    fn command(&self) -> Vec<String> {
        strings(&self.value["command"])
    }

    fn args(&self) -> Vec<String> {
        strings(&self.value["args"])
    }

    /// The value of `--name=value` in args.
    fn flag(&self, name: &str) -> Option<String> {
        let prefix = format!("--{name}=");
        self.args()
            .iter()
            .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
    }

    /// (volume name, mount path, propagation) of each volume mount.
    fn mounts(&self) -> Vec<(&'a str, &'a str, &'a str)> {
        self.value["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    str_of(m, "name"),
                    str_of(m, "mountPath"),
                    str_of(m, "mountPropagation"),
                )
            })
            .collect()
    }

    /// The mount that holds `path` (the deepest one), as (volume name, mount path).
    fn mount_holding(&self, path: &Path) -> Option<(&'a str, &'a str)> {
        self.mounts()
            .into_iter()
            .filter(|(_, mount_path, _)| path.starts_with(mount_path))
            .max_by_key(|(_, mount_path, _)| mount_path.len())
            .map(|(volume, mount_path, _)| (volume, mount_path))
    }

    /// The volume mounted exactly at `dir`.
    fn volume_at(&self, dir: &Path) -> Option<&'a str> {
        self.mounts()
            .into_iter()
            .find(|(_, mount_path, _)| Path::new(mount_path) == dir)
            .map(|(volume, _, _)| volume)
    }

    fn program(&self) -> Option<String> {
        self.command()
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
    }
}

/// The driver image: the image of every container named `csi-driver`.
fn driver_image(docs: &[Value]) -> String {
    let images: BTreeSet<&str> = pods(docs)
        .iter()
        .flat_map(|p| {
            p.containers()
                .filter(|c| c.name() == "csi-driver")
                .map(|c| c.image())
        })
        .collect();
    assert_eq!(
        images.len(),
        1,
        "the csi-driver containers should share one image, found {images:?}"
    );
    images.into_iter().next().unwrap().to_string()
}

/// Containers that run `csi-driver`: the driver image with its entrypoint, or with
/// `csi-driver` as the command. (The same image also runs fake-cloud and shell steps.)
fn driver_containers<'a>(docs: &'a [Value]) -> Vec<(Pod<'a>, Container<'a>)> {
    let image = driver_image(docs);
    let mut found = Vec::new();
    for pod in pods(docs) {
        let containers: Vec<_> = pod
            .containers()
            .filter(|c| c.image() == image)
            .filter(|c| c.program().is_none_or(|p| p == "csi-driver"))
            .collect();
        for c in containers {
            found.push((pod.clone(), c));
        }
    }
    found
}

fn parse_driver_args(where_: &str, container: &Container) -> Config {
    let argv = std::iter::once("csi-driver".to_string())
        .chain(container.command().into_iter().skip(1))
        .chain(container.args());
    Config::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{where_}: csi-driver rejects its args: {e}"))
}

fn flag_names(args: &[String]) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

#[test]
fn driver_containers_pass_only_flags_the_driver_has() {
    let Some(rendered) = rendered() else { return };
    let known: BTreeSet<String> = Config::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    for r in rendered {
        let drivers = driver_containers(&r.docs);
        let modes: Vec<_> = drivers
            .iter()
            .map(|(pod, c)| {
                let where_ = format!("{}: {} container {}", r.target, pod.owner, c.name());
                for flag in flag_names(&c.args()) {
                    assert!(
                        known.contains(&flag),
                        "{where_}: csi-driver has no flag --{flag}"
                    );
                }
                let config = parse_driver_args(&where_, c);
                (pod.kind, config.mode)
            })
            .collect();
        // spec: the controller and the node plugin are separate processes.
        assert!(
            modes.contains(&("StatefulSet", Mode::Controller)),
            "{}: no StatefulSet runs csi-driver --mode=controller: {modes:?}",
            r.target
        );
        assert!(
            modes.contains(&("DaemonSet", Mode::Node)),
            "{}: no DaemonSet runs csi-driver --mode=node: {modes:?}",
            r.target
        );

        for pod in pods(&r.docs) {
            for c in pod
                .containers()
                .filter(|c| c.program().as_deref() == Some("fake-cloud"))
            {
                for flag in flag_names(&c.args()) {
                    assert!(
                        FAKE_CLOUD_FLAGS.contains(&flag.as_str()),
                        "{}: {} container {}: fake-cloud has no flag --{flag}",
                        r.target,
                        pod.owner,
                        c.name()
                    );
                }
            }
        }
    }
}

#[test]
fn sidecars_and_kubelet_find_the_driver_socket() {
    let Some(rendered) = rendered() else { return };
    let plugin_dir = Path::new("/var/lib/kubelet/plugins").join(DEFAULT_DRIVER_NAME);
    for r in rendered {
        for (pod, driver) in driver_containers(&r.docs) {
            let where_ = format!("{}: {}", r.target, pod.owner);
            let config = parse_driver_args(&where_, &driver);
            let socket =
                PathBuf::from(config.endpoint.strip_prefix("unix://").unwrap_or_else(|| {
                    panic!("{where_}: --endpoint {} is not unix://", config.endpoint)
                }));
            let socket_dir = socket.parent().expect("a socket path has a folder");
            let socket_volume = driver.volume_at(socket_dir).unwrap_or_else(|| {
                panic!("{where_}: nothing is mounted at the socket folder {socket_dir:?}")
            });

            let mut sidecars = 0;
            for c in pod.containers().filter(|c| c.name() != driver.name()) {
                let Some(address) = c.flag("csi-address") else {
                    continue;
                };
                sidecars += 1;
                assert_eq!(
                    Path::new(&address),
                    socket,
                    "{where_}: {} dials {address}, the driver listens on {socket:?}",
                    c.name()
                );
                assert_eq!(
                    c.volume_at(socket_dir),
                    Some(socket_volume),
                    "{where_}: {} does not mount volume {socket_volume} at {socket_dir:?}",
                    c.name()
                );
            }
            assert!(
                sidecars > 0,
                "{where_}: no sidecar dials the driver's socket"
            );

            if pod.kind == "DaemonSet" {
                let registrar = pod
                    .containers()
                    .find(|c| c.flag("kubelet-registration-path").is_some())
                    .unwrap_or_else(|| panic!("{where_}: no node-driver-registrar"));
                let registered =
                    PathBuf::from(registrar.flag("kubelet-registration-path").unwrap());
                let host_dir = str_of(&pod.volume(socket_volume)["hostPath"], "path");
                assert!(
                    !host_dir.is_empty(),
                    "{where_}: the socket volume {socket_volume} is not a hostPath"
                );
                let host_socket = Path::new(host_dir).join(socket.file_name().unwrap());
                assert_eq!(
                    registered, host_socket,
                    "{where_}: kubelet is told {registered:?}, the socket is {host_socket:?} on the host"
                );
                assert_eq!(
                    registered.parent(),
                    Some(plugin_dir.as_path()),
                    "{where_}: the socket is outside kubelet's folder for this driver"
                );
            }
        }
    }
}

/// Feature gates that a sidecar of the pinned version no longer has, or soon won't: an
/// unknown gate stops the sidecar at start-up. csi-provisioner's Topology gate is on by
/// default since v5 and slated for removal.
const RETIRED_GATES: &[(&str, &str)] = &[("csi-provisioner", "Topology")];

#[test]
fn sidecars_pass_no_retired_feature_gate() {
    let Some(rendered) = rendered() else { return };
    for r in rendered {
        for pod in pods(&r.docs) {
            for c in pod.containers() {
                let Some(gates) = c.flag("feature-gates") else {
                    continue;
                };
                for (image, gate) in RETIRED_GATES {
                    assert!(
                        !(c.image().contains(image)
                            && gates.split(',').any(|g| g.trim().starts_with(gate))),
                        "{}: {}: {} passes --feature-gates={gates}",
                        r.target,
                        pod.owner,
                        c.name()
                    );
                }
            }
        }
    }
}

#[test]
fn node_plugin_mounts_reach_kubelet() {
    let Some(rendered) = rendered() else { return };
    for r in rendered {
        for (pod, driver) in driver_containers(&r.docs)
            .iter()
            .filter(|(p, _)| p.kind == "DaemonSet")
        {
            // kubelet and the pods see the staging and publish mounts only if they propagate back.
            let kubelet = driver
                .mounts()
                .into_iter()
                .find(|(_, path, _)| *path == "/var/lib/kubelet")
                .unwrap_or_else(|| {
                    panic!(
                        "{}: {}: /var/lib/kubelet is not mounted",
                        r.target, pod.owner
                    )
                });
            assert_eq!(
                kubelet.2, "Bidirectional",
                "{}: {}: /var/lib/kubelet must propagate",
                r.target, pod.owner
            );
            assert!(
                driver.value["securityContext"]["privileged"].as_bool() == Some(true),
                "{}: {}: the node plugin mounts and formats, so it must be privileged",
                r.target,
                pod.owner
            );
        }
    }
}

#[test]
fn csidriver_name_is_what_get_plugin_info_reports() {
    let Some(rendered) = rendered() else { return };
    for r in rendered {
        let names: Vec<&str> = r
            .docs
            .iter()
            .filter(|d| str_of(d, "kind") == "CSIDriver")
            .map(|d| str_of(&d["metadata"], "name"))
            .collect();
        assert_eq!(
            names,
            [DEFAULT_DRIVER_NAME],
            "{}: one CSIDriver, named as the driver reports",
            r.target
        );

        for (pod, c) in driver_containers(&r.docs) {
            let config = parse_driver_args(&pod.owner, &c);
            assert_eq!(
                config.driver_name, DEFAULT_DRIVER_NAME,
                "{}: {} --driver-name",
                r.target, pod.owner
            );
        }
        for doc in &r.docs {
            let driver = match str_of(doc, "kind") {
                "StorageClass" => str_of(doc, "provisioner"),
                "VolumeSnapshotClass" => str_of(doc, "driver"),
                _ => continue,
            };
            assert_eq!(
                driver,
                DEFAULT_DRIVER_NAME,
                "{}: {} names another driver",
                r.target,
                kind_and_name(doc)
            );
        }
    }
}

#[test]
fn files_the_driver_reads_are_mounted() {
    let Some(rendered) = rendered() else { return };
    for r in rendered {
        for (pod, driver) in driver_containers(&r.docs) {
            let where_ = format!("{}: {}", r.target, pod.owner);
            let config = parse_driver_args(&where_, &driver);
            let mounted = |flag: &str, path: &Path| {
                driver
                    .mount_holding(path)
                    .unwrap_or_else(|| {
                        panic!("{where_}: --{flag} {path:?} is in no mounted volume")
                    })
                    .0
            };
            if let Some(path) = &config.token_file {
                let volume = mounted("token-file", path);
                assert!(
                    !pod.volume(volume)["secret"].is_null(),
                    "{where_}: the token must come from a Secret, not volume {volume}"
                );
            }
            if let Some(path) = &config.node_id_file {
                // Something must write the id before the driver starts: an init container.
                let volume = mounted("node-id-file", path);
                let writer = pod
                    .containers()
                    .find(|c| c.init && c.mounts().iter().any(|m| m.0 == volume));
                assert!(
                    writer.is_some(),
                    "{where_}: no init container writes the node id into volume {volume}"
                );
            }
            if let Some(path) = &config.data_dir {
                mounted("data-dir", path);
            }
        }
    }
}

/// `$(NAME)` references kubelet expands, skipping `$$(` escapes and shell `$(command ...)`.
fn env_references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("$(") {
        let escaped = i > 0 && rest.as_bytes()[i - 1] == b'$';
        let after = &rest[i + 2..];
        if let Some(end) = after.find(')') {
            let name = &after[..end];
            let is_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if is_name && !escaped {
                names.push(name.to_string());
            }
        }
        rest = after;
    }
    names
}

#[test]
fn variables_in_commands_and_env_are_defined_before_use() {
    let Some(rendered) = rendered() else { return };
    for r in rendered {
        for pod in pods(&r.docs) {
            for c in pod.containers() {
                let where_ = format!("{}: {} container {}", r.target, pod.owner, c.name());
                // kubelet expands $(NAME) in an env value only from the variables above it.
                let mut defined = Vec::new();
                for var in c.value["env"].as_sequence().into_iter().flatten() {
                    for name in env_references(str_of(var, "value")) {
                        assert!(
                            defined.contains(&name),
                            "{where_}: env {} uses $({name}) before it is defined",
                            str_of(var, "name")
                        );
                    }
                    defined.push(str_of(var, "name").to_string());
                }
                for word in c.command().iter().chain(c.args().iter()) {
                    for name in env_references(word) {
                        assert!(
                            defined.contains(&name),
                            "{where_}: $({name}) is not in the container's env"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn env_references_skip_escapes_and_shell_substitutions() {
    assert_eq!(env_references("--node-id=$(NODE_NAME)"), ["NODE_NAME"]);
    assert_eq!(
        env_references("x $$(NOT_EXPANDED) $(cat /etc/token)"),
        Vec::<String>::new()
    );
}

#[test]
fn manifests_pass_kubernetes_schema_validation() {
    let Some(output) = run("bash", &["deploy/validate.sh"]) else {
        return tool_missing("bash");
    };
    if output.status.code() == Some(EXIT_TOOL_MISSING) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tool = if stderr.contains("kubernetes-validate") {
            "kubernetes-validate"
        } else if stderr.contains("python3") {
            "python3"
        } else {
            "kustomize or kubectl"
        };
        return tool_missing(tool);
    }
    assert!(
        output.status.success(),
        "deploy/validate.sh failed: {}",
        describe(&output)
    );
}

#[test]
fn deploy_scripts_pass_shellcheck() {
    let scripts = [
        "deploy/kind/e2e.sh",
        "deploy/validate.sh",
        "deploy/render.sh",
    ];
    let Some(output) = run("shellcheck", &scripts) else {
        return tool_missing("shellcheck");
    };
    assert!(
        output.status.success(),
        "shellcheck found problems: {}",
        describe(&output)
    );
}

// ---- deploy/kind/testdriver.yaml: the driver, described to Kubernetes' external storage suite ----

const TESTDRIVER: &str = "deploy/kind/testdriver.yaml";

/// The test-driver manifest, with the field names and types the external storage suite
/// reads (kubernetes test/e2e/storage/external: `driverDefinition`). The suite decodes it
/// leniently and drops keys it does not know, silently; here an unknown key is an error.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
#[allow(dead_code)] // every field is read by the suite; a field here accepts its key and type
struct TestDriverDefinition {
    driver_info: DriverInfo,
    storage_class: ClassSource,
    snapshot_class: ClassSource,
    volume_attributes_class: ClassSource,
    inline_volumes: Vec<InlineVolume>,
    client_node_name: String,
    node_selectors: BTreeMap<String, String>,
    timeouts: BTreeMap<String, String>,
}

/// Where the suite gets a class: a bare one named after the driver, a file, or a class
/// installed in the cluster.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
struct ClassSource {
    from_name: bool,
    from_file: String,
    from_existing_class_name: String,
}

impl ClassSource {
    fn sources_given(&self) -> usize {
        [
            self.from_name,
            !self.from_file.is_empty(),
            !self.from_existing_class_name.is_empty(),
        ]
        .into_iter()
        .filter(|&given| given)
        .count()
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
#[allow(dead_code)]
struct InlineVolume {
    attributes: BTreeMap<String, String>,
    shared: bool,
    read_only: bool,
}

/// kubernetes test/e2e/storage/framework: `DriverInfo`, the fields a manifest can set.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
#[allow(dead_code)]
struct DriverInfo {
    name: String,
    in_tree_plugin_name: String,
    max_file_size: i64,
    supported_size_range: SizeRange,
    /// A Go string set: in YAML a map of names to `{}`.
    supported_fs_type: BTreeMap<String, Empty>,
    supported_mount_option: BTreeMap<String, Empty>,
    required_mount_option: BTreeMap<String, Empty>,
    capabilities: BTreeMap<String, bool>,
    required_access_modes: Vec<String>,
    topology_keys: Vec<String>,
    num_allowed_topologies: i64,
    stress_test_options: Option<StressTestOptions>,
    volume_snapshot_stress_test_options: Option<VolumeSnapshotStressTestOptions>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
struct SizeRange {
    min: String,
    max: String,
    /// The growth of the expansion tests (1Gi when empty).
    step: String,
}

/// The value of a member of a Go string set.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
#[allow(dead_code)]
struct StressTestOptions {
    num_pods: i64,
    num_restarts: i64,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
#[allow(dead_code)]
struct VolumeSnapshotStressTestOptions {
    num_pods: i64,
    num_snapshots: i64,
}

/// The capability names the suite knows (storage/framework: the `Cap...` constants). A
/// misspelt one would be a capability nobody tests.
const KNOWN_CAPABILITIES: &[&str] = &[
    "persistence",
    "block",
    "fsGroup",
    "volumeMountGroup",
    "exec",
    "snapshotDataSource",
    "pvcDataSource",
    "offlineSnapshotClone",
    "multipods",
    "RWX",
    "controllerExpansion",
    "nodeExpansion",
    "offlineExpansion",
    "onlineExpansion",
    "volumeLimits",
    "singleNodeVolume",
    "topology",
    "capacity",
    "FSResizeFromSourceNotSupported",
    "readWriteOncePod",
    "multiplePVsSameID",
    "capReadOnlyMany",
    "groupSnapshot",
    "seLinuxMount",
];

fn testdriver() -> TestDriverDefinition {
    let path = repo_root().join(TESTDRIVER);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{TESTDRIVER}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| {
        panic!("{TESTDRIVER} is not what the external storage suite reads: {e}")
    })
}

/// A Kubernetes quantity in bytes: a whole number with an optional binary (Ki … Ei) or
/// decimal (k … E) suffix. None for anything else, fractions included.
fn quantity_bytes(quantity: &str) -> Option<u64> {
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let (digits, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| quantity.strip_suffix(suffix).map(|d| (d, *factor)))
        .unwrap_or((quantity, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

#[test]
fn quantities_parse_as_kubernetes_writes_them() {
    assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
    assert_eq!(quantity_bytes("16Ti"), Some(16 << 40));
    assert_eq!(quantity_bytes("5G"), Some(5_000_000_000));
    assert_eq!(quantity_bytes("1024"), Some(1024));
    for bad in ["", "Gi", "1.5Gi", "1GB", "-1Gi", "1 Gi"] {
        assert_eq!(quantity_bytes(bad), None, "{bad:?}");
    }
}

#[test]
fn testdriver_claims_only_what_the_driver_and_the_suite_know() {
    let def = testdriver();
    let info = &def.driver_info;
    assert_eq!(
        info.name, DEFAULT_DRIVER_NAME,
        "DriverInfo.Name must be the CSIDriver's name, as GetPluginInfo reports it"
    );

    for name in info.capabilities.keys() {
        assert!(
            KNOWN_CAPABILITIES.contains(&name.as_str()),
            "{TESTDRIVER}: the suite knows no capability {name:?}"
        );
    }
    let claims = |cap: &str| info.capabilities.get(cap).copied().unwrap_or(false);

    // Every filesystem the suite will ask for must be one NodeStageVolume formats ("" is
    // the StorageClass's own, which must be one too: see the overlay test).
    assert!(
        !info.supported_fs_type.is_empty(),
        "{TESTDRIVER}: SupportedFsType is empty"
    );
    for fs in info.supported_fs_type.keys() {
        assert!(
            FsType::parse("SupportedFsType", fs).is_ok(),
            "{TESTDRIVER}: the driver does not format {fs:?}"
        );
    }

    // The claim sizes the suite picks from must be sizes the cloud creates.
    let range = &info.supported_size_range;
    let size = |field: &str, quantity: &str| {
        quantity_bytes(quantity).unwrap_or_else(|| {
            panic!("{TESTDRIVER}: SupportedSizeRange.{field} {quantity:?} is not a quantity")
        })
    };
    let (min, max) = (size("Min", &range.min), size("Max", &range.max));
    if !range.step.is_empty() {
        size("Step", &range.step);
    }
    let gib = GIB as u64;
    assert!(
        min >= MIN_VOLUME_GIB * gib && max <= MAX_VOLUME_GIB * gib && min <= max,
        "{TESTDRIVER}: SupportedSizeRange {}..{} is outside the cloud's {MIN_VOLUME_GIB}..{MAX_VOLUME_GIB} GiB",
        range.min,
        range.max
    );

    if claims("topology") {
        assert_eq!(
            info.topology_keys,
            [TOPOLOGY_REGION_KEY],
            "{TESTDRIVER}: TopologyKeys must be the key NodeGetInfo reports"
        );
    }
    assert_eq!(
        def.storage_class.sources_given(),
        1,
        "{TESTDRIVER}: StorageClass needs exactly one source, or no provisioning test runs"
    );
    if claims("snapshotDataSource") {
        assert_eq!(
            def.snapshot_class.sources_given(),
            1,
            "{TESTDRIVER}: snapshotDataSource needs exactly one SnapshotClass source"
        );
    }
    if claims("onlineExpansion") || claims("offlineExpansion") || claims("nodeExpansion") {
        assert!(
            claims("controllerExpansion"),
            "{TESTDRIVER}: expansion claimed without controllerExpansion"
        );
    }
}

#[test]
fn testdriver_capabilities_each_have_their_proof_in_deploy_readme() {
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md"))
        .expect("deploy/README.md is readable");
    for cap in testdriver().driver_info.capabilities.keys() {
        let row = format!("| `{cap}` |");
        assert!(
            readme.lines().any(|line| line.starts_with(&row)),
            "deploy/README.md: the capability table has no row {row}"
        );
    }
}

#[test]
fn testdriver_classes_are_the_fake_cloud_overlays() {
    let Some(rendered) = rendered() else { return };
    let overlay = rendered
        .iter()
        .find(|r| r.target == "overlays/fake-cloud")
        .expect("the fake-cloud overlay is rendered");
    let def = testdriver();
    let info = &def.driver_info;
    let named = |kind: &str, name: &str| {
        overlay
            .docs
            .iter()
            .find(|d| str_of(d, "kind") == kind && str_of(&d["metadata"], "name") == name)
            .unwrap_or_else(|| {
                panic!("{TESTDRIVER}: overlays/fake-cloud installs no {kind} named {name:?}")
            })
    };

    let class = &def.storage_class;
    if !class.from_existing_class_name.is_empty() {
        let sc = named("StorageClass", &class.from_existing_class_name);
        assert_eq!(str_of(sc, "provisioner"), DEFAULT_DRIVER_NAME);
        let fs = str_of(&sc["parameters"], "csi.storage.k8s.io/fstype");
        assert!(
            info.supported_fs_type.contains_key(fs),
            "{TESTDRIVER}: the StorageClass's fstype {fs:?} is not in SupportedFsType"
        );
        if info.capabilities.get("controllerExpansion") == Some(&true) {
            assert_eq!(
                sc["allowVolumeExpansion"].as_bool(),
                Some(true),
                "{TESTDRIVER}: controllerExpansion, but the StorageClass does not allow expansion"
            );
        }
    }
    for file in [&class.from_file, &def.snapshot_class.from_file] {
        assert!(
            file.is_empty() || repo_root().join(file).is_file(),
            "{TESTDRIVER}: {file} does not exist"
        );
    }
    let snapshots = &def.snapshot_class.from_existing_class_name;
    if !snapshots.is_empty() {
        let vsc = named("VolumeSnapshotClass", snapshots);
        assert_eq!(str_of(vsc, "driver"), DEFAULT_DRIVER_NAME);
    }

    if info.capabilities.get("volumeLimits") == Some(&true) {
        // The suite fills a node to the limit NodeGetInfo reports; zero means no limit.
        for (pod, c) in driver_containers(&overlay.docs)
            .iter()
            .filter(|(p, _)| p.kind == "DaemonSet")
        {
            let config = parse_driver_args(&pod.owner, c);
            assert!(
                config.max_volumes_per_node > 0,
                "{TESTDRIVER}: volumeLimits, but {} reports no max_volumes_per_node",
                pod.owner
            );
        }
    }
}

// ---- deploy/kind/e2e.sh --dry-run: the steps, in order, without a cluster ----

/// Runs `e2e.sh --dry-run` with `env` set, where docker, kind and kubectl are stand-ins
/// that record any call; returns the commands it printed (the `+ ` lines).
fn e2e_dry_run(env: &[(&str, &str)]) -> Vec<String> {
    let fakes = tempfile::tempdir().expect("a temporary folder");
    let calls = fakes.path().join("calls");
    for tool in ["docker", "kind", "kubectl"] {
        let path = fakes.path().join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit 97\n",
                calls.display()
            ),
        )
        .expect("write a stand-in");
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).expect("make a stand-in executable");
    }
    let path = format!(
        "{}:{}",
        fakes.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["deploy/kind/e2e.sh", "--dry-run"])
        .current_dir(repo_root())
        .env("PATH", path)
        .stdin(Stdio::null());
    for var in [
        "KEEP_CLUSTER",
        "KIND_CLUSTER",
        "KIND_NODE_IMAGE",
        "ARTIFACTS",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("bash runs");
    assert!(
        output.status.success(),
        "e2e.sh --dry-run failed: {}",
        describe(&output)
    );
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        called.is_empty(),
        "e2e.sh --dry-run ran commands it should only print:\n{called}"
    );
    String::from_utf8(output.stdout)
        .expect("e2e.sh prints UTF-8")
        .lines()
        .filter_map(|line| line.strip_prefix("+ "))
        .map(str::to_string)
        .collect()
}

/// Index of the first command that `matches`; panics naming `what` when there is none.
fn first(commands: &[String], what: &str, matches: impl Fn(&str) -> bool) -> usize {
    commands.iter().position(|c| matches(c)).unwrap_or_else(|| {
        panic!(
            "e2e.sh --dry-run never runs {what}:\n{}",
            commands.join("\n")
        )
    })
}

#[test]
fn e2e_dry_run_prints_the_steps_in_an_order_that_works() {
    let commands = e2e_dry_run(&[]);
    let before = |a: usize, what_a: &str, b: usize, what_b: &str| {
        assert!(
            a < b,
            "e2e.sh runs {what_b} before {what_a}:\n{}",
            commands.join("\n")
        );
    };

    let trap = first(&commands, "trap cleanup EXIT", |c| c == "trap cleanup EXIT");
    let create = first(&commands, "kind create cluster", |c| {
        c.starts_with("kind create cluster")
    });
    let load = first(&commands, "kind load docker-image", |c| {
        c.starts_with("kind load docker-image")
    });
    before(trap, "the cleanup trap", create, "kind create cluster");
    before(create, "kind create cluster", load, "kind load");
    assert!(
        commands[create].contains("--config ")
            && commands[create].contains("/deploy/kind/cluster.yaml"),
        "the cluster is not made from deploy/kind/cluster.yaml: {}",
        commands[create]
    );
    for target in ["driver", "sanity"] {
        let build = first(&commands, &format!("the {target} image build"), |c| {
            c.starts_with("docker build") && c.contains(&format!("--target {target} "))
        });
        before(
            build,
            &format!("the {target} image build"),
            load,
            "kind load",
        );
    }

    let crds = first(&commands, "the snapshot CRDs", |c| {
        c.starts_with("kubectl apply -k") && c.contains("external-snapshotter/client/config/crd")
    });
    let controller = first(&commands, "the snapshot-controller", |c| {
        c.contains("apply -k")
            && c.contains("external-snapshotter/deploy/kubernetes/snapshot-controller")
    });
    let controller_ready = first(&commands, "the snapshot-controller rollout", |c| {
        c.contains("rollout status deployment/snapshot-controller")
    });
    let overlay = first(&commands, "the fake-cloud overlay", |c| {
        c.starts_with("kubectl apply -k") && c.ends_with("/deploy/kubernetes/overlays/fake-cloud")
    });
    before(load, "kind load", crds, "the snapshot CRDs");
    before(crds, "the snapshot CRDs", overlay, "the overlay");
    before(
        controller,
        "the snapshot-controller",
        overlay,
        "the overlay",
    );
    before(
        controller_ready,
        "the snapshot-controller rollout",
        overlay,
        "the overlay",
    );
    let snapshot = first(&commands, "the first VolumeSnapshot wait", |c| {
        c.contains("wait volumesnapshot/")
    });
    before(overlay, "the overlay", snapshot, "the snapshot check");

    // Pass or fail, the cluster goes at the end: after the last command that needs it.
    let delete = first(&commands, "kind delete cluster", |c| {
        c.starts_with("kind delete cluster")
    });
    let last_use = commands
        .iter()
        .rposition(|c| c.starts_with("kubectl"))
        .expect("e2e.sh runs kubectl");
    before(
        last_use,
        "the last kubectl command",
        delete,
        "kind delete cluster",
    );
}

#[test]
fn e2e_dry_run_follows_keep_cluster_node_image_and_artifacts() {
    let commands = e2e_dry_run(&[
        ("KEEP_CLUSTER", "1"),
        ("KIND_CLUSTER", "other"),
        ("KIND_NODE_IMAGE", "kindest/node:v9.9.9"),
        ("ARTIFACTS", "/tmp/reports"),
    ]);
    let create = first(&commands, "kind create cluster", |c| {
        c.starts_with("kind create cluster")
    });
    assert!(
        commands[create].contains("--name other")
            && commands[create].contains("--image kindest/node:v9.9.9"),
        "KIND_CLUSTER or KIND_NODE_IMAGE ignored: {}",
        commands[create]
    );
    assert!(
        !commands
            .iter()
            .any(|c| c.starts_with("kind delete cluster")),
        "KEEP_CLUSTER=1, yet the cluster is deleted"
    );
    let logs = first(&commands, "the csi-sanity logs", |c| {
        c.contains("logs job/csi-sanity")
    });
    let junit = first(&commands, "the csi-sanity JUnit copy", |c| {
        c.starts_with("docker cp ") && c.ends_with(" /tmp/reports/csi-sanity.xml")
    });
    assert!(
        logs < junit,
        "the JUnit report is copied before csi-sanity ran"
    );
}

// ---- .github/workflows ----

const WORKFLOWS: &str = ".github/workflows";

fn workflow_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join(WORKFLOWS))
        .unwrap_or_else(|e| panic!("{WORKFLOWS}: {e}"))
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| format!("{WORKFLOWS}/{}", name.to_string_lossy()))
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn workflows_pass_actionlint() {
    let files = workflow_files();
    for expected in ["ci.yaml", "e2e.yaml", "release.yaml"] {
        assert!(
            files.contains(&format!("{WORKFLOWS}/{expected}")),
            "{WORKFLOWS}/{expected} is missing: {files:?}"
        );
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let Some(output) = run("actionlint", &args) else {
        return tool_missing("actionlint");
    };
    assert!(
        output.status.success(),
        "actionlint found problems: {}",
        describe(&output)
    );
}

#[test]
fn e2e_workflow_pins_one_kubernetes_release_in_one_place() {
    let path = format!("{WORKFLOWS}/e2e.yaml");
    let text = std::fs::read_to_string(repo_root().join(&path)).expect("e2e.yaml is readable");
    let workflow: Value = serde_yaml::from_str(&text).expect("e2e.yaml is YAML");
    let env = &workflow["env"];
    let pinned = |key: &str| {
        let value = str_of(env, key);
        assert!(!value.is_empty(), "{path}: env.{key} is not set");
        value
    };
    let kubernetes = pinned("KUBERNETES_VERSION");
    assert!(
        pinned("KIND_VERSION").starts_with('v') && kubernetes.starts_with('v'),
        "{path}: versions are tags like v1.2.3"
    );
    // kind runs the node image only if it was built for that kind release: its notes give
    // each image by digest, so the digest is the pin. e2e.test and kubectl come from the
    // Kubernetes release the node runs.
    let node_image = pinned("KIND_NODE_IMAGE");
    assert!(
        node_image.starts_with(&format!("kindest/node:{kubernetes}@sha256:")),
        "{path}: KIND_NODE_IMAGE {node_image} is not kindest/node:{kubernetes}@sha256:…"
    );
    // One place: no job or step sets these again, and no other line names a version.
    for key in ["KIND_VERSION", "KUBERNETES_VERSION", "KIND_NODE_IMAGE"] {
        assert_eq!(
            text.matches(&format!("{key}:")).count(),
            1,
            "{path}: {key} is set in more than one place"
        );
    }
    assert_eq!(
        text.matches("kindest/node:").count(),
        1,
        "{path}: a node image is named outside env"
    );
    assert!(
        text.contains(&format!(
            "-storage.testdriver=\"$GITHUB_WORKSPACE/{TESTDRIVER}\""
        )),
        "{path}: the external suite is not given {TESTDRIVER}"
    );
    // deploy/README.md repeats the pins in the commands for a local run.
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md"))
        .expect("deploy/README.md is readable");
    for pin in [
        format!("KUBERNETES_VERSION={kubernetes}"),
        format!("KIND_NODE_IMAGE={node_image}"),
        format!("kind {}", pinned("KIND_VERSION")),
    ] {
        assert!(
            readme.contains(&pin),
            "deploy/README.md: the local commands do not use {pin}, as {path} pins"
        );
    }
}
