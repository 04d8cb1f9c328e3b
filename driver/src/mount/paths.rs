//! The paths a request names, checked before anything touches them.
//!
//! A request path must be absolute, at most [`MAX_PATH_BYTES`] long, free of NUL bytes and
//! of `.`/`..` components, and must not be `/`, `/dev`, or `/proc`, `/sys` or anything
//! under them. Parent directories are resolved (they may be symlinks, as
//! /var/lib/kubelet is on some distributions), but the final component never is: the node
//! creates, mounts on and removes exactly the path it was given, and a final component
//! that is a symlink is refused. Mounts then go through an `O_PATH` handle of the checked
//! file, so a swap between the check and the mount cannot redirect them.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use super::MountError;

/// The longest request path accepted, in bytes (PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// The longest volume id accepted, in bytes (the CSI limit for string fields).
pub const MAX_VOLUME_ID_BYTES: usize = 128;

/// Paths never used as a staging or target path.
const FORBIDDEN: &[&str] = &["/", "/proc", "/sys", "/dev"];

/// Trees nothing is ever mounted into or created in.
const FORBIDDEN_TREES: &[&str] = &["/proc", "/sys"];

fn invalid(field: &'static str, value: &str, reason: impl Into<String>) -> MountError {
    MountError::InvalidField {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Check a path from a request; returns it with repeated and trailing slashes removed.
pub fn validate(field: &'static str, value: &str) -> Result<PathBuf, MountError> {
    if value.is_empty() {
        return Err(MountError::MissingField { field });
    }
    if value.len() > MAX_PATH_BYTES {
        return Err(invalid(
            field,
            value,
            format!("longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(field, value, "contains a NUL byte"));
    }
    if !value.starts_with('/') {
        return Err(invalid(field, value, "must be an absolute path"));
    }
    let mut normalized = String::with_capacity(value.len());
    for segment in value.split('/').filter(|s| !s.is_empty()) {
        if segment == ".." {
            return Err(invalid(field, value, "must not contain '..' components"));
        }
        if segment == "." {
            return Err(invalid(field, value, "must not contain '.' components"));
        }
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    let path = PathBuf::from(normalized);
    check_not_forbidden(field, &path)?;
    Ok(path)
}

/// Refuse the system paths in [`FORBIDDEN`] and everything under [`FORBIDDEN_TREES`].
pub fn check_not_forbidden(field: &'static str, path: &Path) -> Result<(), MountError> {
    let text = path.to_string_lossy();
    if FORBIDDEN.iter().any(|f| path == Path::new(f)) {
        return Err(invalid(
            field,
            &text,
            "is a system path the node never uses",
        ));
    }
    if let Some(tree) = FORBIDDEN_TREES.iter().find(|t| path.starts_with(t)) {
        return Err(invalid(
            field,
            &text,
            format!("is under {tree}, where the node never mounts or creates anything"),
        ));
    }
    Ok(())
}

/// Check a volume id, which names the volume's image file in loop mode.
pub fn validate_volume_id(value: &str) -> Result<(), MountError> {
    const FIELD: &str = "volume_id";
    if value.is_empty() {
        return Err(MountError::MissingField { field: FIELD });
    }
    if value.len() > MAX_VOLUME_ID_BYTES {
        return Err(invalid(
            FIELD,
            value,
            format!("longer than {MAX_VOLUME_ID_BYTES} bytes"),
        ));
    }
    if value.contains(['/', '\0']) || value == "." || value == ".." {
        return Err(invalid(FIELD, value, "must not contain '/' or NUL"));
    }
    Ok(())
}

/// Check a file name that is joined onto a directory (a device link name): one plain
/// component, so the join cannot leave that directory.
pub fn validate_file_name(field: &'static str, value: &str) -> Result<(), MountError> {
    if value.is_empty() {
        return Err(MountError::MissingField { field });
    }
    let mut components = Path::new(value).components();
    let plain = matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !value.contains(['/', '\0'])
        && value.len() <= 255;
    if !plain {
        return Err(invalid(field, value, "must be a single file name"));
    }
    Ok(())
}

/// Resolve the parent directories of a validated path. `None` when the parent does not
/// exist; an error when it is not a directory, or resolves into a forbidden tree.
pub fn resolve(field: &'static str, path: &Path) -> Result<Option<PathBuf>, MountError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(invalid(
            field,
            &path.to_string_lossy(),
            "has no final component",
        ));
    };
    let parent = match std::fs::canonicalize(parent) {
        Ok(parent) => parent,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(MountError::UnusablePath {
                field,
                path: path.to_path_buf(),
                reason: "a parent component is not a directory".into(),
            })
        }
        Err(e) => {
            return Err(MountError::io(
                format!("resolving the parent of {field} {}", path.display()),
                e,
            ))
        }
    };
    let resolved = parent.join(name);
    check_not_forbidden(field, &resolved)?;
    Ok(Some(resolved))
}

/// What is at a path, with a final symlink reported as such, never followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Directory,
    File,
    BlockDevice,
    Symlink,
    Other(&'static str),
}

impl Kind {
    /// A few words for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Directory => "a directory",
            Kind::File => "a regular file",
            Kind::BlockDevice => "a block device",
            Kind::Symlink => "a symlink",
            Kind::Other(what) => what,
        }
    }
}

