//! `kind = "file"`: append one line per message to a file.
//!
//! A batch is delivered (acknowledged) once its lines are in the file and,
//! under [`FsyncPolicy::Always`], fsynced. Under group commit
//! ([`Sink::defer_durability`], which the pipeline asks for when it keeps
//! checkpoints) `Always` fsyncs once in [`Sink::make_durable`], before the
//! checkpoint moves past the batches written since the last one. With a [`Rotation`], a file that
//! would grow past `max_bytes` is renamed to `PATH.1` (older ones shift to
//! `PATH.2` … `PATH.keep`, the oldest is dropped) and a new `PATH` is started;
//! a line is never split across files.
//!
//! The sink owns its file: after a crash or a failed write, bytes past the last
//! complete line were never acknowledged, and are cut off before writing again,
//! so every line in the file is a whole message. The batch that was cut gets
//! re-sent by the pipeline.
//!
//! File work that may wait on the disk (an append that fsyncs, the interval
//! fsync, opening and closing) runs as one blocking task on tokio's blocking
//! pool, holding the file state's lock for its duration; an append that only
//! writes to the page cache (fsync deferred to the checkpoint, `"never"`, or
//! an interval not yet due) runs in place, which costs less than the hand-off.
//! Either way the sink is cancel-safe: a dropped `write_batch` future leaves
//! its task to finish, and the next call waits for it on the lock; an append
//! in place has no await to be dropped at.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

mod config;

pub use self::config::{DEFAULT_KEEP, RawFileSink, RawFsync, RawFsyncInterval};
use super::kind::SinkKind;
use super::{Message, Sink, SinkError, encode_lines};
use crate::probe::{self, CheckLine};
use crate::problem::SinkContext;
use crate::telemetry::{Counter, Registry};

/// `kind = "file"` in the registry.
#[derive(Debug)]
pub struct FileKind;

impl SinkKind for FileKind {
    const NAME: &'static str = "file";
    type Raw = RawFileSink;
    type Options = FileOptions;
    type Sink = FileSink;

    fn resolve(raw: RawFileSink, cx: &mut SinkContext<'_>) -> Option<FileOptions> {
        config::resolve(raw, cx)
    }

    async fn open(name: &str, options: &FileOptions) -> Result<FileSink, SinkError> {
        FileSink::open(name, options.clone()).await
    }

    fn probe(name: &str, options: &FileOptions) -> CheckLine {
        probe::path_probe(name, Self::NAME, &options.path, |m| {
            (!m.is_file()).then_some("exists and is not a regular file; change the sink's path")
        })
    }

    fn path(options: &FileOptions) -> Option<&Path> {
        Some(&options.path)
    }

    fn one_line_per_message(_: &FileOptions) -> bool {
        true
    }
}

/// Settings of a file sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// The file to append to. Missing directories are created.
    pub path: PathBuf,
    /// When lines are forced to disk.
    pub fsync: FsyncPolicy,
    /// Rotation by size; `None` lets the file grow.
    pub rotation: Option<Rotation>,
}

/// When written lines are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Fsync every batch before acknowledging it: an acknowledged line survives
    /// power loss. The default.
    Always,
    /// Fsync when this long has passed since the last fsync, checked at each
    /// batch and at each health check. A process crash loses nothing (the lines
    /// are in the OS); power loss can lose the lines of the last interval.
    Interval(Duration),
    /// Never fsync; the OS writes back when it likes (power loss can lose
    /// acknowledged lines).
    Never,
}

/// Rotation by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Start a new file when appending a line would take the current one past this.
    pub max_bytes: u64,
    /// How many rotated files (`PATH.1` … `PATH.keep`) to keep, at least 1.
    pub keep: u32,
}

/// What a file sink has done, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Fsyncs of the data file.
    pub fsyncs: u64,
    /// Rotations.
    pub rotations: u64,
    /// Times a torn tail (an unacknowledged partial batch) was cut off.
    pub repairs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    fsyncs: Counter,
    rotations: Counter,
    repairs: Counter,
}

/// Appends one line per message to a file, with an fsync policy and rotation.
#[derive(Debug)]
pub struct FileSink {
    name: String,
    path: PathBuf,
    state: Arc<Mutex<FileState>>,
    counters: Arc<Counters>,
    /// The encoded lines of the batch being written, kept for the next.
    lines: Vec<u8>,
}

