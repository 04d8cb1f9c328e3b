//! `--device-source loop`, the fake cloud's simulated hot-plug (feature `fake-cloud`).
//!
//! NodeStageVolume plays the hypervisor first: it attaches the volume's image (where
//! fake-cloud's [`fake_cloud::volume_image`] says it is) as a loop device and links it
//! under `--device-dir`; NodeUnstageVolume removes the link and detaches the loop device
//! again. A volume exists while its image does, and a device is the volume's when it is
//! the loop device of its image.
//!
//! Loop devices are found by the image's device and inode, or by the kernel's record of
//! its path once the image is deleted, so an unstage after DeleteVolume still detaches
//! them. They are attached with the kernel's autoclear on and held open by the stage
//! until it is done, so a stage that fails, or a driver that dies, before anything holds
//! the device leaves none behind. A filesystem's mount then holds it, and when that mount
//! disappears without NodeUnstageVolume (a test's mount namespace ending), the kernel
//! detaches the device by itself. A raw block device has no such holder (a bind of its
//! node does not open it), and autoclear would detach it under a published target at the
//! first close, whose number another volume could then take; so a block stage turns
//! autoclear off once its record is in place, and only NodeUnstageVolume detaches it.
//! Detaching goes through an open handle of the device, never its name, so it cannot hit
//! another volume's device that took the number over.
//!
//! **Stopping.** When a process that runs its own in-process cloud stops serving Node
//! (the harness's bundled driver at the end of a run), it detaches the loop devices of
//! that cloud's images, deleted or not, that nothing mounts: what a CO that skipped
//! NodeUnstageVolume left. A node-only process never does: the images belong to a cloud
//! elsewhere, and other nodes' mounts are in mount namespaces it cannot see.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::device_source::{DeviceSource, Found, Plugged};
use super::mounts::mounts_using;
use crate::config;
use crate::mount::device::{self, BlockDevice, LoopHandle};
use crate::mount::mountinfo::{DeviceId, MountTable};
use crate::mount::MountError;
use crate::Driver;

/// Why a volume has no device, in this source's words.
const NOT_ATTACHED: &str = "its image is not attached as a loop device";

/// The fake cloud's volume images, attached as loop devices.
#[derive(Debug)]
pub struct FakeCloudImages {
    /// The fake cloud's data directory: the in-process cloud's (a temporary one when
    /// --data-dir is unset), else --data-dir (a node-only process next to a separate
    /// fake cloud).
    data_dir: Option<PathBuf>,
    /// `--device-dir`, where the links go.
    device_dir: PathBuf,
    /// The folder of volume images, canonical, when this process runs the cloud that owns
    /// them: its loop devices are released when the Node service stops.
    owned_images: Option<PathBuf>,
}

impl FakeCloudImages {
    /// The source for a driver process that serves Node.
    pub fn new(driver: &Driver) -> FakeCloudImages {
        let in_process = driver.cloud_data_dir();
        FakeCloudImages {
            data_dir: in_process
                .map(Path::to_path_buf)
                .or_else(|| driver.config.data_dir.clone()),
            device_dir: driver.config.device_dir.clone(),
            owned_images: in_process
                .and_then(|dir| std::fs::canonicalize(dir).ok())
                .map(|dir| fake_cloud::volume_images_dir(&dir)),
        }
    }

    /// Where the fake cloud keeps the volume's image.
    fn image_path(&self, volume_id: &str) -> Result<PathBuf, MountError> {
        let dir = self.data_dir.as_deref().ok_or_else(|| {
            MountError::NotConfigured(
                "--device-source loop needs --data-dir, where the fake cloud keeps volume images"
                    .into(),
            )
        })?;
        Ok(fake_cloud::volume_image(dir, volume_id))
    }

    /// Remove the links to a loop device (every link this source makes starts like
    /// [`config::device_link_name`]'s).
    fn remove_links(&self, device: DeviceId) -> Result<Vec<PathBuf>, MountError> {
        device::remove_links_to(&self.device_dir, &config::device_link_name(""), device)
    }
}

#[async_trait::async_trait]
impl DeviceSource for FakeCloudImages {
    fn check_exists(&self, volume_id: &str) -> Result<(), MountError> {
        let image = self.image_path(volume_id)?;
        if image.is_file() {
            Ok(())
        } else {
            Err(MountError::VolumeNotFound {
                volume_id: volume_id.to_string(),
                reason: format!("no image at {}", image.display()),
            })
        }
    }

    fn default_link_name(&self, volume_id: &str) -> Option<String> {
        // The fake cloud's hot-plug is ours, so the link name is too.
        Some(config::device_link_name(volume_id))
    }

