//! The Kubernetes manifests in deploy/ against the driver they deploy.
//!
//! Renders the kustomize base and overlays (deploy/render.sh: kustomize or
//! kubectl) and checks what would otherwise only fail in a cluster: a flag the
//! driver does not have, a socket the sidecars look for in the wrong place, a
//! CSIDriver name GetPluginInfo does not report, a file the driver reads from
//! a folder nobody mounted. It also runs deploy/validate.sh (schemas) and
//! shellcheck on the deploy scripts.
//!
//! A missing external tool skips its test with "skipped: <tool> not installed",
//! unless $CI is set: there a missing tool fails the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use clap::{CommandFactory, Parser};
use csi_driver::config::{Config, Mode, DEFAULT_DRIVER_NAME};
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
    println!("skipped: {tool} not installed");
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
