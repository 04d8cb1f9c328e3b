//! Block devices: the stable by-id links that name them, waiting for a link to appear,
//! device sizes, and (loop mode) the simulated hot-plug that attaches a volume's image
//! file as a loop device.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::command;
use super::mountinfo::DeviceId;
use super::MountError;

/// A block device node and its device number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The device node, links resolved (e.g. /dev/loop3).
    pub path: PathBuf,
    pub id: DeviceId,
}

/// Resolve `path` (a device node or a link to one) to the block device it names.
pub fn inspect(path: &Path) -> Result<BlockDevice, MountError> {
    let not_found = || MountError::DeviceNotFound {
        path: path.to_path_buf(),
    };
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(MountError::io(format!("resolving {}", path.display()), e)),
    };
    let meta = match std::fs::metadata(&canonical) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => {
            return Err(MountError::io(
                format!("inspecting {}", canonical.display()),
                e,
            ))
        }
    };
    if !meta.file_type().is_block_device() {
        return Err(MountError::UnusablePath {
            field: "device",
            path: path.to_path_buf(),
            reason: format!("resolves to {}, not a block device", canonical.display()),
        });
    }
    Ok(BlockDevice {
        path: canonical,
        id: DeviceId::from_dev_t(meta.rdev()),
    })
}

nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);

/// The size of a block device in bytes (BLKGETSIZE64).
pub fn size_bytes(device: &Path) -> Result<u64, MountError> {
    let file = File::open(device)
        .map_err(|e| MountError::io(format!("opening {}", device.display()), e))?;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    unsafe { blk_get_size64(file.as_raw_fd(), &mut size) }
        .map_err(|e| MountError::sys(format!("reading the size of {}", device.display()), e))?;
    Ok(size)
}

/// Whether the kernel still has a block device with this number.
pub fn exists(id: DeviceId) -> bool {
    Path::new(&format!("/sys/dev/block/{id}")).exists()
}

/// The device node for a device number, from sysfs (`DEVNAME`), checked against /dev.
pub fn by_number(id: DeviceId) -> Result<BlockDevice, MountError> {
    let uevent_path = format!("/sys/dev/block/{id}/uevent");
    let uevent = std::fs::read_to_string(&uevent_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            MountError::DeviceNotFound {
                path: PathBuf::from(format!("/sys/dev/block/{id}")),
            }
        } else {
            MountError::io(format!("reading {uevent_path}"), e)
        }
    })?;
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .ok_or_else(|| MountError::DeviceNotFound {
            path: PathBuf::from(&uevent_path),
        })?;
    let device = inspect(&Path::new("/dev").join(name))?;
    if device.id != id {
        return Err(MountError::DeviceNotFound {
            path: PathBuf::from(format!("/dev/{name} (as {id})")),
        });
    }
    Ok(device)
}

/// Wait until `link` names a block device, polling with a backoff, until `deadline`.
pub async fn wait_for(link: &Path, deadline: Instant) -> Result<BlockDevice, MountError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match inspect(link) {
            Err(MountError::DeviceNotFound { .. }) => {}
            other => return other,
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(MountError::Timeout {
                what: format!("device link {} appearing", link.display()),
                waited: now - started,
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Make `link` a symlink to `device`, replacing a stale symlink (never anything else).
pub fn link_to(link: &Path, device: &BlockDevice) -> Result<(), MountError> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| MountError::io(format!("creating {}", dir.display()), e))?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if std::fs::read_link(link).ok().as_deref() == Some(device.path.as_path()) {
                return Ok(());
            }
            // Replace atomically: a reader sees the old link or the new one.
            let mut name = link.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".tmp-{}", std::process::id()));
            let temporary = link.with_file_name(name);
            let _ = std::fs::remove_file(&temporary);
            std::os::unix::fs::symlink(&device.path, &temporary)
                .map_err(|e| MountError::io(format!("creating {}", temporary.display()), e))?;
            std::fs::rename(&temporary, link).map_err(|e| {
                let _ = std::fs::remove_file(&temporary);
                MountError::io(format!("replacing {}", link.display()), e)
            })
        }
        Ok(_) => Err(MountError::UnusablePath {
            field: "device-link",
            path: link.to_path_buf(),
            reason: "exists and is not a symlink; not replacing it".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::os::unix::fs::symlink(&device.path, link)
                .map_err(|e| MountError::io(format!("creating {}", link.display()), e))
        }
        Err(e) => Err(MountError::io(format!("inspecting {}", link.display()), e)),
    }
}

