//! Security properties of the driver binary and of fake-cloud, checked from outside:
//!
//! - hostile staging and target paths (`..`, symlinks out, `/proc`, `/`, overlong, NUL)
//!   and hostile device links are refused, and a canary directory beside them is left
//!   exactly as it was, with nothing mounted on it;
//! - neither the cloud token nor any CSI secret reaches the logs, even at trace level;
//! - the CSI socket gives no access to others, whatever the umask;
//! - fake-cloud refuses every request that lacks the right bearer token.
//!
//! As root the driver runs in a private mount namespace (`unshare`), so a mount a bug
//! makes dies with the driver; the path checks then also run against a really staged
//! volume. Without root the node cannot mount: those parts print "skipped: needs root".

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::{access_mode, AccessMode, AccessType, MountVolume};
use csi_proto::v1::*;
use tonic::transport::Channel;
use tonic::Code;

const DRIVER: &str = env!("CARGO_BIN_EXE_csi-driver");

/// Generous bound for anything the tests wait for (slow CI machines).
const PATIENCE: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have_unshare() -> bool {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A driver process with its stderr captured to a file (a pipe nobody reads would block
/// a driver that logs at trace level).
struct DriverProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl DriverProcess {
    /// Start the driver binary with `args` (the endpoint is added), in a private mount
    /// namespace when root, with `env` and the given umask.
    fn spawn(dir: &Path, args: &[String], env: &[(&str, &str)], umask: Option<u32>) -> Self {
        Self::spawn_at(
            dir.join("csi.sock"),
            dir.join("driver.log"),
            args,
            env,
            umask,
        )
    }

    /// Like [`DriverProcess::spawn`], with the socket and the log file named.
    fn spawn_at(
        socket: PathBuf,
        log: PathBuf,
        args: &[String],
        env: &[(&str, &str)],
        umask: Option<u32>,
    ) -> Self {
        let mut cmd = if is_root() && have_unshare() {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", DRIVER]);
            c
        } else {
            Command::new(DRIVER)
        };
        cmd.arg(format!("--endpoint=unix://{}", socket.display()))
            .args(args)
            .env_remove("DIGITALOCEAN_ACCESS_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the driver log"));
        if let Some(mask) = umask {
            // SAFETY: umask is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("the driver binary starts");
        DriverProcess { child, socket, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until the driver answers Probe on its socket, and return the channel.
    async fn channel(&mut self) -> Channel {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on the driver") {
                panic!("the driver exited with {status}:\n{}", self.logs());
            }
            if self.socket.exists() {
                let endpoint = tonic::transport::Endpoint::from_shared(format!(
                    "unix://{}",
                    self.socket.display()
                ))
                .expect("a valid endpoint")
                .timeout(PATIENCE);
                if let Ok(channel) = endpoint.connect().await {
                    let probe = IdentityClient::new(channel.clone())
                        .probe(ProbeRequest {})
                        .await;
                    if probe.is_ok() {
                        return channel;
                    }
                }
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the driver never answered Probe on {}:\n{}",
                self.socket.display(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait (bounded), and return everything the driver logged.
    fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > PATIENCE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.logs()
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

/// Everything observable about a directory tree, to compare before and after.
fn snapshot_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let meta = std::fs::symlink_metadata(path).expect("canary entries stay readable");
        let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
        let kind = meta.file_type();
        let mut what = format!(
            "mode={:o} uid={} size={} mtime={}.{} ino={}",
            meta.mode(),
            meta.uid(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        );
        if kind.is_file() {
            let bytes = std::fs::read(path).unwrap_or_default();
            what.push_str(&format!(" content={:?}", String::from_utf8_lossy(&bytes)));
        } else if kind.is_symlink() {
            what.push_str(&format!(" link={:?}", std::fs::read_link(path).ok()));
        } else if kind.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .expect("canary directories stay listable")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for entry in entries {
                walk(root, &entry, out);
            }
        }
        out.insert(rel, what);
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Mount points (field 5 of mountinfo, unescaped) of a process.
fn mount_points(pid: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| {
            let mut out = Vec::new();
            let bytes = escaped.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'\\' && i + 3 < bytes.len() {
                    if let Ok(v) = u8::from_str_radix(&escaped[i + 1..i + 4], 8) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
                out.push(bytes[i]);
                i += 1;
            }
            PathBuf::from(String::from_utf8_lossy(&out).into_owned())
        })
        .collect()
}

/// Loop devices whose backing file is under `dir`.
fn loop_devices_backed_by(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            if Path::new(file.trim()).starts_with(dir) {
                found.push(format!(
                    "{} -> {}",
                    entry.file_name().to_string_lossy(),
                    file.trim()
                ));
            }
        }
    }
    found
}

/// A refusal must be a deliberate gRPC answer, not success and not a server fault.
fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(ok) => panic!("{what}: accepted ({ok:?}); a hostile path must be refused"),
        Err(status) => {
            let code = status.code();
            assert!(
                matches!(
                    code,
                    Code::InvalidArgument
                        | Code::FailedPrecondition
                        | Code::NotFound
                        | Code::AlreadyExists
                        | Code::PermissionDenied
                        | Code::OutOfRange
                ),
                "{what}: refused with {code:?} ({}); expected a client-error code",
                status.message()
            );
            code
        }
    }
}

/// The hostile values for a staging or target path, by name. `base` is a scratch
/// directory holding `canary/`, `work/` and the links.
fn hostile_paths(base: &Path) -> Vec<(&'static str, String)> {
    let b = base.display();
    vec![
        ("dot-dot into the canary", format!("{b}/work/../canary")),
        (
            "dot-dot climbing to /",
            format!("{b}/work/../../../../../../..{b}/canary"),
        ),
        ("trailing dot-dot", format!("{b}/work/target/..")),
        ("dot component", format!("{b}/work/./target")),
        ("final symlink to the canary", format!("{b}/link-to-canary")),
        ("final symlink to /", format!("{b}/link-to-root")),
        (
            "parent symlink into /proc",
            format!("{b}/link-to-proc/target"),
        ),
        ("/proc", "/proc".into()),
        ("/proc/self/root", format!("/proc/self/root{b}/canary")),
        ("/sys", "/sys/kernel".into()),
        ("/", "/".into()),
        ("many slashes", "////".into()),
        ("/dev", "/dev".into()),
        ("relative", "canary".into()),
        ("dot-relative", "./canary".into()),
        ("NUL byte", format!("{b}/work/target\0{b}/canary")),
        ("overlong (8 KiB)", format!("{b}/work/{}", "a".repeat(8192))),
        (
            "overlong by components",
            format!("{b}/work{}", "/abcdefgh".repeat(600)),
        ),
    ]
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("csi-security-")
            .tempdir()
            .expect("a scratch directory");
        let base = dir.path();
        for sub in ["data", "by-id", "work", "canary/sub"] {
            std::fs::create_dir_all(base.join(sub)).unwrap();
        }
        std::fs::write(base.join("canary/keep.txt"), b"do not touch").unwrap();
        std::fs::write(base.join("canary/sub/inner.txt"), b"nor this").unwrap();
        std::os::unix::fs::symlink(base.join("canary"), base.join("link-to-canary")).unwrap();
        std::os::unix::fs::symlink("/", base.join("link-to-root")).unwrap();
        std::os::unix::fs::symlink("/proc/self", base.join("link-to-proc")).unwrap();
        Scratch { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn canary(&self) -> PathBuf {
        self.path().join("canary")
    }
}

fn driver_args(scratch: &Scratch) -> Vec<String> {
    vec![
        format!("--data-dir={}", scratch.path().join("data").display()),
        format!("--device-dir={}", scratch.path().join("by-id").display()),
        "--log-level=warn".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_are_refused_and_nothing_outside_them_is_touched() {
    let scratch = Scratch::new();
    let base = scratch.path().to_path_buf();
    let before = snapshot_tree(&scratch.canary());
    let mut driver = DriverProcess::spawn(&base, &driver_args(&scratch), &[], None);
    let channel = driver.channel().await;
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel);

    let node_id = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .expect("NodeGetInfo")
        .into_inner()
        .node_id;
    let volume = controller
        .create_volume(CreateVolumeRequest {
            name: "security-canary-test".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability()],
            ..Default::default()
        })
        .await
        .expect("CreateVolume of a plain 1 GiB volume")
        .into_inner()
        .volume
        .expect("a created volume");
    let volume_id = volume.volume_id.clone();
    let publish_context = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: volume_id.clone(),
            node_id: node_id.clone(),
            volume_capability: Some(mount_capability()),
            ..Default::default()
        })
        .await
        .expect("ControllerPublishVolume to this node")
        .into_inner()
        .publish_context;

    // As root, stage the volume for real first, so every hostile call below meets a node
    // that has a live mount it could misuse.
    let staging = base.join("work/staging");
    std::fs::create_dir_all(&staging).unwrap();
    let staged = if is_root() {
        node.node_stage_volume(NodeStageVolumeRequest {
            volume_id: volume_id.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(mount_capability()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "NodeStageVolume of a good path failed: {e:?}\n{}",
                driver.logs()
            )
        });
        true
    } else {
        println!("skipped: needs root (hostile paths are checked against an unstaged volume only)");
        false
    };

    let mut table = Vec::new();
    for (name, path) in hostile_paths(&base) {
        let stage = node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: path.clone(),
                volume_capability: Some(mount_capability()),
                ..Default::default()
            })
            .await;
        let stage = assert_refused(&format!("NodeStageVolume at {name}"), stage);
        let publish = node
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: staging.display().to_string(),
                target_path: path.clone(),
                volume_capability: Some(mount_capability()),
                ..Default::default()
            })
            .await;
        let publish = assert_refused(&format!("NodePublishVolume at {name}"), publish);
        let stats = node
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: volume_id.clone(),
                volume_path: path.clone(),
                staging_target_path: String::new(),
            })
            .await;
        let stats = assert_refused(&format!("NodeGetVolumeStats at {name}"), stats);
        let expand = node
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: volume_id.clone(),
                volume_path: path.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 2 << 30,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await;
        let expand = assert_refused(&format!("NodeExpandVolume at {name}"), expand);
        // Undoing at a hostile path may answer OK (nothing of ours is there) or refuse;
        // either way it must not reach past the path.
        let unpublish = node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: path.clone(),
            })
            .await
            .map(|_| Code::Ok)
            .unwrap_or_else(|s| s.code());
        let unstage = node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: path.clone(),
            })
            .await
            .map(|_| Code::Ok)
            .unwrap_or_else(|s| s.code());
        for (rpc, code) in [
            ("NodeUnpublishVolume", unpublish),
            ("NodeUnstageVolume", unstage),
        ] {
            assert!(
                !matches!(
                    code,
                    Code::Unknown | Code::Unimplemented | Code::Unavailable
                ),
                "{rpc} at {name}: {code:?} is not a deliberate answer"
            );
        }
        table.push(format!(
            "{name:<32} stage={stage:?} publish={publish:?} stats={stats:?} expand={expand:?} \
             unpublish={unpublish:?} unstage={unstage:?}"
        ));
    }

    // Undoing at the canary itself, a plain directory with files in it that is not a
    // mount, must leave its contents alone.
    let _ = node
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            target_path: scratch.canary().display().to_string(),
        })
        .await;
    let _ = node
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: scratch.canary().display().to_string(),
        })
        .await;

    // A device link from the publish context names a file under --device-dir; one that
    // climbs out of it, or is absolute, must never be attached or mounted.
    let mut hostile_contexts = Vec::new();
    for link in [
        "../canary/keep.txt".to_string(),
        format!("{}/canary/keep.txt", base.display()),
        "../../../../../../etc/passwd".to_string(),
    ] {
        let mut context = publish_context.clone();
        let mut replaced = false;
        for value in context.values_mut() {
            *value = link.clone();
            replaced = true;
        }
        if !replaced {
            context.insert("device-link".into(), link.clone());
        }
        hostile_contexts.push((link, context));
    }
    for (link, context) in hostile_contexts {
        let other = base.join("work/staging-2");
        std::fs::create_dir_all(&other).unwrap();
        let result = node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: context,
                staging_target_path: other.display().to_string(),
                volume_capability: Some(mount_capability()),
                ..Default::default()
            })
            .await;
        let code = assert_refused(
            &format!("NodeStageVolume with device link {link:?}"),
            result,
        );
        table.push(format!(
            "{:<32} stage={code:?}",
            format!("device link {link}")
        ));
    }
    for (name, volume_id) in [
        ("volume id climbing out", "../../canary/keep.txt"),
        ("absolute volume id", "/etc/passwd"),
    ] {
        let other = base.join("work/staging-3");
        std::fs::create_dir_all(&other).unwrap();
        let result = node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume_id.into(),
                publish_context: publish_context.clone(),
                staging_target_path: other.display().to_string(),
                volume_capability: Some(mount_capability()),
                ..Default::default()
            })
            .await;
        let code = assert_refused(&format!("NodeStageVolume with {name}"), result);
        table.push(format!("{name:<32} stage={code:?}"));
    }
    println!("hostile input -> answers:\n  {}", table.join("\n  "));

    // Nothing outside: the canary is byte-for-byte the same, nothing is mounted on or
    // under it in the driver's namespace or ours, no loop device is backed by it.
    assert_eq!(
        snapshot_tree(&scratch.canary()),
        before,
        "the canary directory changed"
    );
    let canary = scratch.canary();
    for pid in [driver.pid().to_string(), "self".to_string()] {
        let on_canary: Vec<PathBuf> = mount_points(&pid)
            .into_iter()
            .filter(|m| m.starts_with(&canary))
            .collect();
        assert!(
            on_canary.is_empty(),
            "mounted on the canary ({pid}): {on_canary:?}"
        );
    }
    let loops = loop_devices_backed_by(&canary);
    assert!(
        loops.is_empty(),
        "loop devices backed by canary files: {loops:?}"
    );
    assert!(std::fs::read_link(base.join("link-to-canary")).is_ok());

    if staged {
        let driver_mounts = mount_points(&driver.pid().to_string());
        assert!(
            driver_mounts.iter().any(|m| m == &staging),
            "the good staging mount survived the hostile calls: {driver_mounts:?}"
        );
        node.node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("NodeUnstageVolume of the good path");
    }
    controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            node_id,
            ..Default::default()
        })
        .await
        .expect("ControllerUnpublishVolume");
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id,
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
    driver.stop();
    let loops = loop_devices_backed_by(scratch.path());
    assert!(loops.is_empty(), "loop devices left behind: {loops:?}");
}