#[derive(Debug)]
struct FileState {
    opts: FileOptions,
    /// The open data file; `None` before the first open, after `close`, and
    /// after a failure that lost track of it.
    file: Option<File>,
    /// Device and inode of `file`, to notice it being replaced behind our back.
    id: (u64, u64),
    /// Length of `file` up to the end of the last acknowledged batch (or 0
    /// after a rotation started it anew).
    len: u64,
    /// Bytes past `len` may be a partial batch (a write failed or panicked).
    torn: bool,
    /// Lines were acknowledged without an fsync since the last one.
    unsynced: bool,
    /// Group commit: `Always` fsyncs in `make_durable`, not per batch.
    deferred: bool,
    last_sync: Instant,
    counters: Arc<Counters>,
}

impl FileSink {
    /// Opens (creating it and its directories) the file of `opts`, cutting off
    /// a torn tail left by a crash.
    pub async fn open(name: &str, opts: FileOptions) -> Result<FileSink, SinkError> {
        let counters = Arc::new(Counters::default());
        let sink = FileSink {
            name: name.to_owned(),
            path: opts.path.clone(),
            state: Arc::new(Mutex::new(FileState {
                opts,
                file: None,
                id: (0, 0),
                len: 0,
                torn: false,
                unsynced: false,
                deferred: false,
                last_sync: Instant::now(),
                counters: counters.clone(),
            })),
            counters,
            lines: Vec::new(),
        };
        sink.run(FileState::open_current).await?;
        Ok(sink)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts of fsyncs, rotations and repairs so far.
    pub fn stats(&self) -> FileStats {
        FileStats {
            fsyncs: self.counters.fsyncs.get(),
            rotations: self.counters.rotations.get(),
            repairs: self.counters.repairs.get(),
        }
    }

    /// Runs `work` on the blocking pool with the file state locked.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut FileState) -> io::Result<T> + Send + 'static,
    ) -> Result<T, SinkError> {
        let state = self.state.clone();
        let joined = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves `torn` set, which the next
            // call repairs, so a poisoned lock is safe to take over.
            let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut st)
        })
        .await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SinkError::from_io(&self.name, &e)),
            Err(e) => Err(SinkError::permanent(&self.name, format!("file task failed: {e}"))),
        }
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        self.lines.clear();
        encode_lines(&self.name, batch, &mut self.lines)?;
        if self.lines.is_empty() {
            return Ok(());
        }
        {
            // A write that ends in the page cache takes microseconds, less
            // than handing it to the blocking pool: only an append that
            // fsyncs (or may wait on one) goes there. A task of an earlier,
            // dropped call may still hold the lock: wait for it here too.
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !st.fsyncs_on_append() {
                return st.append(&self.lines).map_err(|e| SinkError::from_io(&self.name, &e));
            }
        }
        let data = std::mem::take(&mut self.lines);
        self.run(move |st| st.append(&data)).await
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        self.run(FileState::check).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.run(FileState::close).await
    }

    fn register_metrics(&self, registry: &Registry) {
        let c = &self.counters;
        let sink = || vec![("sink", self.name.clone())];
        registry.attach_counter(
            "rowhook_sink_fsyncs_total",
            "Fsyncs of a file sink's data file.",
            sink(),
            &c.fsyncs,
        );
        registry.attach_counter(
            "rowhook_sink_rotations_total",
            "Rotations of a file sink's file.",
            sink(),
            &c.rotations,
        );
        registry.attach_counter(
            "rowhook_sink_repairs_total",
            "Torn tails (unacknowledged partial batches) a file sink cut off.",
            sink(),
            &c.repairs,
        );
    }

    fn defer_durability(&mut self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).deferred = true;
    }

    async fn make_durable(&mut self) -> Result<(), SinkError> {
        self.run(|st| match st.unsynced && st.opts.fsync == FsyncPolicy::Always {
            true => st.sync(),
            false => Ok(()),
        })
        .await
    }
}

/// Adds the path to an I/O error, keeping its kind for classification.
fn ctx(doing: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory, making the entries created or renamed in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ctx("fsyncing directory", dir))
}

