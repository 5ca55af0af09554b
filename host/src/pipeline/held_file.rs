//! One handler's held changes on disk: an append-only file beside the
//! store, `held/<tenant>/<name>` in the state directory.
//!
//! Each record is its length (4 bytes, big-endian) and then
//! [`HeldChange::to_bytes`]. The store keeps, per handler, the
//! [`HeldRange`] that is held: the offset of its oldest record, the end of
//! its newest, and their count and size. A change is held by appending it
//! (buffered, written in large pieces); the checkpoint makes the file
//! durable before the store records the range that covers it, so the
//! position never passes a held change a crash could lose. Handing changes
//! over moves the range's start; once the store records an empty range the
//! file is cut back to nothing. At open, whatever lies past the stored end
//! (appended after the last checkpoint, so its changes come again from the
//! binlog) is cut off.
//!
//! Holding a change costs a copy into the buffer, not a database write;
//! reading them back costs one read per [`READ_BLOCK`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::store::{HeldChange, HeldRange};

/// Appends are written to the file once this many bytes wait.
const WRITE_BLOCK: usize = 1 << 20;
/// Records are read back this many bytes at a time (more for a larger one).
const READ_BLOCK: usize = 1 << 20;

/// The file of one handler's held changes.
pub struct HeldFile {
    path: PathBuf,
    file: File,
    /// Appended records not yet written to the file; they start at `written`.
    pending: Vec<u8>,
    /// The file's length: where `pending` goes.
    written: u64,
    /// Whether the file has writes that are not yet synced.
    dirty: bool,
    /// Bytes read from the file, starting at offset `read_from`.
    read_buf: Vec<u8>,
    read_from: u64,
}

