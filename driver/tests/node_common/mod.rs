//! The fixture of the node tests: a driver serving Node over a unix socket in a temporary
//! directory (loop device source), volume images, requests, and the check that nothing
//! (mount, loop device, device link) is left behind.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use csi_driver::config::{self, Config};
use csi_driver::mount::mountinfo::MountTable;
use csi_driver::RunningDriver;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::v1::*;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub const MIB: u64 = 1 << 20;

/// One test's world: a temporary directory with `volumes/`, `by-id/`, staging and target
/// parents, and a node driver serving from it.
pub struct Env {
    pub dir: Arc<tempfile::TempDir>,
    pub driver: Option<RunningDriver>,
    pub client: NodeClient<Channel>,
    pub device_source: &'static str,
    /// `--mode`: `node`, or `all` for a driver that runs its own in-process cloud over
    /// the directory, as the harness's bundled driver does.
    pub mode: &'static str,
}

impl Env {
    /// A node driver in loop mode over a fresh temporary directory.
    pub async fn start() -> Result<Env> {
        let dir = Arc::new(tempfile::tempdir().context("creating a temporary directory")?);
        Env::start_in(dir, "loop").await
    }

    /// A node driver over `dir` with `--device-source source`.
    pub async fn start_in(dir: Arc<tempfile::TempDir>, source: &'static str) -> Result<Env> {
        Env::start_as(dir, source, "node").await
    }

