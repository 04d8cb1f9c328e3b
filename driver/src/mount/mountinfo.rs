//! What is mounted where, read from `/proc/self/mountinfo`.
//!
//! The node keeps no other record: idempotency checks, "is this volume published
//! elsewhere" and volume health all come from this table, so they hold after a restart.
//! Each line is `id parent major:minor root mount_point options [optional...] - fstype
//! source super_options`; paths escape space, tab, newline and backslash as `\ooo`.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::MountError;

/// Where the kernel publishes this process's mount table.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// A device number, as `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId {
    pub major: u64,
    pub minor: u64,
}

impl DeviceId {
    /// Split a `dev_t` (st_dev or st_rdev).
    pub fn from_dev_t(dev: libc::dev_t) -> DeviceId {
        DeviceId {
            major: nix::sys::stat::major(dev),
            minor: nix::sys::stat::minor(dev),
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    /// The device of the mounted filesystem (for a bind of a device file: the device of
    /// the filesystem holding that file, e.g. devtmpfs).
    pub device: DeviceId,
    /// The path inside that filesystem that is mounted (`/` for a whole filesystem).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options: `rw`/`ro`, `nosuid`, `nodev`, `noexec`, atime flags.
    pub mount_options: Vec<String>,
    pub fs_type: String,
    pub source: String,
    /// Options of the filesystem itself (shared by every mount of it).
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether this mount is read-only.
    pub fn read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }

    /// Whether the filesystem itself is read-only (ext4 and xfs switch to that after
    /// errors, whatever the mounts say).
    pub fn filesystem_read_only(&self) -> bool {
        self.super_options.iter().any(|o| o == "ro")
    }
}

/// The whole mount table, in mount order (a later entry at the same mount point covers
/// an earlier one).
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    pub entries: Vec<MountEntry>,
}

impl MountTable {
    /// Read this process's mount table.
    pub fn read() -> Result<MountTable, MountError> {
        let bytes = std::fs::read(MOUNTINFO).map_err(|e| MountError::io(MOUNTINFO, e))?;
        MountTable::parse(&bytes)
    }

    /// Parse mountinfo text.
    pub fn parse(text: &[u8]) -> Result<MountTable, MountError> {
        let entries = text
            .split(|&b| b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MountTable { entries })
    }

    /// The visible (topmost) mount at exactly `path`.
    pub fn at(&self, path: &Path) -> Option<&MountEntry> {
        self.entries.iter().rev().find(|e| e.mount_point == path)
    }

    /// Every mount of the filesystem on `device`, at any root.
    pub fn of_device(&self, device: DeviceId) -> impl Iterator<Item = &MountEntry> {
        self.entries.iter().filter(move |e| e.device == device)
    }

    /// The mount whose tree holds `path` (the longest mount point that is a prefix of it).
    pub fn containing(&self, path: &Path) -> Option<&MountEntry> {
        self.entries
            .iter()
            .rev()
            .filter(|e| path.starts_with(&e.mount_point))
            .max_by_key(|e| e.mount_point.as_os_str().len())
    }

    /// Every mount of the file `file_root` of the filesystem `device`: the bind mounts of
    /// one device node (see [`FileOnFs`]).
    pub fn binds_of(&self, file: &FileOnFs) -> impl Iterator<Item = &MountEntry> + '_ {
        let file = file.clone();
        self.entries
            .iter()
            .filter(move |e| e.device == file.device && e.root == file.root)
    }
}

/// A file named by the filesystem it lives on and its path inside that filesystem:
/// how mountinfo names the source of a bind mount of that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOnFs {
    pub device: DeviceId,
    pub root: PathBuf,
}

impl FileOnFs {
    /// Locate the canonical path `path`, whose st_dev is `device`, in the mount table.
    pub fn locate(table: &MountTable, path: &Path, device: DeviceId) -> Option<FileOnFs> {
        let mount = table
            .entries
            .iter()
            .rev()
            .filter(|e| e.device == device && path.starts_with(&e.mount_point))
            .max_by_key(|e| e.mount_point.as_os_str().len())?;
        let inside = path.strip_prefix(&mount.mount_point).ok()?;
        Some(FileOnFs {
            device,
            root: mount.root.join(inside),
        })
    }
}

