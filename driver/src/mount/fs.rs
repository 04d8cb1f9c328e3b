//! Filesystems on a device: what blkid finds there, formatting a blank device, the
//! filesystem's own size, and growing it (ext4 offline or online, xfs online).

use std::path::Path;

use super::command;
use super::MountError;

/// The filesystems the node formats and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

/// A filesystem smaller than its device by more than this needs growing. Both ext4 and
/// xfs may leave a tail too small for one more allocation group unused (ext4: under
/// ~2.3 MiB of a 128 MiB group; xfs: under 64 blocks), and that is not a failed growth.
pub const GROW_SLACK_BYTES: u64 = 4 << 20;

impl FsType {
    /// Parse a capability's `fs_type`; empty means ext4.
    pub fn parse(field: &'static str, value: &str) -> Result<FsType, MountError> {
        match value {
            "" | "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            other => Err(MountError::InvalidField {
                field,
                value: other.to_string(),
                reason: "supported filesystems: ext4 (the default), xfs".into(),
            }),
        }
    }

    /// The name the kernel, blkid and mountinfo use.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// The type named `name` in mountinfo or blkid output, if we handle it.
    pub fn from_name(name: &str) -> Option<FsType> {
        match name {
            "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }
}

/// What a device holds, according to `blkid -p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No signature at all: safe to format.
    Blank,
    /// A filesystem of this type.
    Filesystem(String),
    /// Something else (a partition table, a RAID or LUKS member...): never formatted.
    Other(String),
}

/// blkid's exit code when it found no signature.
const BLKID_NOTHING_FOUND: i32 = 2;
/// blkid's exit code when signatures contradict each other.
const BLKID_AMBIVALENT: i32 = 8;

/// Interpret `blkid -p -o export` output and exit code. `None` for a failed run.
pub fn parse_blkid(code: Option<i32>, stdout: &str) -> Option<Probe> {
    match code {
        Some(0) => {}
        Some(BLKID_NOTHING_FOUND) => return Some(Probe::Blank),
        Some(BLKID_AMBIVALENT) => {
            return Some(Probe::Other("several conflicting signatures".into()))
        }
        _ => return None,
    }
    let value = |key: &str| {
        stdout.lines().find_map(|line| {
            line.trim()
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
    };
    Some(match (value("TYPE"), value("USAGE"), value("PTTYPE")) {
        (Some(t), None, _) => Probe::Filesystem(t),
        (Some(t), Some(usage), _) if usage == "filesystem" => Probe::Filesystem(t),
        (Some(t), Some(usage), _) => Probe::Other(format!("a {t} signature ({usage})")),
        (None, _, Some(pt)) => Probe::Other(format!("a {pt} partition table")),
        (None, _, None) => Probe::Other("an unrecognised signature".into()),
    })
}

/// Probe `device` for signatures, bypassing blkid's cache.
pub async fn probe(device: &Path) -> Result<Probe, MountError> {
    let args = command::args([
        "-p".as_ref(),
        "-o".as_ref(),
        "export".as_ref(),
        device.as_os_str(),
    ]);
    let output = command::run("blkid", &args).await?;
    parse_blkid(output.code, &output.stdout)
        .ok_or_else(|| command::failure("blkid", &args, &output))
}

/// Make a filesystem on a device that [`probe`] found blank. The tools are not forced,
/// so they refuse a device that holds a signature after all.
///
/// Neither tool discards the device first: a cloud volume is new and thin, so there is
/// nothing to discard, and a discard pass costs time that grows with the volume (it is
/// three quarters of mkfs.ext4's time on a 10 GiB loop device here).
pub async fn format(device: &Path, fs: FsType) -> Result<(), MountError> {
    let (program, no_discard) = match fs {
        FsType::Ext4 => ("mkfs.ext4", ["-E", "nodiscard"].as_slice()),
        FsType::Xfs => ("mkfs.xfs", ["-K"].as_slice()),
    };
    let mut args = command::args(std::iter::once(&"-q").chain(no_discard));
    args.push(device.as_os_str().to_owned());
    command::run_ok(program, &args).await.map(drop)
}

/// `dumpe2fs -h` output → the filesystem's size in bytes.
pub fn parse_dumpe2fs(text: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().parse().ok()
        })
    };
    field("Block count")?.checked_mul(field("Block size")?)
}