/// Remove the symlinks in `dir` whose name starts with `prefix` and that point to the
/// device `id`. Returns the links removed.
pub fn remove_links_to(dir: &Path, prefix: &str, id: DeviceId) -> Result<Vec<PathBuf>, MountError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MountError::io(format!("listing {}", dir.display()), e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| MountError::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        let named = entry.file_name().to_string_lossy().starts_with(prefix);
        if !(is_link && named) {
            continue;
        }
        if matches!(inspect(&path), Ok(device) if device.id == id) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MountError::io(format!("removing {}", path.display()), e)),
            }
        }
    }
    Ok(removed)
}

/// `struct loop_info64` from <linux/loop.h>.
#[repr(C)]
#[derive(Debug)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; 64],
    pub lo_crypt_name: [u8; 64],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

/// `struct loop_config` from <linux/loop.h>: LOOP_CONFIGURE's argument.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);

/// `LO_FLAGS_AUTOCLEAR`: the kernel detaches the loop device when its last user closes it.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// How often attaching retries when another process takes the free loop device first.
const ATTACH_ATTEMPTS: usize = 16;

/// The names (`loop3`) of the bound loop devices, from sysfs.
fn bound_loops() -> Result<Vec<String>, MountError> {
    let entries =
        std::fs::read_dir("/sys/block").map_err(|e| MountError::io("listing /sys/block", e))?;
    Ok(entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // Only bound loop devices have a `loop` directory.
        .filter(|name| {
            name.starts_with("loop") && Path::new("/sys/block").join(name).join("loop").exists()
        })
        .collect())
}

/// Whether `id` is a loop device bound to a backing file.
pub fn is_bound_loop(id: DeviceId) -> bool {
    id.major == LOOP_MAJOR && Path::new(&format!("/sys/dev/block/{id}/loop")).exists()
}

/// The kernel's record of a loop device's backing file (`<path> (deleted)` once the file
/// is gone), or `None` when the device is not bound.
fn backing_file(loop_name: &str) -> Option<String> {
    let record = Path::new("/sys/block")
        .join(loop_name)
        .join("loop/backing_file");
    let text = std::fs::read_to_string(record).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

/// An open handle on a bound loop device.
///
/// The kernel never unbinds a loop device while anyone holds it open, whatever its
/// autoclear flag says, so the handle pins the device, and its number, for as long as it
/// lives: nothing done through it can hit another volume's device that took the number
/// over. With autoclear set, dropping the last handle (or the process dying) detaches it.
#[derive(Debug)]
pub struct LoopHandle {
    file: File,
    device: BlockDevice,
}

impl LoopHandle {
    /// Open the loop device `device` (which must still have that device number).
    pub fn open(device: &BlockDevice) -> Result<LoopHandle, MountError> {
        let context = || format!("opening loop device {}", device.path.display());
        let file = File::open(&device.path).map_err(|e| MountError::io(context(), e))?;
        let meta = file.metadata().map_err(|e| MountError::io(context(), e))?;
        if !meta.file_type().is_block_device() || DeviceId::from_dev_t(meta.rdev()) != device.id {
            return Err(MountError::DeviceNotFound {
                path: PathBuf::from(format!("{} (as {})", device.path.display(), device.id)),
            });
        }
        Ok(LoopHandle {
            file,
            device: device.clone(),
        })
    }

    /// The device this handle holds.
    pub fn device(&self) -> &BlockDevice {
        &self.device
    }

    fn status(&self) -> Result<LoopInfo64, nix::errno::Errno> {
        // SAFETY: LoopInfo64 is plain data, valid when zeroed.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        // SAFETY: LOOP_GET_STATUS64 fills a loop_info64, which `info` is.
        unsafe { loop_get_status64(self.file.as_raw_fd(), &mut info) }?;
        Ok(info)
    }

    /// Turn the kernel's autoclear on or off: with it on, the device detaches by itself at
    /// the last close, so it must be on only while something keeps the device open (this
    /// handle until a filesystem from it is mounted; then the mount).
    pub fn set_autoclear(&self, on: bool) -> Result<(), MountError> {
        let context = || {
            format!(
                "turning autoclear {} on {}",
                if on { "on" } else { "off" },
                self.device.path.display()
            )
        };
        let mut info = self.status().map_err(|e| MountError::sys(context(), e))?;
        if (info.lo_flags & LO_FLAGS_AUTOCLEAR != 0) == on {
            return Ok(());
        }
        if on {
            info.lo_flags |= LO_FLAGS_AUTOCLEAR;
        } else {
            info.lo_flags &= !LO_FLAGS_AUTOCLEAR;
        }
        // SAFETY: LOOP_SET_STATUS64 reads a loop_info64 through the pointer, which is valid.
        unsafe { loop_set_status64(self.file.as_raw_fd(), &info) }
            .map_err(|e| MountError::sys(context(), e))?;
        Ok(())
    }

    /// Detach the device. The kernel unbinds it when its last opener closes: at once when
    /// this handle was the only one, else when the others (a mount, a process) let go.
    /// Already detached is fine.
    pub fn detach(self) -> Result<(), MountError> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        match unsafe { loop_clr_fd(self.file.as_raw_fd()) } {
            Ok(_) | Err(nix::errno::Errno::ENXIO) => Ok(()),
            Err(e) => Err(MountError::sys(
                format!("detaching {}", self.device.path.display()),
                e,
            )),
        }
    }
}