/// The secret values the calls carry; none may appear in a log line.
fn secrets(tag: &str) -> HashMap<String, String> {
    [
        ("password".to_string(), format!("pw-{tag}-Zq9vX2")),
        ("api-key".to_string(), format!("key-{tag}-Lm4tR8")),
        (
            "csi.storage.k8s.io/x".to_string(),
            format!("opaque-{tag}-Hh7w"),
        ),
    ]
    .into()
}

/// Every RPC that carries secrets, once with a valid request and once without a name or
/// id, so both the success and the failure paths log.
async fn calls_with_secrets(channel: Channel, node_id: &str, tag: &str) {
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel);
    let s = || secrets(tag);
    let created = controller
        .create_volume(CreateVolumeRequest {
            name: format!("secrets-{tag}"),
            volume_capabilities: vec![mount_capability()],
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            secrets: s(),
            parameters: [("p".to_string(), "v".to_string())].into(),
            ..Default::default()
        })
        .await;
    let volume_id = created
        .ok()
        .and_then(|r| r.into_inner().volume)
        .map(|v| v.volume_id)
        .unwrap_or_else(|| "no-such-volume".into());
    let _ = controller
        .create_volume(CreateVolumeRequest {
            secrets: s(),
            ..Default::default()
        })
        .await;
    let published = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: volume_id.clone(),
            node_id: node_id.into(),
            volume_capability: Some(mount_capability()),
            secrets: s(),
            ..Default::default()
        })
        .await;
    let publish_context = published
        .map(|r| r.into_inner().publish_context)
        .unwrap_or_default();
    let _ = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: volume_id.clone(),
            node_id: "999999".into(),
            volume_capability: Some(mount_capability()),
            secrets: s(),
            ..Default::default()
        })
        .await;
    let _ = controller
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: volume_id.clone(),
            volume_capabilities: vec![mount_capability()],
            secrets: s(),
            ..Default::default()
        })
        .await;
    let _ = controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 << 30,
                limit_bytes: 0,
            }),
            secrets: s(),
            volume_capability: Some(mount_capability()),
        })
        .await;
    let _ = controller
        .controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: volume_id.clone(),
            secrets: s(),
            mutable_parameters: [("iops".to_string(), "nonsense".to_string())].into(),
        })
        .await;
    let snapshot = controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: volume_id.clone(),
            name: format!("snap-{tag}"),
            secrets: s(),
            parameters: HashMap::new(),
        })
        .await;
    let _ = controller
        .create_snapshot(CreateSnapshotRequest {
            secrets: s(),
            ..Default::default()
        })
        .await;
    let _ = controller
        .list_snapshots(ListSnapshotsRequest {
            secrets: s(),
            starting_token: "not-a-token".into(),
            ..Default::default()
        })
        .await;
    if let Some(snap) = snapshot.ok().and_then(|r| r.into_inner().snapshot) {
        let _ = controller
            .get_snapshot(GetSnapshotRequest {
                snapshot_id: snap.snapshot_id.clone(),
                secrets: s(),
            })
            .await;
        let _ = controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snap.snapshot_id,
                secrets: s(),
            })
            .await;
    }
    let _ = controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: String::new(),
            secrets: s(),
        })
        .await;
    // Staging at a path that cannot be used fails on every machine, and is logged.
    let _ = node
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: volume_id.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: "/proc/no-such-dir".into(),
            volume_capability: Some(mount_capability()),
            secrets: s(),
            volume_context: HashMap::new(),
        })
        .await;
    let _ = node
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: volume_id.clone(),
            publish_context,
            staging_target_path: "/proc/no-such-dir".into(),
            target_path: "relative/target".into(),
            volume_capability: Some(mount_capability()),
            secrets: s(),
            ..Default::default()
        })
        .await;
    let _ = node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: volume_id.clone(),
            volume_path: String::new(),
            secrets: s(),
            ..Default::default()
        })
        .await;
    let _ = controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            node_id: node_id.into(),
            secrets: s(),
        })
        .await;
    let _ = controller
        .delete_volume(DeleteVolumeRequest {
            volume_id,
            secrets: s(),
        })
        .await;
    let _ = controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: String::new(),
            secrets: s(),
        })
        .await;
}