/// What is at `path`, without following a final symlink.
pub fn kind_of(path: &Path) -> Result<Kind, MountError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let t = meta.file_type();
            Ok(if t.is_symlink() {
                Kind::Symlink
            } else if t.is_dir() {
                Kind::Directory
            } else if t.is_file() {
                Kind::File
            } else if t.is_block_device() {
                Kind::BlockDevice
            } else if t.is_char_device() {
                Kind::Other("a character device")
            } else if t.is_socket() {
                Kind::Other("a socket")
            } else {
                Kind::Other("a fifo")
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Kind::Missing),
        Err(e) => Err(MountError::io(format!("inspecting {}", path.display()), e)),
    }
}

/// An open `O_PATH` handle of a checked file or directory. Mounting onto
/// [`Pinned::proc_path`] mounts onto exactly that inode, whatever happens to the path.
#[derive(Debug)]
pub struct Pinned {
    fd: OwnedFd,
}

impl Pinned {
    /// Open `path` without following a final symlink, and check it is `expected`.
    pub fn open(field: &'static str, path: &Path, expected: &Kind) -> Result<Pinned, MountError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| MountError::sys(format!("opening {field} {}", path.display()), e))?;
        let stat = nix::sys::stat::fstat(&fd)
            .map_err(|e| MountError::sys(format!("inspecting {}", path.display()), e))?;
        let kind = match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => Kind::Directory,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFBLK => Kind::BlockDevice,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other("a special file"),
        };
        if &kind != expected {
            return Err(MountError::UnusablePath {
                field,
                path: path.to_path_buf(),
                reason: format!("is {}, expected {}", kind.describe(), expected.describe()),
            });
        }
        Ok(Pinned { fd })
    }

    /// The `/proc/self/fd/N` path that names the pinned inode.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Create the directory `path` (its final component only). `Ok(false)` when something
/// is already there.
pub fn create_dir(field: &'static str, path: &Path) -> Result<bool, MountError> {
    match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o750)) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(MountError::sys(
            format!("creating {field} {}", path.display()),
            e,
        )),
    }
}

/// Create the empty file `path`, never through a symlink. `Ok(false)` when something is
/// already there.
pub fn create_file(field: &'static str, path: &Path) -> Result<bool, MountError> {
    match nix::fcntl::open(
        path,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o640),
    ) {
        Ok(fd) => {
            drop(fd);
            Ok(true)
        }
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(MountError::sys(
            format!("creating {field} {}", path.display()),
            e,
        )),
    }
}

/// Whether the directory `path` has no entries.
pub fn dir_is_empty(path: &Path) -> Result<bool, MountError> {
    let mut entries = std::fs::read_dir(path)
        .map_err(|e| MountError::io(format!("listing {}", path.display()), e))?;
    Ok(entries.next().is_none())
}

