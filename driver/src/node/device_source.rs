//! How the node finds a volume's block device: the [`DeviceSource`] trait, [`open`],
//! which builds the one `--device-source` names, and the production source,
//! [`HypervisorLinks`], which waits for the link the hypervisor makes under
//! `--device-dir`.
//!
//! The fake cloud's source (its volume images attached as loop devices, a simulated
//! hot-plug) is `loop_source.rs`, compiled only with the `fake-cloud` feature: the
//! production driver does not know the fake cloud.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::config;
use crate::mount::device::{self, BlockDevice, LoopHandle};
use crate::mount::mountinfo::DeviceId;
use crate::mount::MountError;
use crate::Driver;

/// Where a volume's block device comes from, and what the node may know of it.
///
/// The node asks its source at every point where finding, holding or letting go of a
/// device depends on who plugs it in: the hypervisor (nothing for the node to do but wait)
/// or the fake cloud's simulated hot-plug (the node plugs it in itself).
#[async_trait::async_trait]
pub trait DeviceSource: Send + Sync {
    /// NOT_FOUND unless the volume exists, as far as the node can tell.
    fn check_exists(&self, volume_id: &str) -> Result<(), MountError>;

    /// The device link's name when `publish_context` names none, if this source knows it.
    fn default_link_name(&self, volume_id: &str) -> Option<String>;

    /// Make the volume's device appear behind `link` and wait for it, until `deadline`.
    /// Returns the device and, when this call plugged it in, the hold on it: the caller
    /// keeps it until the device has another holder (a mount), or gives it back to
    /// [`DeviceSource::undo`].
    async fn obtain(
        &self,
        volume_id: &str,
        link: &Path,
        deadline: Instant,
    ) -> Result<(BlockDevice, Option<Plugged>), MountError>;

    /// Unplug what [`DeviceSource::obtain`] plugged in, after a stage that failed.
    fn undo(&self, plugged: Option<Plugged>);

    /// The volume's device on this node, as far as this source can tell.
    fn find(&self, volume_id: &str) -> Result<Found<BlockDevice>, MountError>;

    /// Like [`DeviceSource::find`], the device held open, so that its number cannot pass
    /// to another volume while the node unstages it.
    fn hold(&self, volume_id: &str) -> Result<Found<Plugged>, MountError>;

    /// Whether `device`, named by a raw block staging record, was unplugged behind the
    /// node's back, so that the record names nothing.
    fn is_stale(&self, device: DeviceId) -> bool;

    /// A raw block staging is in place: the device has no holder (a bind of its node does
    /// not open it), yet must stay plugged in until NodeUnstageVolume.
    fn keep_attached(
        &self,
        device: &BlockDevice,
        plugged: Option<&Plugged>,
    ) -> Result<(), MountError>;

    /// A filesystem is mounted from the device: it may go when that mount goes.
    fn after_mount(&self, volume_id: &str, device: &BlockDevice);

    /// Unplug a held device once nothing uses it: `unmount` (the staging's unmount) runs
    /// after the device's links are gone and before it is unplugged; when it fails, the
    /// links come back and the device stays.
    async fn unplug(
        &self,
        volume_id: &str,
        plugged: Plugged,
        unmount: BoxFuture<'_, Result<(), MountError>>,
    ) -> Result<(), MountError>;

    /// Make the device see the size the controller grew the volume to.
    async fn refresh_size(&self, device: &BlockDevice) -> Result<(), MountError>;

    /// The Node service stops: unplug what this source plugged in and nothing uses.
    fn release_idle(&self);
}