fn assert_nothing_secret(logs: &str, token: &str, tag: &str) {
    let mut leaked: Vec<String> = Vec::new();
    if logs.contains(token) {
        leaked.push("the API token".into());
    }
    for value in secrets(tag).values() {
        if logs.contains(value.as_str()) {
            leaked.push(format!("the secret {value:?}"));
        }
    }
    if !leaked.is_empty() {
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(token) || secrets(tag).values().any(|v| l.contains(v.as_str())))
            .take(5)
            .collect();
        panic!(
            "{} reached the logs:\n{}",
            leaked.join(", "),
            lines.join("\n")
        );
    }
}

/// The driver against a fake-cloud server with a token, the token given the way `how`
/// says, every secret-carrying RPC made; returns the driver's stderr.
async fn run_with_token(how: &str, token: &str, server_token: &str, tag: &str) -> String {
    let scratch = Scratch::new();
    let cloud = fake_cloud::Cloud::open(fake_cloud::CloudConfig {
        droplets: vec![(1, "nyc3".into())],
        faults: fake_cloud::Faults::none(),
        data_dir: Some(scratch.path().join("data")),
        ..fake_cloud::CloudConfig::default()
    })
    .expect("fake-cloud opens");
    let server = fake_cloud::server::spawn(cloud, server_token.to_string())
        .await
        .expect("fake-cloud serves");
    let mut args = driver_args(&scratch);
    args.retain(|a| !a.starts_with("--log-level"));
    args.extend([
        "--cloud=http".to_string(),
        format!("--cloud-url={}", server.base_url()),
        "--node-id=1".to_string(),
        "--cloud-timeout=5s".to_string(),
        "--log-level=trace".to_string(),
        "--log-format=json".to_string(),
    ]);
    let token_file = scratch.path().join("token");
    let mut env = Vec::new();
    match how {
        "env" => env.push(("DIGITALOCEAN_ACCESS_TOKEN", token)),
        "file" => {
            std::fs::write(&token_file, format!("{token}\n")).unwrap();
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            args.push(format!("--token-file={}", token_file.display()));
        }
        other => unreachable!("token source {other}"),
    }
    let mut driver = DriverProcess::spawn(scratch.path(), &args, &env, None);
    if token == server_token {
        let channel = driver.channel().await;
        calls_with_secrets(channel, "1", tag).await;
    } else {
        // A refused token: the driver may refuse to start, or serve and fail Probe;
        // either way it says so without echoing the token.
        let start = Instant::now();
        while !driver.socket.exists()
            && driver.child.try_wait().ok().flatten().is_none()
            && start.elapsed() < PATIENCE
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let endpoint = format!("unix://{}", driver.socket.display());
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint)
            .unwrap()
            .connect()
            .await
        {
            let probe = IdentityClient::new(channel.clone())
                .probe(ProbeRequest {})
                .await;
            assert!(
                probe.is_err(),
                "Probe succeeded with a token the cloud refuses"
            );
            calls_with_secrets(channel, "1", tag).await;
        }
    }
    driver.stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_csi_secrets_never_reach_the_logs() {
    let token = format!("dop_v1_{}", uuid::Uuid::new_v4().simple());
    let logs = run_with_token("env", &token, &token, "env").await;
    assert!(
        logs.lines().count() > 10
            && ["CreateVolume", "ControllerPublishVolume", "NodeStageVolume"]
                .iter()
                .all(|rpc| logs.contains(rpc)),
        "the driver logged too little for the check to mean anything:\n{logs}"
    );
    assert!(
        logs.contains("TRACE") || logs.contains("\"level\":\"trace\""),
        "the driver did not log at trace level"
    );
    assert_nothing_secret(&logs, &token, "env");

    let token = format!("dop_v1_{}", uuid::Uuid::new_v4().simple());
    let logs = run_with_token("file", &token, &token, "file").await;
    assert_nothing_secret(&logs, &token, "file");

    // A token the cloud refuses is just as secret.
    let wrong = format!("dop_v1_{}", uuid::Uuid::new_v4().simple());
    let logs = run_with_token("env", &wrong, "the-real-token", "wrong").await;
    assert_nothing_secret(&logs, &wrong, "wrong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_gives_others_no_access_whatever_the_umask() {
    let scratch = Scratch::new();
    // A socket in a directory the driver creates itself, under the loosest umask.
    let nested = scratch.path().join("plugins/dobs");
    let mut driver = DriverProcess::spawn(scratch.path(), &driver_args(&scratch), &[], Some(0));
    let _ = driver.channel().await;
    let mode = std::fs::metadata(&driver.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o007,
        0,
        "others can reach the socket: mode {mode:o}"
    );
    driver.stop();

    let mut driver = DriverProcess::spawn_at(
        nested.join("csi.sock"),
        scratch.path().join("driver-2.log"),
        &driver_args(&scratch),
        &[],
        Some(0),
    );
    let _ = driver.channel().await;
    let mode = std::fs::metadata(nested.join("csi.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o007,
        0,
        "others can reach the socket: mode {mode:o}"
    );
    driver.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_cloud_answers_401_without_the_right_bearer_token() {
    let token = "the-right-token";
    let cloud = fake_cloud::Cloud::new(fake_cloud::CloudConfig {
        droplets: vec![(1, "nyc3".into())],
        faults: fake_cloud::Faults::none(),
        ..fake_cloud::CloudConfig::default()
    });
    let server = fake_cloud::server::spawn(cloud, token.into())
        .await
        .expect("fake-cloud serves");
    let base = server.base_url();
    let http = reqwest::Client::new();
    let create_body = serde_json::json!({"name": "stolen", "region": "nyc3", "size_gigabytes": 1});
    let faults_body = serde_json::json!({"error_rate_5xx": 1.0});
    let wrong_headers: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("bare token", Some(token.into())),
        ("empty bearer", Some("Bearer ".into())),
        ("wrong token", Some("Bearer not-the-token".into())),
        ("prefix of the token", Some("Bearer the-right".into())),
        ("token plus suffix", Some(format!("Bearer {token}x"))),
        ("basic scheme", Some(format!("Basic {token}"))),
        ("two tokens", Some(format!("Bearer x, Bearer {token}"))),
    ];
    let requests: Vec<(reqwest::Method, &str, Option<&serde_json::Value>)> = vec![
        (reqwest::Method::GET, "/v2/volumes", None),
        (reqwest::Method::POST, "/v2/volumes", Some(&create_body)),
        (reqwest::Method::GET, "/v2/account", None),
        (reqwest::Method::DELETE, "/v2/volumes/anything", None),
        (reqwest::Method::GET, "/v2/droplets/1", None),
        (reqwest::Method::GET, "/v2/no-such-route", None),
        (reqwest::Method::GET, "/admin/faults", None),
        (reqwest::Method::PUT, "/admin/faults", Some(&faults_body)),
    ];
    for (what, header) in &wrong_headers {
        for (method, path, body) in &requests {
            let mut request = http.request(method.clone(), format!("{base}{path}"));
            if let Some(value) = header {
                request = request.header("authorization", value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.expect("fake-cloud answers");
            assert_eq!(
                response.status(),
                401,
                "{method} {path} with {what}: expected 401"
            );
            let text = response.text().await.unwrap_or_default();
            assert!(!text.contains(token), "a 401 body echoes the token: {text}");
        }
    }
    // Nothing the refused requests asked for happened.
    let auth = format!("Bearer {token}");
    let volumes: serde_json::Value = http
        .get(format!("{base}/v2/volumes"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        volumes["meta"]["total"], 0,
        "a refused create made a volume"
    );
    let faults: serde_json::Value = http
        .get(format!("{base}/admin/faults"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        faults["error_rate_5xx"], 0.0,
        "a refused PUT changed the faults"
    );
    let created = http
        .post(format!("{base}/v2/volumes"))
        .header("authorization", &auth)
        .json(&create_body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "the right token works");
}
