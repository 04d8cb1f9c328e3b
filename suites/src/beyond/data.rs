//! Data through the real node path: a seeded pseudo-random pattern written where a
//! volume is published (a file in a mount volume, raw blocks at several offsets of a
//! block volume), synced, and read back byte for byte later.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::check::{Failure, Stop};
use crate::Ctx;

/// The size of the pattern file in a mount volume.
const FILE_BYTES: usize = 1 << 20;
/// The size of each raw chunk in a block volume.
const CHUNK_BYTES: usize = 256 << 10;

const DATA_RULE: &str = "spec NodePublishVolume / NodeStageVolume: the volume at target_path is the volume's storage — data written there MUST read back the same";

/// A seeded pseudo-random byte stream (splitmix64): the same seed, the same bytes.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A 64-bit FNV-1a checksum, for messages.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What was written, so it can be checked later: where, and from which seed.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    seed: u64,
    /// Mount volumes: the file's name inside the volume.
    file: Option<String>,
    /// Block volumes: the offsets of the chunks.
    offsets: Vec<u64>,
}

/// Whether this run can read and write what the driver publishes: the harness must
/// see the target path (no remote path commands) and be allowed to write there.
pub(crate) fn data_reachable(ctx: &Ctx) -> Result<(), Stop> {
    let config = ctx.config();
    if config.check_path_cmd.is_some() || config.create_target_path_cmd.is_some() {
        return Err(Stop::skip(
            "target paths live elsewhere (path commands are configured), so the harness can't read the data",
        ));
    }
    if !ctx.caps().root {
        return Err(Stop::skip("skipped: needs root"));
    }
    Ok(())
}

fn io_failure(what: String, e: std::io::Error) -> Failure {
    Failure::new(what, e.to_string(), DATA_RULE)
}

/// Run blocking file I/O off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Stop> + Send + 'static,
) -> Result<T, Stop> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Failure::new("the I/O task to finish", e.to_string(), DATA_RULE).into())
    })
}

/// The size of a block device (or file) at `path`.
fn device_size(path: &Path) -> Result<u64, Stop> {
    let mut f = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|e| io_failure(format!("to open {}", path.display()), e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| io_failure(format!("to find the size of {}", path.display()), e).into())
}

/// Offsets for block chunks: the start, 1 GiB in when the device is big enough, and
/// the last whole chunk, all 4 KiB aligned.
fn chunk_offsets(size: u64) -> Vec<u64> {
    let chunk = CHUNK_BYTES as u64;
    let mut offsets = vec![0];
    if size >= (1 << 30) + 2 * chunk {
        offsets.push(1 << 30);
    }
    if size >= 2 * chunk {
        offsets.push((size - chunk) & !4095);
    }
    offsets.dedup();
    offsets
}

/// Write the pattern for `seed` where the volume is published at `target`, and sync
/// it to the device.
pub(crate) async fn write_pattern(ctx: &Ctx, target: &str, seed: u64) -> Result<Written, Stop> {
    let target = PathBuf::from(target);
    let block = ctx.config().is_block();
    blocking(move || {
        if block {
            let size = device_size(&target)?;
            let offsets = chunk_offsets(size);
            let mut f = OpenOptions::new().write(true).open(&target).map_err(|e| {
                io_failure(
                    format!("to open the block volume at {}", target.display()),
                    e,
                )
            })?;
            for (i, off) in offsets.iter().enumerate() {
                f.seek(SeekFrom::Start(*off))
                    .and_then(|_| f.write_all(&pattern(seed + i as u64, CHUNK_BYTES)))
                    .map_err(|e| {
                        io_failure(format!("to write {CHUNK_BYTES} bytes at offset {off}"), e)
                    })?;
            }
            f.sync_all()
                .map_err(|e| io_failure("to sync the block volume".into(), e))?;
            return Ok(Written {
                seed,
                file: None,
                offsets,
            });
        }
        let name = format!("beyond-pattern-{seed}.bin");
        let path = target.join(&name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_failure(format!("to create {}", path.display()), e))?;
        f.write_all(&pattern(seed, FILE_BYTES))
            .and_then(|_| f.sync_all())
            .map_err(|e| io_failure(format!("to write and sync {}", path.display()), e))?;
        // The new directory entry must reach the device too.
        std::fs::File::open(&target)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_failure(format!("to sync the directory {}", target.display()), e))?;
        Ok(Written {
            seed,
            file: Some(name),
            offsets: Vec::new(),
        })
    })
    .await
}