/// The loop device backed by `image`, if one is attached. Matched by the image's device
/// and inode (as `losetup -j` does), so a path spelled differently still matches. When
/// the image is gone (deleted while attached), the kernel's record of the backing file's
/// path is matched instead, so the device can still be found and detached.
pub fn find_loop(image: &Path) -> Result<Option<BlockDevice>, MountError> {
    Ok(open_loop(image)?.map(|handle| handle.device))
}

/// Like [`find_loop`], but the device is returned held open (matched through the same open
/// file, so it cannot be a device that took the number over meanwhile).
pub fn open_loop(image: &Path) -> Result<Option<LoopHandle>, MountError> {
    let meta = match std::fs::metadata(image) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return open_loop_of_deleted(image),
        Err(e) => return Err(MountError::io(format!("inspecting {}", image.display()), e)),
    };
    for name in bound_loops()? {
        let Ok(handle) = open_loop_named(&name) else {
            continue;
        };
        let Ok(info) = handle.status() else {
            continue;
        };
        if info.lo_device == meta.dev() && info.lo_inode == meta.ino() {
            return Ok(Some(handle));
        }
    }
    Ok(None)
}

/// `/dev/<name>`, held open.
fn open_loop_named(name: &str) -> Result<LoopHandle, MountError> {
    let device = inspect(&Path::new("/dev").join(name))?;
    LoopHandle::open(&device)
}

/// A loop device whose backing file was `image` and has since been deleted.
fn open_loop_of_deleted(image: &Path) -> Result<Option<LoopHandle>, MountError> {
    let (Some(dir), Some(name)) = (image.parent(), image.file_name()) else {
        return Ok(None);
    };
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Ok(None);
    };
    let wanted = dir.join(name).to_string_lossy().into_owned();
    let deleted = format!("{wanted} (deleted)");
    for loop_name in bound_loops()? {
        let matches = |b: Option<String>| b.is_some_and(|b| b == wanted || b == deleted);
        if !matches(backing_file(&loop_name)) {
            continue;
        }
        let Ok(handle) = open_loop_named(&loop_name) else {
            continue;
        };
        // Checked again once held: it may have been detached and reused in between.
        if matches(backing_file(&loop_name)) {
            return Ok(Some(handle));
        }
    }
    Ok(None)
}

/// The bound loop devices whose backing file lies under `dir` (present or deleted), each
/// held open, with the kernel's record of that file.
pub fn loops_backed_under(dir: &Path) -> Result<Vec<(LoopHandle, String)>, MountError> {
    let under = |b: &Option<String>| {
        b.as_deref()
            .is_some_and(|b| Path::new(b.strip_suffix(" (deleted)").unwrap_or(b)).starts_with(dir))
    };
    let mut found = Vec::new();
    for loop_name in bound_loops()? {
        if !under(&backing_file(&loop_name)) {
            continue;
        }
        let Ok(handle) = open_loop_named(&loop_name) else {
            continue;
        };
        let backing = backing_file(&loop_name);
        if under(&backing) {
            found.push((handle, backing.unwrap_or_default()));
        }
    }
    Ok(found)
}

/// Make sure a loop device detaches by itself once nothing holds it open any more. For a
/// device a filesystem is mounted from: when the mount goes away without
/// NodeUnstageVolume (a test's private mount namespace ending, say), the loop device goes
/// too instead of staying attached for good.
pub fn set_autoclear(device: &BlockDevice) -> Result<(), MountError> {
    LoopHandle::open(device)?.set_autoclear(true)
}

