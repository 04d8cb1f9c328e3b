//! Block data: each volume's bytes in a sparse image file, and snapshot copies
//! that cost only the data actually written.
//!
//! Layout under the data directory: `volumes/<volume_id>.img` and
//! `snapshots/<snapshot_id>.img`. Code outside this crate (the driver's loop-device
//! source, which attaches a volume's image as a loop device) asks [`volume_image`] and
//! [`volume_images_dir`] where they are, and never spells the layout itself.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes in one GiB.
pub const GIB: u64 = 1 << 30;

/// Chunk size of the sparse copy; an all-zero chunk is skipped.
const CHUNK: usize = 1 << 20;

/// The folder of the data directory that holds the volume images.
const VOLUMES: &str = "volumes";

/// The folder of `data_dir` that holds the volume images.
pub fn volume_images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(VOLUMES)
}

/// Where a cloud with data directory `data_dir` keeps the bytes of volume `volume_id`:
/// `<data_dir>/volumes/<volume_id>.img`. The file exists exactly while the volume does.
pub fn volume_image(data_dir: &Path, volume_id: &str) -> PathBuf {
    volume_images_dir(data_dir).join(format!("{volume_id}.img"))
}

/// Where volume and snapshot images live.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    /// Whether changes are fsynced: they must be when the metadata is persisted, or a
    /// crash could leave `state.json` describing images that are not on disk.
    durable: bool,
}

impl ImageStore {
    /// A store rooted at `data_dir`; creates its folders.
    pub fn open(data_dir: &Path) -> io::Result<ImageStore> {
        fs::create_dir_all(volume_images_dir(data_dir))?;
        fs::create_dir_all(data_dir.join("snapshots"))?;
        Ok(ImageStore {
            root: data_dir.to_path_buf(),
            durable: true,
        })
    }

    /// The same store without fsyncs, for a cloud whose metadata dies with the process.
    pub fn not_durable(self) -> ImageStore {
        ImageStore {
            durable: false,
            ..self
        }
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        if self.durable {
            file.sync_all()
        } else {
            Ok(())
        }
    }

    /// `<data_dir>/volumes/<volume_id>.img`.
    pub fn volume_path(&self, volume_id: &str) -> PathBuf {
        volume_image(&self.root, volume_id)
    }

    /// `<data_dir>/snapshots/<snapshot_id>.img`.
    pub fn snapshot_path(&self, snapshot_id: &str) -> PathBuf {
        self.root
            .join("snapshots")
            .join(format!("{snapshot_id}.img"))
    }

    /// Creates a blank (all-hole) image of `size_bytes`.
    pub fn create_blank(&self, path: &Path, size_bytes: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(size_bytes)?;
        self.sync(&file)
    }

    /// Copies `src` to a new file `dst` (reflink if possible, else a sparse
    /// copy), then sets its length to `size_bytes` when that is larger.
    pub fn copy(&self, src: &Path, dst: &Path, size_bytes: u64) -> io::Result<()> {
        let result = copy_image(src, dst).and_then(|()| {
            let file = OpenOptions::new().write(true).open(dst)?;
            if file.metadata()?.len() < size_bytes {
                file.set_len(size_bytes)?;
            }
            self.sync(&file)
        });
        if result.is_err() {
            // Leave no half-copied image behind.
            let _ = fs::remove_file(dst);
        }
        result
    }

    /// Grows the image at `path` to `size_bytes` (never shrinks it).
    pub fn grow(&self, path: &Path, size_bytes: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        if file.metadata()?.len() < size_bytes {
            file.set_len(size_bytes)?;
        }
        self.sync(&file)
    }

    /// Removes the images (`*.img`) that no volume or snapshot the state knows names:
    /// what an earlier process whose state died with it made, or what a crash between
    /// writing an image and recording it left. Other files are left alone. Returns the
    /// images removed.
    pub fn reclaim_unnamed(
        &self,
        is_volume: impl Fn(&str) -> bool,
        is_snapshot: impl Fn(&str) -> bool,
    ) -> io::Result<Vec<PathBuf>> {
        let mut removed = self.reclaim_in(VOLUMES, is_volume)?;
        removed.extend(self.reclaim_in("snapshots", is_snapshot)?);
        Ok(removed)
    }

