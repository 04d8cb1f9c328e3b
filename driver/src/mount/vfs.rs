//! Mounting and unmounting (mount(2), umount2(2) through nix), and the mount options a
//! capability's `mount_flags` ask for.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::mountinfo::{MountEntry, MountTable};
use super::paths::Pinned;
use super::MountError;

/// `mount_flags`, split into the kernel's generic flags and the filesystem's own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// MS_* flags: read-only, nosuid, atime handling...
    pub flags: MsFlags,
    /// Filesystem options passed as mount data (`discard`, `errors=remount-ro`...).
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            data: Vec::new(),
        }
    }
}

/// Options that only mean something to mount(8) or fstab; they change nothing here.
const IGNORED: &[&str] = &["defaults", "auto", "noauto", "nofail", "_netdev"];

/// Options that would change what is mounted or how it propagates: never from a request.
const REFUSED: &[&str] = &[
    "bind",
    "rbind",
    "remount",
    "move",
    "loop",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "unbindable",
    "runbindable",
];

/// The per-mount options mountinfo shows, which two mounts must share to be "the same".
const PER_MOUNT: &[&str] = &[
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "noatime",
    "relatime",
    "nodiratime",
    "nosymfollow",
];

fn nosymfollow() -> MsFlags {
    MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)
}

const ATIME: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

impl MountOptions {
    /// Parse a capability's `mount_flags`; each entry may itself be comma-separated.
    pub fn parse(field: &'static str, mount_flags: &[String]) -> Result<MountOptions, MountError> {
        let mut options = MountOptions::default();
        for option in mount_flags.iter().flat_map(|f| f.split(',')) {
            let option = option.trim();
            if option.is_empty() || IGNORED.contains(&option) {
                continue;
            }
            if REFUSED.contains(&option) {
                return Err(MountError::InvalidField {
                    field,
                    value: option.to_string(),
                    reason: "changes what is mounted; not accepted from a request".into(),
                });
            }
            let flags = &mut options.flags;
            match option {
                "ro" => flags.insert(MsFlags::MS_RDONLY),
                "rw" => flags.remove(MsFlags::MS_RDONLY),
                "nosuid" => flags.insert(MsFlags::MS_NOSUID),
                "suid" => flags.remove(MsFlags::MS_NOSUID),
                "nodev" => flags.insert(MsFlags::MS_NODEV),
                "dev" => flags.remove(MsFlags::MS_NODEV),
                "noexec" => flags.insert(MsFlags::MS_NOEXEC),
                "exec" => flags.remove(MsFlags::MS_NOEXEC),
                "sync" => flags.insert(MsFlags::MS_SYNCHRONOUS),
                "async" => flags.remove(MsFlags::MS_SYNCHRONOUS),
                "dirsync" => flags.insert(MsFlags::MS_DIRSYNC),
                "nodiratime" => flags.insert(MsFlags::MS_NODIRATIME),
                "diratime" => flags.remove(MsFlags::MS_NODIRATIME),
                "noatime" => {
                    flags.remove(ATIME);
                    flags.insert(MsFlags::MS_NOATIME);
                }
                "relatime" => {
                    flags.remove(ATIME);
                    flags.insert(MsFlags::MS_RELATIME);
                }
                "strictatime" => {
                    flags.remove(ATIME);
                    flags.insert(MsFlags::MS_STRICTATIME);
                }
                "atime" | "norelatime" => flags.remove(MsFlags::MS_NOATIME | MsFlags::MS_RELATIME),
                "lazytime" => flags.insert(MsFlags::MS_LAZYTIME),
                "nolazytime" => flags.remove(MsFlags::MS_LAZYTIME),
                "silent" => flags.insert(MsFlags::MS_SILENT),
                "loud" => flags.remove(MsFlags::MS_SILENT),
                "nosymfollow" => flags.insert(nosymfollow()),
                data => {
                    if !data.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(MountError::InvalidField {
                            field,
                            value: data.escape_debug().to_string(),
                            reason: "mount options are printable ASCII without spaces".into(),
                        });
                    }
                    if !options.data.iter().any(|d| d == data) {
                        options.data.push(data.to_string());
                    }
                }
            }
        }
        Ok(options)
    }

    /// The same options, read-only when `read_only`.
    pub fn with_read_only(mut self, read_only: bool) -> MountOptions {
        if read_only {
            self.flags.insert(MsFlags::MS_RDONLY);
        }
        self
    }

    /// The per-mount options mountinfo will show for a mount made with these flags.
    pub fn expected_per_mount(&self) -> BTreeSet<String> {
        let f = self.flags;
        let mut set = BTreeSet::new();
        set.insert(
            if f.contains(MsFlags::MS_RDONLY) {
                "ro"
            } else {
                "rw"
            }
            .to_string(),
        );
        for (flag, name) in [
            (MsFlags::MS_NOSUID, "nosuid"),
            (MsFlags::MS_NODEV, "nodev"),
            (MsFlags::MS_NOEXEC, "noexec"),
            (MsFlags::MS_NODIRATIME, "nodiratime"),
            (nosymfollow(), "nosymfollow"),
        ] {
            if f.contains(flag) {
                set.insert(name.to_string());
            }
        }
        // The kernel's default is relatime; strictatime shows as no atime option at all.
        if f.contains(MsFlags::MS_NOATIME) {
            set.insert("noatime".to_string());
        } else if !f.contains(MsFlags::MS_STRICTATIME) {
            set.insert("relatime".to_string());
        }
        set
    }

    /// The flags that apply to one mount (as opposed to the whole filesystem): what a
    /// bind remount can set.
    pub fn per_mount_flags(&self) -> MsFlags {
        self.flags
            & (MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NODIRATIME
                | ATIME
                | nosymfollow())
    }
}