fn parse_line(line: &[u8]) -> Result<MountEntry, MountError> {
    let bad = |reason: &str| MountError::MountTable {
        line: String::from_utf8_lossy(line).into_owned(),
        reason: reason.to_string(),
    };
    let fields: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .collect();
    let separator = fields
        .iter()
        .position(|f| *f == b"-")
        .ok_or_else(|| bad("no '-' separator"))?;
    if separator < 6 || fields.len() < separator + 3 {
        return Err(bad("too few fields"));
    }
    let text = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
    let number = |f: &[u8], what: &str| -> Result<u64, MountError> {
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad {what}")))
    };
    let (major, minor) = {
        let s = std::str::from_utf8(fields[2]).map_err(|_| bad("bad major:minor"))?;
        let (a, b) = s.split_once(':').ok_or_else(|| bad("bad major:minor"))?;
        (
            a.parse().map_err(|_| bad("bad major"))?,
            b.parse().map_err(|_| bad("bad minor"))?,
        )
    };
    let options = |f: &[u8]| -> Vec<String> {
        text(f)
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(MountEntry {
        id: number(fields[0], "mount id")?,
        parent: number(fields[1], "parent id")?,
        device: DeviceId { major, minor },
        root: path(fields[3]),
        mount_point: path(fields[4]),
        mount_options: options(fields[5]),
        fs_type: text(fields[separator + 1]),
        source: text(fields[separator + 2]),
        super_options: fields
            .get(separator + 3)
            .map(|f| options(f))
            .unwrap_or_default(),
    })
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Undo the kernel's `\ooo` octal escapes; a backslash not followed by three octal
/// digits is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,nosuid,relatime shared:2 - devtmpfs devtmpfs rw,size=12334492k,mode=755
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
63 27 7:0 / /tmp/csi\\040test/staging rw,relatime shared:5 master:1 - ext4 /dev/loop0 rw
64 27 7:0 / /tmp/csi\\040test/target ro,nosuid,nodev,noexec,relatime - ext4 /dev/loop0 rw
65 27 0:6 /loop1 /tmp/block\\011tab\\012nl\\134back rw,relatime - devtmpfs devtmpfs rw,size=12334492k
66 27 7:2 / /tmp/bad ro,relatime - xfs /dev/loop2 ro,attr2,inode64
";

    #[test]
    fn octal_escapes_in_paths_are_decoded() {
        let table = MountTable::parse(SAMPLE.as_bytes()).unwrap();
        let staging = table
            .at(Path::new("/tmp/csi test/staging"))
            .expect("a mount point with a space");
        assert_eq!(staging.device, DeviceId { major: 7, minor: 0 });
        assert_eq!(staging.fs_type, "ext4");
        assert_eq!(staging.source, "/dev/loop0");
        assert!(!staging.read_only());
        let block = table
            .at(Path::new("/tmp/block\ttab\nnl\\back"))
            .expect("tab, newline and backslash");
        assert_eq!(block.root, PathBuf::from("/loop1"));
        assert_eq!(unescape(b"a\\040b\\x\\12"), b"a b\\x\\12".to_vec());
        assert_eq!(unescape(b"end\\"), b"end\\".to_vec());
        assert_eq!(unescape(b"\\777"), b"\\777".to_vec());
    }

    #[test]
    fn optional_fields_and_options_are_split() {
        let table = MountTable::parse(SAMPLE.as_bytes()).unwrap();
        let target = table.at(Path::new("/tmp/csi test/target")).unwrap();
        assert!(target.read_only());
        assert_eq!(
            target.mount_options,
            ["ro", "nosuid", "nodev", "noexec", "relatime"]
        );
        assert_eq!(target.super_options, ["rw"]);
        let bad = table.at(Path::new("/tmp/bad")).unwrap();
        assert!(bad.filesystem_read_only());
        assert_eq!(bad.super_options, ["ro", "attr2", "inode64"]);
        assert_eq!(table.of_device(DeviceId { major: 7, minor: 0 }).count(), 2);
    }

    #[test]
    fn a_device_file_is_located_on_its_filesystem() {
        let table = MountTable::parse(SAMPLE.as_bytes()).unwrap();
        let devtmpfs = DeviceId { major: 0, minor: 6 };
        let file = FileOnFs::locate(&table, Path::new("/dev/loop1"), devtmpfs).unwrap();
        assert_eq!(file.root, PathBuf::from("/loop1"));
        let binds: Vec<_> = table.binds_of(&file).map(|e| e.id).collect();
        assert_eq!(binds, [65]);
        assert_eq!(
            table
                .containing(Path::new("/dev/loop1"))
                .unwrap()
                .mount_point,
            PathBuf::from("/dev")
        );
    }

    #[test]
    fn the_topmost_of_stacked_mounts_wins() {
        let text = "\
70 27 7:0 / /mnt rw,relatime - ext4 /dev/loop0 rw
71 70 7:1 / /mnt ro,relatime - ext4 /dev/loop1 rw
";
        let table = MountTable::parse(text.as_bytes()).unwrap();
        assert_eq!(table.at(Path::new("/mnt")).unwrap().id, 71);
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for line in [
            "",
            "1 2 3",
            "1 2 x:y / / rw - ext4 src rw",
            "a b 1:2 / / rw - x y z",
        ] {
            if line.is_empty() {
                assert!(MountTable::parse(line.as_bytes())
                    .unwrap()
                    .entries
                    .is_empty());
            } else {
                assert!(MountTable::parse(line.as_bytes()).is_err(), "{line:?}");
            }
        }
    }

    #[test]
    fn this_process_mount_table_is_readable() {
        let table = MountTable::read().unwrap();
        assert!(table.at(Path::new("/")).is_some());
    }
}