/// Remove a target the node created: an empty directory or a regular file (never
/// recursively, never through a symlink, never anything else). Already gone is fine.
pub fn remove_target(field: &'static str, path: &Path) -> Result<(), MountError> {
    let result = match kind_of(path)? {
        Kind::Missing => return Ok(()),
        Kind::Directory => std::fs::remove_dir(path),
        Kind::File => std::fs::remove_file(path),
        other => {
            return Err(MountError::UnusablePath {
                field,
                path: path.to_path_buf(),
                reason: format!(
                    "is {}; the node only removes what it created",
                    other.describe()
                ),
            })
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Err(MountError::UnusablePath {
            field,
            path: path.to_path_buf(),
            reason: "is not empty after unmounting; its contents are not ours to delete".into(),
        }),
        Err(e) => Err(MountError::io(format!("removing {}", path.display()), e)),
    }
}

/// `path` as bytes, for comparisons that must not depend on UTF-8.
pub fn bytes(path: &Path) -> &[u8] {
    OsStr::as_bytes(path.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(field: &'static str, value: &str) -> String {
        validate(field, value).unwrap_err().to_string()
    }

    #[test]
    fn good_paths_are_accepted_and_normalized() {
        assert_eq!(
            validate("target_path", "/var/lib/kubelet/pods/x/mount").unwrap(),
            PathBuf::from("/var/lib/kubelet/pods/x/mount")
        );
        assert_eq!(
            validate("target_path", "//tmp//a/b/").unwrap(),
            PathBuf::from("/tmp/a/b")
        );
        assert!(validate("target_path", "/dev/shm/target").is_ok());
        assert!(validate("target_path", "/tmp/with space/é").is_ok());
    }

    #[test]
    fn hostile_paths_are_invalid_and_name_the_field() {
        for (value, expected) in [
            ("relative/path", "absolute"),
            ("/a/../etc", "'..'"),
            ("/a/..", "'..'"),
            ("/a/./b", "'.'"),
            ("/tmp/a\0b", "NUL"),
            ("/", "system path"),
            ("///", "system path"),
            ("/proc", "system path"),
            ("/proc/1/root", "under /proc"),
            ("/sys/fs/cgroup", "under /sys"),
            ("/dev", "system path"),
            ("/dev/", "system path"),
        ] {
            let text = reason("staging_target_path", value);
            assert!(text.contains("staging_target_path"), "{value:?}: {text}");
            assert!(text.contains(expected), "{value:?}: {text}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        let text = reason("target_path", &long);
        assert!(text.contains("longer than 4096"), "{text}");
        assert!(text.len() < 300, "hostile values are shortened: {text}");
        assert!(matches!(
            validate("target_path", ""),
            Err(MountError::MissingField {
                field: "target_path"
            })
        ));
        // 4096 bytes exactly is still fine.
        let max = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert!(validate("target_path", &max).is_ok());
    }

    #[test]
    fn volume_ids_and_link_names_cannot_leave_their_directory() {
        assert!(validate_volume_id("0b6a3c1e-9f1c-4d8e-bf0e-3f5b1e6a2c11").is_ok());
        for bad in ["", "a/b", "..", ".", "a\0b"] {
            assert!(validate_volume_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_volume_id(&"v".repeat(129)).is_err());
        assert!(validate_file_name("device-link", "scsi-0DO_Volume_pvc-1").is_ok());
        for bad in ["", "../sda", "a/b", "..", ".", "/dev/sda"] {
            assert!(validate_file_name("device-link", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_symlinked_parent_is_resolved_but_may_not_lead_into_proc() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let resolved = resolve("target_path", &dir.path().join("link/target"))
            .unwrap()
            .unwrap();
        assert_eq!(resolved, real.canonicalize().unwrap().join("target"));

        std::os::unix::fs::symlink("/proc/self", dir.path().join("evil")).unwrap();
        let err = resolve("target_path", &dir.path().join("evil/target")).unwrap_err();
        assert!(err.to_string().contains("under /proc"), "{err}");

        assert_eq!(
            resolve("target_path", &dir.path().join("missing/target")).unwrap(),
            None
        );
    }

    #[test]
    fn a_final_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let link = dir.path().join("target");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert_eq!(kind_of(&link).unwrap(), Kind::Symlink);
        assert!(!create_dir("target_path", &link).unwrap());
        assert!(!create_file("target_path", &link).unwrap());
        let err = Pinned::open("target_path", &link, &Kind::Directory).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        let err = remove_target("target_path", &link).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(victim.is_dir() && link.exists());
    }

    #[test]
    fn removal_takes_only_empty_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        assert!(create_dir("target_path", &target).unwrap());
        std::fs::write(target.join("data"), b"x").unwrap();
        let err = remove_target("target_path", &target).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(target.join("data").exists());
        std::fs::remove_file(target.join("data")).unwrap();
        remove_target("target_path", &target).unwrap();
        assert!(!target.exists());
        remove_target("target_path", &target).unwrap();

        let file = dir.path().join("block-target");
        assert!(create_file("target_path", &file).unwrap());
        assert!(!create_file("target_path", &file).unwrap());
        remove_target("target_path", &file).unwrap();
        assert!(!file.exists());
    }
}