/// The per-mount options of an existing mount, for comparison with
/// [`MountOptions::expected_per_mount`].
pub fn observed_per_mount(entry: &MountEntry) -> BTreeSet<String> {
    entry
        .mount_options
        .iter()
        .filter(|o| PER_MOUNT.contains(&o.as_str()))
        .cloned()
        .collect()
}

/// Mount the filesystem on `device` onto the pinned directory.
pub fn mount_filesystem(
    device: &Path,
    target: &Pinned,
    target_shown: &Path,
    fs_type: &str,
    options: &MountOptions,
) -> Result<(), MountError> {
    let data = options.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    nix::mount::mount(
        Some(device),
        &target.proc_path(),
        Some(fs_type),
        options.flags,
        data,
    )
    .map_err(|e| {
        MountError::sys(
            format!(
                "mounting {} ({fs_type}, options {:?}) at {}",
                device.display(),
                options.data,
                target_shown.display()
            ),
            e,
        )
    })
}

/// Bind-mount `source` (a mounted directory or a device file) onto the pinned target,
/// then set the bind's own flags (read-only, nosuid...) with a bind remount, which is
/// the only way the kernel applies them. A failed remount undoes the bind.
pub fn bind(
    source: &Path,
    target: &Pinned,
    target_path: &Path,
    flags: MsFlags,
) -> Result<(), MountError> {
    nix::mount::mount::<Path, Path, str, str>(
        Some(source),
        &target.proc_path(),
        None,
        MsFlags::MS_BIND,
        None,
    )
    .map_err(|e| {
        MountError::sys(
            format!(
                "bind-mounting {} at {}",
                source.display(),
                target_path.display()
            ),
            e,
        )
    })?;
    // The remount names the path, not the pinned handle: the handle is the directory
    // under the new mount, and the remount must reach the mount itself. The path cannot
    // be swapped for a symlink now, since it is a mount point.
    let remount = nix::mount::mount::<str, Path, str, str>(
        None,
        target_path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None,
    );
    if let Err(e) = remount {
        let _ = unmount(target_path);
        return Err(MountError::sys(
            format!(
                "setting flags {flags:?} on the bind mount at {}",
                target_path.display()
            ),
            e,
        ));
    }
    Ok(())
}

/// Unmount the topmost mount at `path`, never following a symlink there.
pub fn unmount(path: &Path) -> Result<(), MountError> {
    match nix::mount::umount2(path, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => Err(MountError::Busy {
            path: path.to_path_buf(),
        }),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Err(MountError::NotMounted {
            path: path.to_path_buf(),
            reason: "not a mount point".into(),
        }),
        Err(e) => Err(MountError::sys(format!("unmounting {}", path.display()), e)),
    }
}

/// Unmount everything stacked at `path` (a retried publish may have stacked two).
/// Returns how many mounts were removed.
pub fn unmount_all(path: &Path) -> Result<usize, MountError> {
    const MAX_STACKED: usize = 32;
    let mut removed = 0;
    while MountTable::read()?.at(path).is_some() {
        if removed == MAX_STACKED {
            return Err(MountError::Busy {
                path: path.to_path_buf(),
            });
        }
        unmount(path)?;
        removed += 1;
    }
    Ok(removed)
}

/// The pauses between tries while a mount is busy: 315 ms in all. Anything that merely
/// passes through a mount holds it for a moment: a path lookup, or a child process
/// between fork and exec that still has a copy of its parent's open descriptors (the
/// harness's bundled driver forks mkfs while the harness writes to a published volume).
/// A workload that really keeps the mount busy still gets [`MountError::Busy`].
const BUSY_PAUSES: [Duration; 6] = [
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(80),
    Duration::from_millis(160),
];