impl HeldFile {
    /// Opens (creating) the file of handler `key` (`tenant/name`) under
    /// `dir`, holding `range` as the store recorded it: anything past its
    /// end is cut off, and an empty range empties the file.
    pub fn open(dir: &Path, key: &str, range: HeldRange) -> anyhow::Result<HeldFile> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let path = dir.join(key);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .with_context(|| format!("opening the held changes file {}", path.display()))?;
        let len = file.metadata()?.len();
        let keep = if range.is_empty() { 0 } else { range.end };
        anyhow::ensure!(
            len >= keep,
            "the held changes file {} holds {len} bytes, but the store counts {} changes held up to byte {}: it was cut or replaced, and the changes past its end are lost; restore the file, or move the state directory aside to start without them",
            path.display(),
            range.count,
            range.end
        );
        if len > keep {
            file.set_len(keep)
                .with_context(|| format!("cutting {} back to {keep} bytes", path.display()))?;
        }
        Ok(HeldFile {
            path,
            file,
            pending: Vec::new(),
            written: keep,
            dirty: len > keep,
            read_buf: Vec::new(),
            read_from: 0,
        })
    }

    /// Where the next record goes.
    pub fn end(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Appends a record of change `id`, its `json` and its `encoded` form;
    /// returns the offset after it.
    pub fn append(&mut self, id: &str, json: &[u8], encoded: &[u8]) -> anyhow::Result<u64> {
        let len = HeldChange::bytes_len(id, json, encoded);
        let len32 = u32::try_from(len).context("a held change larger than 4 GiB")?;
        self.pending.extend_from_slice(&len32.to_be_bytes());
        HeldChange::write_bytes(&mut self.pending, id, json, encoded);
        if self.pending.len() >= WRITE_BLOCK {
            self.write_pending()?;
        }
        Ok(self.end())
    }

    fn write_pending(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.pending, self.written)
            .with_context(|| format!("writing held changes to {}", self.path.display()))?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        self.dirty = true;
        Ok(())
    }

    /// Drops every record from offset `at` on (the transaction that
    /// appended them was cut).
    pub fn cut(&mut self, at: u64) -> anyhow::Result<()> {
        if at >= self.written {
            self.pending.truncate((at - self.written) as usize);
            return Ok(());
        }
        self.pending.clear();
        self.file
            .set_len(at)
            .with_context(|| format!("cutting {} back to {at} bytes", self.path.display()))?;
        self.written = at;
        self.dirty = true;
        if self.read_from + self.read_buf.len() as u64 > at {
            self.read_buf.clear();
        }
        Ok(())
    }

    /// Reads the record at offset `at`; returns it and the offset after it.
    pub fn read(&mut self, at: u64) -> anyhow::Result<(HeldChange, u64)> {
        let head = self.bytes(at, 4)?;
        let len = u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize;
        let body = self.bytes(at + 4, len)?;
        let change = HeldChange::from_bytes(body)
            .with_context(|| format!("{}: the held change at byte {at} is unreadable", self.path.display()))?;
        Ok((change, at + 4 + len as u64))
    }

    /// `len` bytes at offset `at`, from the read buffer, refilled as needed.
    fn bytes(&mut self, at: u64, len: usize) -> anyhow::Result<&[u8]> {
        let end = at + len as u64;
        anyhow::ensure!(
            end <= self.end(),
            "{}: a held change runs past the end of the file",
            self.path.display()
        );
        let buffered = self.read_from + self.read_buf.len() as u64;
        if at < self.read_from || end > buffered {
            self.write_pending()?;
            let want = len.max(READ_BLOCK).min((self.written - at) as usize);
            self.read_buf.resize(want, 0);
            self.file
                .read_exact_at(&mut self.read_buf, at)
                .with_context(|| format!("reading held changes from {}", self.path.display()))?;
            self.read_from = at;
        }
        let from = (at - self.read_from) as usize;
        Ok(&self.read_buf[from..from + len])
    }

    /// Writes what waits and makes the file durable, if it changed.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        self.write_pending()?;
        if self.dirty {
            self.file
                .sync_data()
                .with_context(|| format!("syncing {}", self.path.display()))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Empties the file: call only once the store records an empty range.
    pub fn clear(&mut self) -> anyhow::Result<()> {
        self.pending.clear();
        self.read_buf.clear();
        self.read_from = 0;
        if self.written > 0 {
            self.file
                .set_len(0)
                .with_context(|| format!("emptying {}", self.path.display()))?;
            self.written = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::TempDir;

    fn range(head: u64, end: u64, count: u64) -> HeldRange {
        HeldRange {
            head,
            end,
            count,
            bytes: 0,
            binlog: None,
        }
    }

    #[test]
    fn records_read_back_in_order_across_writes_and_reopens() {
        let dir = TempDir::new("held-file");
        let mut f = HeldFile::open(dir.path(), "t/h", HeldRange::default()).unwrap();
        let big = vec![9u8; 3 << 20];
        let mut ends = vec![0];
        for i in 0..1000u32 {
            ends.push(f.append(&format!("x:{i}:0"), b"{}", &i.to_be_bytes()).unwrap());
        }
        ends.push(f.append("x:big:0", b"", &big).unwrap());
        let mut at = 0;
        for i in 0..1000u32 {
            let (c, next) = f.read(at).unwrap();
            assert_eq!(
                (c.id.as_str(), c.encoded.as_slice()),
                (format!("x:{i}:0").as_str(), &i.to_be_bytes()[..])
            );
            assert_eq!(next, ends[i as usize + 1]);
            at = next;
        }
        assert_eq!(f.read(at).unwrap().0.encoded, big, "a record larger than a read block");
        f.sync().unwrap();
        drop(f);

        // Reopened with the store's range: what lies past it is cut off.
        let mut f = HeldFile::open(dir.path(), "t/h", range(ends[10], ends[20], 10)).unwrap();
        assert_eq!(f.end(), ends[20]);
        assert_eq!(f.read(ends[19]).unwrap().0.id, "x:19:0");
        assert!(f.read(ends[20]).is_err());
        // A cut transaction takes its records back, written or not.
        f.append("y:1:0", b"", b"a").unwrap();
        f.cut(ends[20]).unwrap();
        assert_eq!(f.end(), ends[20]);
        drop(f);
        let f = HeldFile::open(dir.path(), "t/h", range(ends[20], ends[20], 0)).unwrap();
        assert_eq!(f.end(), 0, "an empty range empties the file");
    }

    #[test]
    fn a_file_shorter_than_the_store_says_is_refused_by_name() {
        let dir = TempDir::new("held-file-short");
        let mut f = HeldFile::open(dir.path(), "t/h", HeldRange::default()).unwrap();
        f.append("x:1:0", b"", b"a").unwrap();
        f.sync().unwrap();
        drop(f);
        let err = HeldFile::open(dir.path(), "t/h", range(0, 1000, 3))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("t/h holds 18 bytes, but the store counts 3 changes held up to byte 1000"),
            "{err}"
        );
    }
}