/// `PATH.n`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Length of the prefix of `file` that ends with a newline (0 if none does).
fn complete_lines_len(file: &File, size: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl FileState {
    fn path(&self) -> PathBuf {
        self.opts.path.clone()
    }

    /// Opens `PATH` for appending, creating it, and cuts off a torn tail.
    fn open_current(&mut self) -> io::Result<()> {
        let path = self.path();
        let dir = parent_dir(&path);
        std::fs::create_dir_all(dir).map_err(ctx("creating directory", dir))?;
        let (file, created) = match OpenOptions::new().read(true).append(true).create_new(true).open(&path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(ctx("opening", &path))?,
                false,
            ),
            Err(e) => return Err(ctx("creating", &path)(e)),
        };
        if created {
            // Crash case: power fails after lines were fsynced into a new file
            // whose directory entry never reached the disk; the file, and the
            // acknowledged lines in it, would be gone.
            sync_dir(dir)?;
        }
        let meta = file.metadata().map_err(ctx("reading metadata of", &path))?;
        // Crash case: the process died mid-batch. Lines of that batch were never
        // acknowledged and will be re-sent; a partial last line would otherwise
        // glue itself to the first re-sent one.
        let whole = complete_lines_len(&file, meta.len()).map_err(ctx("reading", &path))?;
        if whole < meta.len() {
            file.set_len(whole).map_err(ctx("truncating", &path))?;
            self.counters.repairs.inc();
        }
        self.file = Some(file);
        self.id = (meta.dev(), meta.ino());
        self.len = whole;
        self.torn = false;
        Ok(())
    }

    /// Makes the state ready to append: an open file with nothing torn at its end.
    fn prepare(&mut self) -> io::Result<()> {
        if self.torn
            && let Some(file) = &self.file
        {
            // A failed batch left bytes past the last acknowledged one. They
            // will be re-sent, so cut them off (a partial line would corrupt
            // the next one; whole ones would only duplicate).
            file.set_len(self.len).map_err(ctx("truncating", &self.opts.path))?;
            self.counters.repairs.inc();
            self.torn = false;
        }
        if self.file.is_none() {
            self.open_current()?;
        }
        Ok(())
    }

    /// Whether [`FileState::append`] would fsync now.
    fn fsyncs_on_append(&self) -> bool {
        match self.opts.fsync {
            FsyncPolicy::Always => !self.deferred,
            FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            FsyncPolicy::Never => false,
        }
    }

    /// Appends `data` (whole lines), rotating as needed, then fsyncs per policy.
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.prepare()?;
        self.torn = true;
        // Bytes of this batch in the current file (after a rotation, only
        // those written since; `rotate` resets `len` to 0).
        let written;
        match self.opts.rotation {
            None => {
                self.write(data)?;
                written = data.len() as u64;
            }
            Some(rot) => {
                let mut seg_start = 0;
                let mut seg_end = 0;
                for line in data.split_inclusive(|&b| b == b'\n') {
                    let used = self.len + (seg_end - seg_start) as u64;
                    if used > 0 && used + line.len() as u64 > rot.max_bytes {
                        self.write(&data[seg_start..seg_end])?;
                        self.rotate(rot)?;
                        seg_start = seg_end;
                    }
                    seg_end += line.len();
                }
                self.write(&data[seg_start..seg_end])?;
                written = (seg_end - seg_start) as u64;
            }
        }
        match self.opts.fsync {
            FsyncPolicy::Always if !self.deferred => self.sync()?,
            FsyncPolicy::Always => self.unsynced = true,
            FsyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync()?,
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => self.unsynced = true,
        }
        self.len += written;
        self.torn = false;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let path = &self.opts.path;
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("file is not open"))?;
        file.write_all(bytes).map_err(ctx("appending to", path))
    }

    fn sync(&mut self) -> io::Result<()> {
        if let Some(file) = &self.file {
            file.sync_data().map_err(ctx("fsyncing", &self.opts.path))?;
            self.counters.fsyncs.inc();
        }
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    /// `PATH` → `PATH.1`, `PATH.n` → `PATH.n+1` up to `keep`, then a new `PATH`.
    fn rotate(&mut self, rot: Rotation) -> io::Result<()> {
        let path = self.path();
        let dir = parent_dir(&path);
        // Crash case: lines of this batch are already in the file being
        // rotated away; after the rename we no longer hold it to fsync at the
        // end of the batch, so make them durable now.
        if self.opts.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        self.file = None;
        // Oldest first, each rename atomically replacing its target, so at any
        // crash point every surviving file still has one name and the order of
        // the numbers still is the order of the data (at worst a number is
        // skipped, or the oldest file is gone a rotation early).
        for n in (1..rot.keep).rev() {
            let from = numbered(&path, n);
            match std::fs::rename(&from, numbered(&path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx("renaming", &from)(e)),
            }
        }
        std::fs::rename(&path, numbered(&path, 1)).map_err(ctx("renaming", &path))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(ctx("creating", &path))?;
        // Crash case: without this, power loss can undo the renames and the new
        // file's entry while the lines we go on to fsync into it were
        // acknowledged: the new file would vanish, or the old one reappear
        // under PATH and take the new lines' place in the order.
        sync_dir(dir)?;
        let meta = file.metadata().map_err(ctx("reading metadata of", &path))?;
        self.id = (meta.dev(), meta.ino());
        self.file = Some(file);
        self.len = 0;
        self.counters.rotations.inc();
        Ok(())
    }

    /// Health: the file is open, still the one at `PATH`, and fsynced if due.
    fn check(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            let same = std::fs::metadata(&self.opts.path)
                .map(|m| (m.dev(), m.ino()) == self.id)
                .unwrap_or(false);
            if !same {
                // Moved or deleted behind our back (logrotate, an operator):
                // lines written to the old inode would go somewhere nobody
                // looks. Finish with it and write to PATH again.
                if self.opts.fsync != FsyncPolicy::Never {
                    self.sync()?;
                }
                self.file = None;
            }
        }
        self.prepare()?;
        if let FsyncPolicy::Interval(every) = self.opts.fsync
            && self.unsynced
            && self.last_sync.elapsed() >= every
        {
            self.sync()?;
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            if self.torn {
                self.prepare()?;
            }
            if self.unsynced && self.opts.fsync != FsyncPolicy::Never {
                self.sync()?;
            }
        }
        self.file = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::{TempDir, msg, msgs};

    fn opts(dir: &TempDir, fsync: FsyncPolicy, rotation: Option<Rotation>) -> FileOptions {
        FileOptions {
            path: dir.path().join("sub/dir/out.jsonl"),
            fsync,
            rotation,
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[tokio::test]
    async fn appends_lines_and_creates_directories() {
        let dir = TempDir::new("file-append");
        let o = opts(&dir, FsyncPolicy::Always, None);
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("a", 0..2)).await.unwrap();
        sink.write_batch(&[]).await.unwrap();
        sink.write_batch(&msgs("b", 0..1)).await.unwrap();
        sink.close().await.unwrap();
        assert_eq!(read(&o.path), "a0\na1\nb0\n");

        // A restart appends after what is there.
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("c", 0..1)).await.unwrap();
        assert_eq!(read(&o.path), "a0\na1\nb0\nc0\n");
        assert_eq!(sink.stats().repairs, 0);
    }

    #[tokio::test]
    async fn fsync_always_syncs_every_batch() {
        let dir = TempDir::new("file-always");
        let mut sink = FileSink::open("f", opts(&dir, FsyncPolicy::Always, None))
            .await
            .unwrap();
        for i in 0..3 {
            sink.write_batch(&msgs(&format!("b{i}-"), 0..2)).await.unwrap();
        }
        assert_eq!(sink.stats().fsyncs, 3);
    }

    #[tokio::test]
    async fn group_commit_syncs_once_for_many_batches() {
        let dir = TempDir::new("file-group");
        let o = opts(&dir, FsyncPolicy::Always, None);
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.defer_durability();
        for i in 0..3 {
            sink.write_batch(&msgs(&format!("b{i}-"), 0..2)).await.unwrap();
        }
        assert_eq!(sink.stats().fsyncs, 0);
        sink.make_durable().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 1);
        // Nothing new: nothing to sync.
        sink.make_durable().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 1);
        assert_eq!(std::fs::read_to_string(&o.path).unwrap().lines().count(), 6);
        // Under `never`, not even then.
        let o = FileOptions {
            path: dir.path().join("never.jsonl"),
            ..opts(&dir, FsyncPolicy::Never, None)
        };
        let mut sink = FileSink::open("g", o).await.unwrap();
        sink.defer_durability();
        sink.write_batch(&msgs("a", 0..2)).await.unwrap();
        sink.make_durable().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 0);
    }

    #[tokio::test]
    async fn fsync_never_leaves_it_to_the_os() {
        let dir = TempDir::new("file-never");
        let o = opts(&dir, FsyncPolicy::Never, None);
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("a", 0..3)).await.unwrap();
        sink.health().await.unwrap();
        sink.close().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 0);
        assert_eq!(read(&o.path), "a0\na1\na2\n");
    }

    #[tokio::test]
    async fn fsync_interval_syncs_when_due() {
        let dir = TempDir::new("file-interval");
        let every = Duration::from_millis(150);
        let mut sink = FileSink::open("f", opts(&dir, FsyncPolicy::Interval(every), None))
            .await
            .unwrap();
        sink.write_batch(&msgs("a", 0..1)).await.unwrap();
        sink.write_batch(&msgs("b", 0..1)).await.unwrap();
        assert_eq!(sink.stats().fsyncs, 0, "not due yet");
        // Health (called periodically by the runtime) syncs once due, even if
        // no batch comes.
        sink.health().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 0);
        tokio::time::sleep(every + Duration::from_millis(20)).await;
        sink.health().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 1);
        // Nothing new: no sync.
        tokio::time::sleep(every + Duration::from_millis(20)).await;
        sink.health().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 1);
        // A batch after the interval syncs at once.
        sink.write_batch(&msgs("c", 0..1)).await.unwrap();
        assert_eq!(sink.stats().fsyncs, 2);
        // Close syncs what is pending.
        sink.write_batch(&msgs("d", 0..1)).await.unwrap();
        assert_eq!(sink.stats().fsyncs, 2);
        sink.close().await.unwrap();
        assert_eq!(sink.stats().fsyncs, 3);
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_n_files() {
        let dir = TempDir::new("file-rotate");
        // Lines are 3 bytes ("x0\n"); 10 bytes hold 3 of them.
        let rot = Rotation { max_bytes: 10, keep: 2 };
        let o = opts(&dir, FsyncPolicy::Always, Some(rot));
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("x", 0..4)).await.unwrap();
        assert_eq!(read(&o.path), "x3\n");
        assert_eq!(read(&numbered(&o.path, 1)), "x0\nx1\nx2\n");
        sink.write_batch(&msgs("y", 0..2)).await.unwrap();
        assert_eq!(read(&o.path), "x3\ny0\ny1\n");
        sink.write_batch(&msgs("z", 0..7)).await.unwrap();
        // z0 z1 z2 → .2 (after shifting), z3 z4 z5 → .1, z6 current; x* and y* dropped.
        assert_eq!(read(&o.path), "z6\n");
        assert_eq!(read(&numbered(&o.path, 1)), "z3\nz4\nz5\n");
        assert_eq!(read(&numbered(&o.path, 2)), "z0\nz1\nz2\n");
        assert!(!numbered(&o.path, 3).exists(), "keep = 2");
        assert_eq!(sink.stats().rotations, 4);
        // Rotation fsyncs the old file before renaming it, and the batch at its end.
        assert!(sink.stats().fsyncs >= 3 + 4);
        let mut names: Vec<String> = std::fs::read_dir(o.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["out.jsonl", "out.jsonl.1", "out.jsonl.2"]);
    }

    #[tokio::test]
    async fn rotation_never_splits_a_line() {
        let dir = TempDir::new("file-rotate-big");
        let rot = Rotation { max_bytes: 8, keep: 3 };
        let o = opts(&dir, FsyncPolicy::Never, Some(rot));
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        let big = "b".repeat(20);
        sink.write_batch(&[msg("1", "ab"), msg("2", &big), msg("3", "cd")])
            .await
            .unwrap();
        // The oversized line gets a file to itself.
        assert_eq!(read(&numbered(&o.path, 2)), "ab\n");
        assert_eq!(read(&numbered(&o.path, 1)), format!("{big}\n"));
        assert_eq!(read(&o.path), "cd\n");
    }

    #[tokio::test]
    async fn rotation_counts_what_was_there_before_a_restart() {
        let dir = TempDir::new("file-rotate-restart");
        let rot = Rotation { max_bytes: 10, keep: 1 };
        let o = opts(&dir, FsyncPolicy::Always, Some(rot));
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("a", 0..3)).await.unwrap();
        sink.close().await.unwrap();
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("b", 0..1)).await.unwrap();
        assert_eq!(read(&numbered(&o.path, 1)), "a0\na1\na2\n");
        assert_eq!(read(&o.path), "b0\n");
    }

    #[tokio::test]
    async fn a_torn_tail_from_a_crash_is_cut_on_open() {
        let dir = TempDir::new("file-torn");
        let o = opts(&dir, FsyncPolicy::Always, None);
        std::fs::create_dir_all(o.path.parent().unwrap()).unwrap();
        std::fs::write(&o.path, "a0\na1\n{\"half\":").unwrap();
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        assert_eq!(read(&o.path), "a0\na1\n");
        assert_eq!(sink.stats().repairs, 1);
        sink.write_batch(&msgs("b", 0..1)).await.unwrap();
        assert_eq!(read(&o.path), "a0\na1\nb0\n");

        // A file that is one partial line is emptied.
        let o2 = FileOptions {
            path: dir.path().join("only-partial"),
            ..o
        };
        std::fs::write(&o2.path, "x".repeat(100_000)).unwrap();
        FileSink::open("g", o2.clone()).await.unwrap();
        assert_eq!(read(&o2.path), "");
    }

    #[tokio::test]
    async fn a_failed_batch_is_cut_back_to_the_last_acknowledged_one() {
        let dir = TempDir::new("file-failed");
        let o = opts(&dir, FsyncPolicy::Always, None);
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("a", 0..2)).await.unwrap();
        // What a write failing midway leaves: whole and partial lines of an
        // unacknowledged batch, and the state marked torn.
        {
            let mut st = sink.state.lock().unwrap();
            st.write(b"b0\nb1\nb").unwrap();
            st.torn = true;
        }
        sink.write_batch(&msgs("b", 0..3)).await.unwrap();
        assert_eq!(read(&o.path), "a0\na1\nb0\nb1\nb2\n");
        assert_eq!(sink.stats().repairs, 1);
    }

    #[tokio::test]
    async fn health_reopens_a_file_moved_away() {
        let dir = TempDir::new("file-moved");
        let o = opts(&dir, FsyncPolicy::Always, None);
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.write_batch(&msgs("a", 0..1)).await.unwrap();
        let moved = dir.path().join("moved.jsonl");
        std::fs::rename(&o.path, &moved).unwrap();
        sink.health().await.unwrap();
        assert!(o.path.exists(), "health recreated PATH");
        sink.write_batch(&msgs("b", 0..1)).await.unwrap();
        assert_eq!(read(&moved), "a0\n");
        assert_eq!(read(&o.path), "b0\n");
    }

    #[tokio::test]
    async fn close_then_write_reopens() {
        let dir = TempDir::new("file-close");
        let o = opts(&dir, FsyncPolicy::Always, None);
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        sink.close().await.unwrap();
        sink.write_batch(&msgs("a", 0..1)).await.unwrap();
        assert_eq!(read(&o.path), "a0\n");
        assert_eq!(sink.path(), o.path);
    }

    #[tokio::test]
    async fn unusable_paths_are_permanent_errors() {
        let dir = TempDir::new("file-bad");
        // The path is a directory.
        let err = FileSink::open(
            "f",
            FileOptions {
                path: dir.path().to_owned(),
                fsync: FsyncPolicy::Always,
                rotation: None,
            },
        )
        .await
        .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
        // A parent of the path is a file.
        std::fs::write(dir.path().join("plain"), "").unwrap();
        let err = FileSink::open(
            "f",
            FileOptions {
                path: dir.path().join("plain/out"),
                fsync: FsyncPolicy::Always,
                rotation: None,
            },
        )
        .await
        .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }

    #[tokio::test]
    async fn a_payload_with_a_newline_writes_nothing() {
        let dir = TempDir::new("file-nl");
        let o = opts(&dir, FsyncPolicy::Always, None);
        let mut sink = FileSink::open("f", o.clone()).await.unwrap();
        assert!(sink.write_batch(&[msg("1", "a"), msg("2", "b\nc")]).await.is_err());
        assert_eq!(read(&o.path), "");
    }
}