    async fn obtain(
        &self,
        volume_id: &str,
        link: &Path,
        deadline: Instant,
    ) -> Result<(BlockDevice, Option<Plugged>), MountError> {
        self.check_exists(volume_id)?;
        let (loop_device, handle) = device::attach_loop(&self.image_path(volume_id)?)?;
        let plugged = handle.map(Plugged);
        if plugged.is_some() {
            tracing::info!(volume_id, device = %loop_device.path.display(), "attached volume image as a loop device");
        }
        if let Err(e) = device::link_to(link, &loop_device) {
            self.undo(plugged);
            return Err(e);
        }
        match device::wait_for(link, deadline).await {
            Ok(device) => Ok((device, plugged)),
            Err(e) => {
                self.undo(plugged);
                Err(e)
            }
        }
    }

    fn undo(&self, plugged: Option<Plugged>) {
        let Some(Plugged(handle)) = plugged else {
            return;
        };
        let device = handle.device().clone();
        let _ = self.remove_links(device.id);
        if let Err(e) = handle.detach() {
            tracing::warn!(device = %device.path.display(), error = %e, "could not detach a loop device after a failed stage");
        }
    }

    fn find(&self, volume_id: &str) -> Result<Found<BlockDevice>, MountError> {
        Ok(match device::find_loop(&self.image_path(volume_id)?)? {
            Some(device) => Found::Attached(device),
            None => Found::Detached(NOT_ATTACHED),
        })
    }

    fn hold(&self, volume_id: &str) -> Result<Found<Plugged>, MountError> {
        Ok(match device::open_loop(&self.image_path(volume_id)?)? {
            Some(handle) => Found::Attached(Plugged(handle)),
            None => Found::Detached(NOT_ATTACHED),
        })
    }

    fn is_stale(&self, device: DeviceId) -> bool {
        device.major == device::LOOP_MAJOR && !device::is_bound_loop(device)
    }

    fn keep_attached(
        &self,
        device: &BlockDevice,
        plugged: Option<&Plugged>,
    ) -> Result<(), MountError> {
        if !device::is_loop(device) {
            return Ok(());
        }
        match plugged {
            Some(Plugged(handle)) => handle.set_autoclear(false),
            None => LoopHandle::open(device)?.set_autoclear(false),
        }
    }

    fn after_mount(&self, volume_id: &str, device: &BlockDevice) {
        if device::is_loop(device) {
            // Attached by this call, it has autoclear already; attached earlier (by an
            // older driver), it gets it now. Only a safety net: NodeUnstageVolume
            // detaches it anyway.
            if let Err(e) = device::set_autoclear(device) {
                tracing::warn!(volume_id, error = %e, "loop device not set to autoclear");
            }
        }
    }

    async fn unplug(
        &self,
        volume_id: &str,
        plugged: Plugged,
        unmount: BoxFuture<'_, Result<(), MountError>>,
    ) -> Result<(), MountError> {
        let Plugged(handle) = plugged;
        // Links first: once detached, the loop device's number may go to another volume,
        // whose link must not be taken for ours.
        let links = self.remove_links(handle.device().id)?;
        if let Err(e) = unmount.await {
            for link in &links {
                let _ = device::link_to(link, handle.device());
            }
            return Err(e);
        }
        let loop_path = handle.device().path.clone();
        handle.detach()?;
        tracing::info!(volume_id, device = %loop_path.display(), "detached loop device");
        Ok(())
    }

    async fn refresh_size(&self, device: &BlockDevice) -> Result<(), MountError> {
        // The controller grew the image file; the loop device learns it here.
        device::refresh_loop_capacity(device).await
    }

    fn release_idle(&self) {
        if let Some(images) = &self.owned_images {
            self.release_idle_loops(images);
        }
    }
}

impl FakeCloudImages {
    /// Detach the loop devices backed by images under `images` that no mount uses.
    fn release_idle_loops(&self, images: &Path) {
        let found = match device::loops_backed_under(images) {
            Ok(found) if found.is_empty() => return,
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "not releasing loop devices: cannot list them");
                return;
            }
        };
        let table = match MountTable::read() {
            Ok(table) => table,
            Err(e) => {
                tracing::warn!(error = %e, "not releasing loop devices: cannot read the mount table");
                return;
            }
        };
        for (handle, backing) in found {
            let device = handle.device().clone();
            let users = mounts_using(&table, &device);
            if !users.is_empty() {
                tracing::info!(device = %device.path.display(), backing, ?users, "loop device still in use; left attached");
                continue;
            }
            if let Err(e) = self.remove_links(device.id) {
                tracing::warn!(device = %device.path.display(), error = %e, "could not remove device links");
            }
            match handle.detach() {
                Ok(()) => {
                    tracing::info!(device = %device.path.display(), backing, "detached an unused loop device as the node service stopped")
                }
                Err(e) => {
                    tracing::warn!(device = %device.path.display(), backing, error = %e, "could not detach an unused loop device")
                }
            }
        }
    }
}