    /// [`ImageStore::reclaim_unnamed`] in one folder.
    fn reclaim_in(&self, folder: &str, known: impl Fn(&str) -> bool) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(self.root.join(folder))? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".img"))
            else {
                continue;
            };
            if !known(id) {
                self.remove(&path)?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// Removes an image; a missing file is not an error.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Copies `src` into a new file `dst`: a reflink (FICLONE) where the file
/// system shares extents (btrfs, xfs), else a copy of the data regions only.
pub fn copy_image(src: &Path, dst: &Path) -> io::Result<()> {
    let source = File::open(src)?;
    let target = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)?;
    if reflink(&source, &target).is_ok() {
        return Ok(());
    }
    sparse_copy(&source, &target)
}

fn reflink(source: &File, target: &File) -> io::Result<()> {
    // SAFETY: both descriptors are open for the duration of the call; FICLONE
    // takes the source descriptor as its argument and touches no memory.
    let rc = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies the data regions of `source` (found with SEEK_DATA/SEEK_HOLE, or the
/// whole file where those are unsupported), skipping all-zero chunks, so holes
/// stay holes and a mostly empty 10 GiB image costs almost nothing.
fn sparse_copy(source: &File, target: &File) -> io::Result<()> {
    let len = source.metadata()?.len();
    target.set_len(len)?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let (start, end) = match next_data_region(source, offset, len)? {
            Some(region) => region,
            None => break,
        };
        let mut pos = start;
        while pos < end {
            let want = usize::try_from((end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = source.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            if chunk.iter().any(|&b| b != 0) {
                target.write_all_at(chunk, pos)?;
            }
            pos += n as u64;
        }
        offset = end.max(offset + 1);
    }
    Ok(())
}

/// The next `[start, end)` range at or after `offset` that may hold data, or
/// None past the last. Falls back to "everything is data" where the file
/// system does not support SEEK_DATA.
fn next_data_region(file: &File, offset: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(Some((offset, len)));
    };
    // SAFETY: lseek on an open descriptor; no memory is passed.
    let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
    if data < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            // ENXIO: no data at or after offset.
            Some(libc::ENXIO) => Ok(None),
            // EINVAL and friends: SEEK_DATA unsupported; scan everything.
            _ => Ok(Some((offset, len))),
        };
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
    let start = u64::try_from(data).unwrap_or(offset);
    let end = if hole < 0 {
        len
    } else {
        u64::try_from(hole).unwrap_or(len).min(len)
    };
    Ok(Some((start, end.max(start))))
}

/// Bytes actually allocated on disk for `path` (for tests and reports).
#[cfg(test)]
fn allocated_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_data_and_holes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ImageStore::open(dir.path())?;
        let src = store.volume_path("src");
        store.create_blank(&src, 4 * GIB)?;
        let f = OpenOptions::new().write(true).open(&src)?;
        f.write_all_at(b"hello", 0)?;
        f.write_all_at(b"world", 3 * GIB)?;
        drop(f);

        let dst = store.snapshot_path("snap");
        // Force the non-reflink path so it is tested on every file system.
        let source = File::open(&src)?;
        let target = OpenOptions::new().write(true).create_new(true).open(&dst)?;
        sparse_copy(&source, &target)?;
        drop(target);

        let copy = File::open(&dst)?;
        assert_eq!(copy.metadata()?.len(), 4 * GIB);
        let mut buf = [0u8; 5];
        copy.read_exact_at(&mut buf, 0)?;
        assert_eq!(&buf, b"hello");
        copy.read_exact_at(&mut buf, 3 * GIB)?;
        assert_eq!(&buf, b"world");
        // 4 GiB apparent, only a few MiB written.
        assert!(allocated_bytes(&dst)? < 64 << 20);
        Ok(())
    }

    #[test]
    fn copy_grows_to_requested_size_and_remove_is_idempotent() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ImageStore::open(dir.path())?;
        let src = store.snapshot_path("s");
        store.create_blank(&src, GIB)?;
        let dst = store.volume_path("v");
        store.copy(&src, &dst, 2 * GIB)?;
        assert_eq!(fs::metadata(&dst)?.len(), 2 * GIB);
        store.grow(&dst, 3 * GIB)?;
        assert_eq!(fs::metadata(&dst)?.len(), 3 * GIB);
        store.remove(&dst)?;
        store.remove(&dst)?;
        assert!(!dst.exists());
        Ok(())
    }
}