/// Read back what [`write_pattern`] wrote, now published at `target` (possibly another
/// volume made from the first, or the same one published again).
pub(crate) async fn verify_pattern(
    ctx: &Ctx,
    target: &str,
    written: &Written,
    rule: &str,
) -> Result<(), Stop> {
    let target = PathBuf::from(target);
    let written = written.clone();
    let rule = rule.to_string();
    let block = ctx.config().is_block();
    blocking(move || {
        let mismatch = |what: String, want: &[u8], got: &[u8]| {
            let at = want
                .iter()
                .zip(got)
                .position(|(a, b)| a != b)
                .unwrap_or(want.len().min(got.len()));
            Failure::new(
                format!(
                    "{what}: {} bytes, checksum {:016x}",
                    want.len(),
                    checksum(want)
                ),
                format!(
                    "{} bytes, checksum {:016x}, first difference at byte {at}",
                    got.len(),
                    checksum(got)
                ),
                &rule,
            )
        };
        if block {
            let mut f = OpenOptions::new().read(true).open(&target).map_err(|e| {
                io_failure(
                    format!("to open the block volume at {}", target.display()),
                    e,
                )
            })?;
            for (i, off) in written.offsets.iter().enumerate() {
                let want = pattern(written.seed + i as u64, CHUNK_BYTES);
                let mut got = vec![0u8; CHUNK_BYTES];
                f.seek(SeekFrom::Start(*off))
                    .and_then(|_| f.read_exact(&mut got))
                    .map_err(|e| {
                        io_failure(format!("to read {CHUNK_BYTES} bytes at offset {off}"), e)
                    })?;
                if got != want {
                    return Err(mismatch(
                        format!("the chunk written at offset {off}"),
                        &want,
                        &got,
                    )
                    .into());
                }
            }
            return Ok(());
        }
        let name = written.file.clone().unwrap_or_default();
        let path = target.join(&name);
        let got = std::fs::read(&path).map_err(|e| {
            Failure::new(
                format!("the file {name} written earlier"),
                format!("reading {}: {e}", path.display()),
                &rule,
            )
        })?;
        let want = pattern(written.seed, FILE_BYTES);
        if got != want {
            return Err(mismatch(format!("the file {name}"), &want, &got).into());
        }
        Ok(())
    })
    .await
}

/// The size the volume shows where it is published: the filesystem's total bytes
/// (statvfs) for a mount volume, the device's size for a block volume.
pub(crate) async fn visible_size(ctx: &Ctx, target: &str) -> Result<u64, Stop> {
    let target = PathBuf::from(target);
    let block = ctx.config().is_block();
    blocking(move || {
        if block {
            return device_size(&target);
        }
        let st = nix::sys::statvfs::statvfs(&target).map_err(|e| {
            Failure::new(
                format!("to statvfs {}", target.display()),
                e.to_string(),
                DATA_RULE,
            )
        })?;
        Ok(st.blocks() as u64 * st.fragment_size() as u64)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_reproducible_and_seed_dependent() {
        assert_eq!(pattern(7, 100), pattern(7, 100));
        assert_ne!(pattern(7, 100), pattern(8, 100));
        assert_eq!(pattern(7, 13).len(), 13);
        assert_eq!(&pattern(7, 100)[..13], &pattern(7, 13)[..]);
    }

    #[test]
    fn chunk_offsets_stay_inside_the_device() {
        assert_eq!(
            chunk_offsets(10 << 30),
            vec![0, 1 << 30, (10 << 30) - (256 << 10)]
        );
        assert_eq!(chunk_offsets(1 << 20), vec![0, (1 << 20) - (256 << 10)]);
        assert_eq!(chunk_offsets(4096), vec![0]);
    }
}