/// Attach `image` as a loop device unless it already is. Returns the device and, when
/// this call attached it, a handle on it with autoclear already on: until the handle is
/// dropped nothing can detach the device, and once it is, the device detaches by itself
/// unless a mount holds it or autoclear was turned off. So a stage that fails, or a
/// process that dies, between attaching and mounting leaves no loop device behind.
///
/// The device is configured with its flags in one step (LOOP_CONFIGURE, Linux 5.8+;
/// LOOP_SET_FD and LOOP_SET_STATUS64 on older kernels), through the handle, so there is
/// no moment at which it is attached without autoclear and without an opener.
pub fn attach_loop(image: &Path) -> Result<(BlockDevice, Option<LoopHandle>), MountError> {
    if let Some(handle) = open_loop(image)? {
        return Ok((handle.device.clone(), None));
    }
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| MountError::io(format!("opening {}", image.display()), e))?;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| MountError::io("opening /dev/loop-control", e))?;
    for _ in 0..ATTACH_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }
            .map_err(|e| MountError::sys("finding a free loop device", e))?;
        let node = PathBuf::from(format!("/dev/loop{number}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&node)
            .map_err(|e| MountError::io(format!("opening {}", node.display()), e))?;
        match configure_loop(&file, &backing, image) {
            Ok(()) => {}
            // Another process took it between GET_FREE and here: ask for the next one.
            Err(nix::errno::Errno::EBUSY) => continue,
            Err(e) => {
                return Err(MountError::sys(
                    format!("attaching {} as {}", image.display(), node.display()),
                    e,
                ))
            }
        }
        let device = match inspect(&node) {
            Ok(device) => device,
            Err(e) => {
                // SAFETY: LOOP_CLR_FD takes no argument.
                let _ = unsafe { loop_clr_fd(file.as_raw_fd()) };
                return Err(e);
            }
        };
        return Ok((device.clone(), Some(LoopHandle { file, device })));
    }
    Err(MountError::io(
        format!("attaching {}", image.display()),
        std::io::Error::other(format!(
            "every free loop device was taken by another process ({ATTACH_ATTEMPTS} attempts)"
        )),
    ))
}

/// Bind `backing` to the loop device open as `file`, with autoclear on.
fn configure_loop(file: &File, backing: &File, image: &Path) -> Result<(), nix::errno::Errno> {
    // SAFETY: LoopInfo64 is plain data, valid when zeroed.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    info.lo_flags = LO_FLAGS_AUTOCLEAR;
    let name = super::paths::bytes(image);
    let len = name.len().min(info.lo_file_name.len() - 1);
    info.lo_file_name[..len].copy_from_slice(&name[..len]);
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a loop_config through the pointer, which is valid.
    match unsafe { loop_configure(file.as_raw_fd(), &config) } {
        Ok(_) => return Ok(()),
        // A kernel older than 5.8, which has no LOOP_CONFIGURE.
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOTTY) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor.
    unsafe { loop_set_fd(file.as_raw_fd(), backing.as_raw_fd()) }?;
    // SAFETY: LOOP_SET_STATUS64 reads a loop_info64 through the pointer, which is valid.
    if let Err(e) = unsafe { loop_set_status64(file.as_raw_fd(), &config.info) } {
        // SAFETY: LOOP_CLR_FD takes no argument.
        let _ = unsafe { loop_clr_fd(file.as_raw_fd()) };
        return Err(e);
    }
    Ok(())
}

/// Make a loop device see its backing file's new size (after the controller grew it).
pub async fn refresh_loop_capacity(device: &BlockDevice) -> Result<(), MountError> {
    let args = command::args(["-c".as_ref(), device.path.as_os_str()]);
    command::run_ok("losetup", &args).await.map(drop)
}

/// The block major number of loop devices.
pub const LOOP_MAJOR: u64 = 7;

/// Whether `device` is a loop device.
pub fn is_loop(device: &BlockDevice) -> bool {
    device
        .path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("loop"))
        && device.id.major == LOOP_MAJOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_link_is_device_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("scsi-0DO_Volume_x");
        assert!(matches!(
            inspect(&link),
            Err(MountError::DeviceNotFound { .. })
        ));
        std::os::unix::fs::symlink("/nonexistent/dev", &link).unwrap();
        assert!(matches!(
            inspect(&link),
            Err(MountError::DeviceNotFound { .. })
        ));
    }

    #[test]
    fn a_regular_file_is_not_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = inspect(&file).unwrap_err();
        assert!(err.to_string().contains("not a block device"), "{err}");
    }

    #[tokio::test]
    async fn waiting_for_a_link_that_never_appears_ends_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + Duration::from_millis(120);
        let err = wait_for(&dir.path().join("never"), deadline)
            .await
            .unwrap_err();
        assert!(matches!(err, MountError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[test]
    fn links_are_replaced_only_when_they_are_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let by_id = dir.path().join("by-id");
        let link = by_id.join("scsi-0DO_Volume_a");
        let null = BlockDevice {
            path: PathBuf::from("/dev/null"),
            id: DeviceId { major: 1, minor: 3 },
        };
        link_to(&link, &null).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("/dev/null")
        );
        let zero = BlockDevice {
            path: PathBuf::from("/dev/zero"),
            ..null.clone()
        };
        link_to(&link, &zero).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("/dev/zero")
        );
        assert_eq!(std::fs::read_dir(&by_id).unwrap().count(), 1);

        let file = by_id.join("scsi-0DO_Volume_b");
        std::fs::write(&file, b"data").unwrap();
        assert!(link_to(&file, &null).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
    }
}