/// [`unmount_all`], tried again after a short pause while the mount is busy. The pauses
/// are async, so a busy mount holds up no other RPC. Returns how many mounts the last
/// try removed.
pub async fn unmount_all_patiently(path: &Path) -> Result<usize, MountError> {
    for pause in BUSY_PAUSES {
        match unmount_all(path) {
            Err(MountError::Busy { .. }) => {
                tracing::debug!(path = %path.display(), ?pause, "mount busy; trying again");
                tokio::time::sleep(pause).await;
            }
            done => return done,
        }
    }
    unmount_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tmpfs mounted on a fresh directory, detached (lazily) when dropped. None, after
    /// printing why, when this process may not mount.
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount() -> Option<Tmpfs> {
            if !nix::unistd::Uid::effective().is_root() {
                println!("skipped: needs root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            match nix::mount::mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            ) {
                Ok(()) => Some(Tmpfs { dir }),
                Err(e) => {
                    println!("skipped: cannot mount a tmpfs here ({e})");
                    None
                }
            }
        }

        fn mounted(&self) -> bool {
            MountTable::read().unwrap().at(self.dir.path()).is_some()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.dir.path(), MntFlags::MNT_DETACH);
        }
    }

    #[tokio::test]
    async fn a_mount_busy_for_a_moment_is_unmounted_on_a_later_try() {
        let Some(tmpfs) = Tmpfs::mount() else { return };
        let held = std::fs::File::create(tmpfs.dir.path().join("held")).unwrap();
        assert!(matches!(
            unmount_all(tmpfs.dir.path()),
            Err(MountError::Busy { .. })
        ));
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        assert_eq!(unmount_all_patiently(tmpfs.dir.path()).await.unwrap(), 1);
        holder.join().unwrap();
        assert!(!tmpfs.mounted());
    }

    #[tokio::test]
    async fn a_mount_kept_busy_is_still_busy_after_the_pauses() {
        let Some(tmpfs) = Tmpfs::mount() else { return };
        let held = std::fs::File::create(tmpfs.dir.path().join("held")).unwrap();
        let started = std::time::Instant::now();
        let err = unmount_all_patiently(tmpfs.dir.path()).await.unwrap_err();
        assert!(matches!(err, MountError::Busy { .. }), "{err}");
        assert!(started.elapsed() >= BUSY_PAUSES.iter().sum::<Duration>());
        assert!(tmpfs.mounted());
        drop(held);
        assert_eq!(unmount_all_patiently(tmpfs.dir.path()).await.unwrap(), 1);
        assert!(!tmpfs.mounted());
    }

    fn parse(flags: &[&str]) -> Result<MountOptions, MountError> {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        MountOptions::parse("mount_flags", &flags)
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn generic_flags_and_filesystem_options_are_separated() {
        let o = parse(&["noatime,nosuid", "discard", "errors=remount-ro", "defaults"]).unwrap();
        assert!(o.flags.contains(MsFlags::MS_NOATIME | MsFlags::MS_NOSUID));
        assert_eq!(o.data, ["discard", "errors=remount-ro"]);
        assert_eq!(o.expected_per_mount(), set(&["rw", "nosuid", "noatime"]));
    }

    #[test]
    fn the_kernel_defaults_are_what_mountinfo_shows_for_no_flags() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.expected_per_mount(), set(&["rw", "relatime"]));
        let ro = parse(&[]).unwrap().with_read_only(true);
        assert_eq!(ro.expected_per_mount(), set(&["ro", "relatime"]));
        assert_eq!(
            parse(&["strictatime"]).unwrap().expected_per_mount(),
            set(&["rw"])
        );
        assert_eq!(
            parse(&["noatime", "relatime"])
                .unwrap()
                .expected_per_mount(),
            set(&["rw", "relatime"])
        );
    }

    #[test]
    fn options_that_change_what_is_mounted_are_refused() {
        for bad in [&["bind"][..], &["ro,rbind"], &["remount"], &["rshared"]] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("mount_flags"), "{err}");
        }
        assert!(parse(&["uid=0 x"]).is_err());
        assert!(parse(&["a\u{1}b"]).is_err());
    }

    #[test]
    fn observed_options_keep_only_per_mount_ones() {
        let table = MountTable::parse(
            b"64 27 7:0 / /t ro,nosuid,relatime,shared - ext4 /dev/loop0 rw,discard\n",
        )
        .unwrap();
        assert_eq!(
            observed_per_mount(&table.entries[0]),
            set(&["ro", "nosuid", "relatime"])
        );
    }
}