    /// A driver over `dir` with `--device-source source` and `--mode mode`.
    pub async fn start_as(
        dir: Arc<tempfile::TempDir>,
        source: &'static str,
        mode: &'static str,
    ) -> Result<Env> {
        let root = dir.path();
        for sub in ["volumes", "staging", "targets"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let socket = root.join("csi.sock");
        let config = Config::try_parse_from([
            "csi-driver".to_string(),
            format!("--mode={mode}"),
            format!("--endpoint=unix://{}", socket.display()),
            format!("--device-source={source}"),
            format!("--data-dir={}", root.display()),
            format!("--device-dir={}", root.join("by-id").display()),
            "--node-id=1".into(),
            "--region=fra1".into(),
            "--max-volumes-per-node=5".into(),
        ])?;
        let driver = csi_driver::start(config).await?;
        let channel = tonic::transport::Endpoint::from_shared(driver.endpoint.clone())?
            .connect()
            .await
            .context("connecting to the node driver")?;
        Ok(Env {
            dir,
            driver: Some(driver),
            client: NodeClient::new(channel),
            device_source: source,
            mode,
        })
    }

    /// Stop this driver and start a new one over the same directory: nothing in memory
    /// survives, as after a crash.
    pub async fn restart(self) -> Result<Env> {
        let (source, mode) = (self.device_source, self.mode);
        self.restart_with(source, mode).await
    }

    /// Stop this driver and start one with `--device-source source` over the same directory.
    pub async fn restart_as(self, source: &'static str) -> Result<Env> {
        let mode = self.mode;
        self.restart_with(source, mode).await
    }

    /// Stop this driver and start one with `--device-source source` and `--mode mode`
    /// over the same directory.
    pub async fn restart_with(self, source: &'static str, mode: &'static str) -> Result<Env> {
        let dir = self.dir.clone();
        self.stop().await?;
        Env::start_as(dir, source, mode).await
    }

    /// Stop the driver: its client hangs up, then it stops serving and waits for the
    /// calls in flight.
    pub async fn stop(self) -> Result<()> {
        let Env {
            mut driver, client, ..
        } = self;
        drop(client);
        if let Some(d) = driver.take() {
            d.stop().await?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<tmp>/volumes/<id>.img`, sparse, of `size` bytes.
    pub fn image(&self, id: &str, size: u64) -> Result<PathBuf> {
        let path = self.image_path(id);
        let file = std::fs::File::create(&path)?;
        file.set_len(size)?;
        Ok(path)
    }

    pub fn image_path(&self, id: &str) -> PathBuf {
        self.root().join("volumes").join(format!("{id}.img"))
    }

    /// Grow an image, as ControllerExpandVolume does in the fake cloud.
    pub fn grow_image(&self, id: &str, size: u64) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.image_path(id))?;
        file.set_len(size)?;
        Ok(())
    }

    /// A staging directory, created as the CO would.
    pub fn staging(&self, name: &str) -> Result<PathBuf> {
        let path = self.root().join("staging").join(name);
        std::fs::create_dir_all(&path)?;
        Ok(path)
    }

    /// A target path; only its parent exists, as the spec has it.
    pub fn target(&self, name: &str) -> PathBuf {
        self.root().join("targets").join(name)
    }

    pub async fn stage(
        &self,
        id: &str,
        staging: &Path,
        capability: VolumeCapability,
    ) -> Result<(), Status> {
        self.client
            .clone()
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: path_text(staging),
                volume_capability: Some(capability),
                publish_context: publish_context(id),
                ..Default::default()
            })
            .await
            .map(drop)
    }

    pub async fn unstage(&self, id: &str, staging: &Path) -> Result<(), Status> {
        self.client
            .clone()
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: path_text(staging),
            })
            .await
            .map(drop)
    }

    pub async fn publish(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
        capability: VolumeCapability,
        readonly: bool,
    ) -> Result<(), Status> {
        self.client
            .clone()
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: path_text(staging),
                target_path: path_text(target),
                volume_capability: Some(capability),
                readonly,
                publish_context: publish_context(id),
                ..Default::default()
            })
            .await
            .map(drop)
    }

    pub async fn unpublish(&self, id: &str, target: &Path) -> Result<(), Status> {
        self.client
            .clone()
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id.into(),
                target_path: path_text(target),
            })
            .await
            .map(drop)
    }

    pub async fn stats(&self, id: &str, path: &Path) -> Result<NodeGetVolumeStatsResponse, Status> {
        self.client
            .clone()
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: id.into(),
                volume_path: path_text(path),
                staging_target_path: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn expand(&self, id: &str, path: &Path, required: u64) -> Result<i64, Status> {
        self.client
            .clone()
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: id.into(),
                volume_path: path_text(path),
                capacity_range: Some(CapacityRange {
                    required_bytes: required as i64,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().capacity_bytes)
    }

    /// Stage and publish in one go.
    pub async fn stage_and_publish(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
        capability: VolumeCapability,
    ) -> Result<()> {
        self.stage(id, staging, capability.clone())
            .await
            .context("NodeStageVolume")?;
        self.publish(id, staging, target, capability, false)
            .await
            .context("NodePublishVolume")?;
        Ok(())
    }

    /// Unpublish and unstage in one go.
    pub async fn unpublish_and_unstage(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
    ) -> Result<()> {
        self.unpublish(id, target)
            .await
            .context("NodeUnpublishVolume")?;
        self.unstage(id, staging)
            .await
            .context("NodeUnstageVolume")?;
        Ok(())
    }
}

/// The publish_context ControllerPublishVolume returns for volume `id` (named `id` too).
pub fn publish_context(id: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            config::PUBLISH_CONTEXT_VOLUME_NAME.to_string(),
            id.to_string(),
        ),
        (
            config::PUBLISH_CONTEXT_DEVICE_LINK.to_string(),
            config::device_link_name(id),
        ),
    ])
}

pub fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A filesystem capability.
pub fn mount_cap(fs_type: &str, flags: &[&str], mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            mount_flags: flags.iter().map(|s| s.to_string()).collect(),
            volume_mount_group: String::new(),
        })),
    }
}

/// ext4, no flags, SINGLE_NODE_WRITER.
pub fn ext4() -> VolumeCapability {
    mount_cap("ext4", &[], Mode::SingleNodeWriter)
}

/// xfs, no flags, SINGLE_NODE_WRITER.
pub fn xfs() -> VolumeCapability {
    mount_cap("xfs", &[], Mode::SingleNodeWriter)
}

/// A raw block capability.
pub fn block_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

/// Fail unless `result` is an error with `code` whose message contains `needle`.
pub fn expect_code<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Status>,
    code: Code,
    needle: &str,
) -> Result<()> {
    match result {
        Err(s) if s.code() == code && s.message().contains(needle) => Ok(()),
        Err(s) => bail!(
            "{what}: expected {code:?} mentioning {needle:?}, got {:?}: {}",
            s.code(),
            s.message()
        ),
        Ok(v) => bail!("{what}: expected {code:?}, got OK: {v:?}"),
    }
}

/// Fail unless `result` is OK.
pub fn expect_ok<T>(what: &str, result: Result<T, Status>) -> Result<T> {
    result.map_err(|s| anyhow::anyhow!("{what}: expected OK, got {:?}: {}", s.code(), s.message()))
}

/// Mount points under `root`.
pub fn mounts_under(root: &Path) -> Result<Vec<PathBuf>> {
    let root = root.canonicalize()?;
    Ok(MountTable::read()?
        .entries
        .into_iter()
        .filter(|e| e.mount_point.starts_with(&root))
        .map(|e| e.mount_point)
        .collect())
}

/// Loop devices attached to `image`, according to `losetup -j`.
pub fn loops_of(image: &Path) -> Result<String> {
    let out = std::process::Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .context("running losetup -j")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Every image under `<root>/volumes`.
pub fn images(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("volumes"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "img"))
                .collect()
        })
        .unwrap_or_default()
}

/// What is left behind under `root`: mounts, loop devices of its images, device links.
pub fn leftovers(root: &Path) -> Result<Vec<String>> {
    let mut left: Vec<String> = mounts_under(root)?
        .into_iter()
        .map(|m| format!("mount at {}", m.display()))
        .collect();
    for image in images(root) {
        let loops = loops_of(&image)?;
        if !loops.is_empty() {
            left.push(format!("loop device: {loops}"));
        }
    }
    // Loop devices whose image is gone (deleted while attached) too.
    let root_text = path_text(&root.canonicalize()?);
    for line in run("losetup", &["-a"])?.lines() {
        if line.contains(&root_text) && line.contains("(deleted)") {
            left.push(format!("loop device: {line}"));
        }
    }
    if let Ok(links) = std::fs::read_dir(root.join("by-id")) {
        for link in links.flatten() {
            left.push(format!("device link {}", link.path().display()));
        }
    }
    Ok(left)
}

/// Force everything under `root` away after a failed test, so the next test starts clean.
pub fn force_clean(root: &Path) {
    if let Ok(mut mounts) = mounts_under(root) {
        mounts.reverse();
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let Ok(root) = root.canonicalize() else {
        return;
    };
    let root_text = path_text(&root);
    let Ok(all) = run("losetup", &["-a"]) else {
        return;
    };
    for line in all.lines().filter(|l| l.contains(&root_text)) {
        if let Some((device, _)) = line.split_once(':') {
            let _ = std::process::Command::new("losetup")
                .args(["-d", device])
                .status();
        }
    }
}

/// The kernel's autoclear flag of the loop device attached to `image`, if one is.
pub fn loop_autoclear(image: &Path) -> Result<Option<bool>> {
    let loops = loops_of(image)?;
    let Some((device, _)) = loops.split_once(':') else {
        return Ok(None);
    };
    let name = device.trim_start_matches("/dev/");
    let flag = std::fs::read_to_string(format!("/sys/block/{name}/loop/autoclear"))?;
    Ok(Some(flag.trim() == "1"))
}

/// A moment for the kernel to finish detaching loop devices before they are counted.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Run a program and fail with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Total bytes statvfs reports for a mounted path.
pub fn statvfs_total(path: &Path) -> Result<u64> {
    let s = nix::sys::statvfs::statvfs(path)?;
    Ok(s.blocks() * s.fragment_size())
}

/// Bytes and inodes from a stats response.
pub fn usage(stats: &NodeGetVolumeStatsResponse, unit: volume_usage::Unit) -> Option<VolumeUsage> {
    stats.usage.iter().find(|u| u.unit == unit as i32).copied()
}

/// A request with a client-side deadline.
pub fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}