/// What a [`DeviceSource`] can tell of a volume's device on this node.
#[derive(Debug)]
pub enum Found<T> {
    /// Nothing: its devices carry no mark of the volume the node could check, so any
    /// device is taken for the volume's.
    Unknown,
    /// The volume's device, plugged in.
    Attached(T),
    /// The volume is not plugged in; the words say how it would be.
    Detached(&'static str),
}

impl<T> Found<T> {
    /// The same answer about `f` of the device.
    pub fn map<U>(&self, f: impl FnOnce(&T) -> U) -> Found<U> {
        match self {
            Found::Unknown => Found::Unknown,
            Found::Attached(t) => Found::Attached(f(t)),
            Found::Detached(why) => Found::Detached(why),
        }
    }
}

impl Found<DeviceId> {
    /// Whether `id` may be the volume's device.
    pub fn admits(&self, id: DeviceId) -> bool {
        match self {
            Found::Unknown => true,
            Found::Attached(ours) => *ours == id,
            Found::Detached(_) => false,
        }
    }
}

/// A device its source plugged in and holds open (a loop device of the fake cloud), so
/// that nothing done through it can hit another volume's device that took its number.
#[derive(Debug)]
pub struct Plugged(pub(crate) LoopHandle);

impl Plugged {
    /// The device held.
    pub fn device(&self) -> &BlockDevice {
        self.0.device()
    }
}

/// The device source `--device-source` names, for a process that serves Node.
pub fn open(driver: &Driver) -> anyhow::Result<Arc<dyn DeviceSource>> {
    match driver.config.device_source {
        config::DeviceSource::Digitalocean => Ok(Arc::new(HypervisorLinks)),
        #[cfg(feature = "fake-cloud")]
        config::DeviceSource::Loop => {
            Ok(Arc::new(super::loop_source::FakeCloudImages::new(driver)))
        }
        #[cfg(not(feature = "fake-cloud"))]
        config::DeviceSource::Loop => anyhow::bail!(
            "--device-source loop attaches the fake cloud's volume images, and this csi-driver \
             was built without the `fake-cloud` feature; use --device-source digitalocean"
        ),
    }
}

/// Production: the hypervisor plugs the volume in and makes its link
/// (`<device-dir>/scsi-0DO_Volume_<name>`); the node only waits for it, and cannot tell
/// from a device which volume it is.
#[derive(Debug, Clone, Copy)]
pub struct HypervisorLinks;

#[async_trait::async_trait]
impl DeviceSource for HypervisorLinks {
    fn check_exists(&self, _volume_id: &str) -> Result<(), MountError> {
        Ok(())
    }

    fn default_link_name(&self, _volume_id: &str) -> Option<String> {
        None
    }

    async fn obtain(
        &self,
        _volume_id: &str,
        link: &Path,
        deadline: Instant,
    ) -> Result<(BlockDevice, Option<Plugged>), MountError> {
        Ok((device::wait_for(link, deadline).await?, None))
    }

    fn undo(&self, _plugged: Option<Plugged>) {}

    fn find(&self, _volume_id: &str) -> Result<Found<BlockDevice>, MountError> {
        Ok(Found::Unknown)
    }

    fn hold(&self, _volume_id: &str) -> Result<Found<Plugged>, MountError> {
        Ok(Found::Unknown)
    }

    fn is_stale(&self, _device: DeviceId) -> bool {
        false
    }

    fn keep_attached(
        &self,
        _device: &BlockDevice,
        _plugged: Option<&Plugged>,
    ) -> Result<(), MountError> {
        Ok(())
    }

    fn after_mount(&self, _volume_id: &str, _device: &BlockDevice) {}

    async fn unplug(
        &self,
        _volume_id: &str,
        _plugged: Plugged,
        unmount: BoxFuture<'_, Result<(), MountError>>,
    ) -> Result<(), MountError> {
        // Only the hypervisor unplugs its devices (on ControllerUnpublishVolume).
        unmount.await
    }

    async fn refresh_size(&self, _device: &BlockDevice) -> Result<(), MountError> {
        Ok(())
    }

    fn release_idle(&self) {}
}

/// Runs [`DeviceSource::release_idle`] when the last handle on the Node service goes:
/// once the server has stopped and no node operation is still running.
pub(crate) struct Janitor(pub(crate) Arc<dyn DeviceSource>);

impl Drop for Janitor {
    fn drop(&mut self) {
        self.0.release_idle();
    }
}