/// `xfs_info` output → the data section's size in bytes.
pub fn parse_xfs_info(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_start().starts_with("data"))?;
    let number = |key: &str| -> Option<u64> {
        let start = line.find(key)? + key.len();
        let digits: String = line[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    number("bsize=")?.checked_mul(number("blocks=")?)
}

/// The size the filesystem itself believes it has (from its superblock), in bytes.
/// `at` is the device for ext4 and the mount point (or the device) for xfs.
pub async fn size_bytes(fs: FsType, at: &Path) -> Result<u64, MountError> {
    let (program, args) = match fs {
        FsType::Ext4 => ("dumpe2fs", command::args(["-h".as_ref(), at.as_os_str()])),
        FsType::Xfs => ("xfs_info", command::args([at.as_os_str()])),
    };
    let output = command::run_ok(program, &args).await?;
    let parsed = match fs {
        FsType::Ext4 => parse_dumpe2fs(&output.stdout),
        FsType::Xfs => parse_xfs_info(&output.stdout),
    };
    parsed.ok_or_else(|| MountError::Command {
        program: program.to_string(),
        args: at.display().to_string(),
        status: "unexpected output".into(),
        stderr: output
            .stdout
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join(" / "),
    })
}

/// Whether a filesystem of `fs_bytes` on a device of `device_bytes` should grow.
pub fn needs_growth(fs_bytes: u64, device_bytes: u64) -> bool {
    device_bytes > fs_bytes.saturating_add(GROW_SLACK_BYTES)
}

/// Grow an unmounted ext4 filesystem to its device: a forced check first, which
/// resize2fs insists on, then the resize.
pub async fn grow_ext4_offline(device: &Path) -> Result<(), MountError> {
    let args = command::args(["-f".as_ref(), "-p".as_ref(), device.as_os_str()]);
    let output = command::run("e2fsck", &args).await?;
    // 0: clean; 1: errors fixed; 2: errors fixed, reboot advised (moot: it is unmounted).
    if !matches!(output.code, Some(0..=2)) {
        return Err(command::failure("e2fsck", &args, &output));
    }
    command::run_ok("resize2fs", &command::args([device.as_os_str()]))
        .await
        .map(drop)
}

/// Grow a mounted filesystem to its device. ext4 online growth needs CAP_SYS_RESOURCE;
/// its failure is [`MountError::CannotGrow`] with resize2fs's own words, so the CO
/// learns that it needs an offline expansion (unstage, then stage again).
pub async fn grow_online(fs: FsType, device: &Path, mount_point: &Path) -> Result<(), MountError> {
    match fs {
        FsType::Ext4 => {
            let args = command::args([device.as_os_str()]);
            let output = command::run("resize2fs", &args).await?;
            if output.code == Some(0) {
                return Ok(());
            }
            let said = match command::failure("resize2fs", &args, &output) {
                MountError::Command { stderr, status, .. } => format!("{status}: {stderr}"),
                other => other.to_string(),
            };
            Err(MountError::CannotGrow {
                path: mount_point.to_path_buf(),
                fs_type: fs.name().to_string(),
                reason: format!(
                    "online resize2fs {} failed ({}); unstage and stage the volume again to grow it offline",
                    device.display(),
                    said.replace('\n', " ")
                ),
            })
        }
        FsType::Xfs => {
            let args = command::args(["-d".as_ref(), mount_point.as_os_str()]);
            command::run_ok("xfs_growfs", &args).await.map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkid_exit_2_means_blank_and_anything_found_is_data() {
        assert_eq!(parse_blkid(Some(2), ""), Some(Probe::Blank));
        let ext4 = "DEVNAME=/dev/loop0\nUUID=e7\nVERSION=1.0\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n";
        assert_eq!(
            parse_blkid(Some(0), ext4),
            Some(Probe::Filesystem("ext4".into()))
        );
        assert_eq!(
            parse_blkid(Some(0), "DEVNAME=/dev/sdb\nPTUUID=1\nPTTYPE=gpt\n"),
            Some(Probe::Other("a gpt partition table".into()))
        );
        assert_eq!(
            parse_blkid(Some(0), "TYPE=crypto_LUKS\nUSAGE=crypto\n"),
            Some(Probe::Other("a crypto_LUKS signature (crypto)".into()))
        );
        assert_eq!(
            parse_blkid(Some(0), "DEVNAME=/dev/sdc\n"),
            Some(Probe::Other("an unrecognised signature".into()))
        );
        assert!(matches!(parse_blkid(Some(8), ""), Some(Probe::Other(_))));
        // A failed run is never mistaken for a blank device.
        assert_eq!(parse_blkid(Some(4), ""), None);
        assert_eq!(parse_blkid(None, ""), None);
        // PTTYPE must not be read as TYPE.
        assert_eq!(
            parse_blkid(Some(0), "PTTYPE=dos\n"),
            Some(Probe::Other("a dos partition table".into()))
        );
    }

    #[test]
    fn filesystem_sizes_are_read_from_tool_output() {
        let dumpe2fs = "Filesystem volume name:   <none>\nBlock count:              262144\nReserved block count:     13107\nBlock size:               4096\n";
        assert_eq!(parse_dumpe2fs(dumpe2fs), Some(1 << 30));
        assert_eq!(parse_dumpe2fs("Block size: 4096\n"), None);
        let xfs_info = "meta-data=/dev/loop0             isize=512    agcount=4, agsize=32768 blks\n         =                       sectsz=512   attr=2, projid32bit=1\ndata     =                       bsize=4096   blocks=131072, imaxpct=25\nlog      =internal log           bsize=4096   blocks=16384, version=2\n";
        assert_eq!(parse_xfs_info(xfs_info), Some(512 << 20));
        assert_eq!(parse_xfs_info("nothing"), None);
    }

    #[test]
    fn fs_type_defaults_to_ext4_and_rejects_the_rest() {
        assert_eq!(FsType::parse("fs_type", "").unwrap(), FsType::Ext4);
        assert_eq!(FsType::parse("fs_type", "xfs").unwrap(), FsType::Xfs);
        let err = FsType::parse("fs_type", "btrfs").unwrap_err();
        assert!(err.to_string().contains("btrfs"), "{err}");
    }

    #[test]
    fn growth_is_needed_only_beyond_the_slack() {
        assert!(!needs_growth(1 << 30, 1 << 30));
        assert!(!needs_growth(1 << 30, (1 << 30) + (2 << 20)));
        assert!(needs_growth(1 << 30, 2 << 30));
    }
}
