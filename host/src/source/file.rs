//! Binlog files on disk: framing, checksums, and a clean end.
//!
//! A file still being written ends at its last whole event; a partial event
//! after it is not an error but the end (reported as such, so `--follow` can
//! wait for the rest). Bytes that cannot be an event are a typed error with
//! the offset, never a panic.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::decode::event::{CHECKSUM_LEN, EventHeader, FormatDescription, HEADER_LEN, RawEvent, types};

/// The four bytes every binlog file starts with.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Largest event accepted: MySQL's max_allowed_packet ceiling plus headers.
const MAX_EVENT: u32 = (1 << 30) + 4096;

/// Why a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Opening or reading failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file does not start with the binlog magic bytes.
    #[error("{path}: not a binlog file (it does not start with \\xfebin)")]
    NotBinlog {
        /// The file.
        path: PathBuf,
    },
    /// An event header that cannot be right.
    #[error("{path}:{pos}: corrupt event header ({detail})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset of the event.
        pos: u64,
        /// What is wrong.
        detail: String,
    },
    /// The checksum of an event does not match its bytes.
    #[error(
        "{path}:{pos}: event checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Offset of the event.
        pos: u64,
        /// Checksum in the file.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
}

/// What [`BinlogFile::next_event`] found.
#[derive(Debug)]
pub enum Next<'a> {
    /// A whole event.
    Event(RawEvent<'a>),
    /// No whole event left. `partial` is the offset of an incomplete event
    /// at the end, if there is one (a file still being written, or cut).
    End {
        /// Offset of a partial trailing event.
        partial: Option<u64>,
    },
}

/// A binlog file being read event by event.
pub struct BinlogFile {
    path: PathBuf,
    name: String,
    file: File,
    buf: Vec<u8>,
    /// `buf[start..end]` holds file bytes from offset `offset`.
    start: usize,
    end: usize,
    offset: u64,
    checksum: bool,
    /// The last event read: header, body range in `buf`, offset, end.
    last: Option<(EventHeader, std::ops::Range<usize>, u64, u64)>,
}

impl BinlogFile {
    /// Opens `path` and checks the magic bytes.
    pub fn open(path: &Path) -> Result<Self, FileError> {
        let io = |error| FileError::Io {
            path: path.to_owned(),
            error,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut magic = [0u8; 4];
        let got = read_full(&mut file, &mut magic).map_err(io)?;
        if got < 4 || magic != MAGIC {
            return Err(FileError::NotBinlog { path: path.to_owned() });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            path: path.to_owned(),
            name,
            file,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
            offset: 4,
            checksum: false,
            last: None,
        })
    }

    /// The file name (what the server calls it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next event.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves to `pos`, which must be the offset of an event.
    pub fn seek(&mut self, pos: u64) -> Result<(), FileError> {
        self.file.seek(SeekFrom::Start(pos)).map_err(|error| FileError::Io {
            path: self.path.clone(),
            error,
        })?;
        self.start = 0;
        self.end = 0;
        self.offset = pos;
        self.last = None;
        Ok(())
    }

    /// The event the last [`BinlogFile::next_event`] returned, until the next
    /// call or a seek.
    pub fn current(&self) -> Option<RawEvent<'_>> {
        let (header, body, pos, end) = self.last.clone()?;
        Some(RawEvent {
            header,
            body: &self.buf[body],
            pos,
            end,
        })
    }

    /// Makes at least `n` bytes available in the buffer, if the file has them.
    fn fill(&mut self, n: usize) -> Result<bool, FileError> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < n {
            // Only grow for bytes the file has: a corrupt size field must not
            // allocate a gigabyte for a short file.
            let len = self
                .file
                .metadata()
                .map_err(|error| FileError::Io {
                    path: self.path.clone(),
                    error,
                })?
                .len();
            let available = len.saturating_sub(self.offset) as usize;
            if available < n {
                return Ok(false);
            }
            self.buf.resize(n.next_power_of_two(), 0);
        }
        while self.end < n {
            let got = self
                .file
                .read(&mut self.buf[self.end..])
                .map_err(|error| FileError::Io {
                    path: self.path.clone(),
                    error,
                })?;
            if got == 0 {
                return Ok(false);
            }
            self.end += got;
        }
        Ok(true)
    }

    /// Reads the next whole event.
    pub fn next_event(&mut self) -> Result<Next<'_>, FileError> {
        let pos = self.offset;
        if !self.fill(HEADER_LEN)? {
            let partial = (self.end > self.start).then_some(pos);
            return Ok(Next::End { partial });
        }
        let header = EventHeader::parse(&self.buf[self.start..self.end]).expect("header bytes are buffered");
        let corrupt = |detail: String| FileError::Corrupt {
            path: self.path.clone(),
            pos,
            detail,
        };
        if header.event_size < HEADER_LEN as u32 || header.event_size > MAX_EVENT {
            return Err(corrupt(format!("event size {}", header.event_size)));
        }
        let size = header.event_size as usize;
        if !self.fill(size)? {
            return Ok(Next::End { partial: Some(pos) });
        }
        let whole_start = self.start;
        self.start += size;
        self.offset += size as u64;
        let whole = &self.buf[whole_start..whole_start + size];
        let mut body = &whole[HEADER_LEN..];
        if header.type_code == types::FORMAT_DESCRIPTION {
            let (checksum, len) = FormatDescription::split_trailer(body).map_err(|e| FileError::Corrupt {
                path: self.path.clone(),
                pos,
                detail: e.into(),
            })?;
            self.checksum = checksum;
            if checksum {
                // The server flips LOG_EVENT_BINLOG_IN_USE_F when it closes
                // the file without rewriting the checksum, which it computed
                // with the flag clear.
                let mut copy = whole.to_vec();
                copy[17] &= !0x01;
                verify(&self.path, pos, &copy)?;
            }
            body = &body[..len];
        } else if self.checksum {
            if body.len() < CHECKSUM_LEN {
                return Err(FileError::Corrupt {
                    path: self.path.clone(),
                    pos,
                    detail: "event shorter than its checksum".into(),
                });
            }
            verify(&self.path, pos, whole)?;
            body = &body[..body.len() - CHECKSUM_LEN];
        }
        let body_start = body.as_ptr() as usize - self.buf.as_ptr() as usize;
        self.last = Some((header, body_start..body_start + body.len(), pos, pos + size as u64));
        Ok(Next::Event(RawEvent {
            header,
            body,
            pos,
            end: pos + size as u64,
        }))
    }
}

/// Binlog files read in order as one [`super::Source`]: what `replay` and
/// `inspect --file` read.
///
/// A start inside a file still gives the file's FORMAT_DESCRIPTION first
/// (the decoder cannot read an event without it), then moves to the start.
/// With `follow`, the end of the last file is not the end: it waits for more
/// and follows a ROTATE into the file it names, as a live tail.
pub struct BinlogFiles {
    queue: Vec<PathBuf>,
    /// Index in `queue` of the open file.
    at: usize,
    file: Option<BinlogFile>,
    /// Where to move once the open file's format description is read.
    seek: Option<FileStart>,
    follow: bool,
}

/// Where [`BinlogFiles`] starts in its first file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStart {
    /// At this offset, which must be an event's.
    At(u64),
    /// At the end: only what is appended from now on.
    End,
}

impl BinlogFiles {
    /// Reads `files` from `files[first]` on, starting at `start` in it (from
    /// its beginning when `None`).
    pub fn new(files: &[PathBuf], first: usize, start: Option<FileStart>, follow: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(!files.is_empty(), "no binlog files given");
        anyhow::ensure!(
            first < files.len(),
            "no binlog file {first} among the {} given",
            files.len()
        );
        Ok(BinlogFiles {
            queue: files.to_vec(),
            at: first,
            file: None,
            seek: start,
            follow,
        })
    }

    /// The index in `files` of the file named `name` (a server's file name,
    /// as positions give it).
    pub fn position_of(files: &[PathBuf], name: &str) -> Option<usize> {
        files
            .iter()
            .position(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
    }

    fn open_current(&mut self) -> anyhow::Result<()> {
        if self.file.is_none() {
            self.file = Some(BinlogFile::open(&self.queue[self.at])?);
        }
        Ok(())
    }

    /// The next event, the end of the last file, or `None` when following
    /// and nothing new is there yet.
    fn step(&mut self) -> anyhow::Result<Option<super::SourceStep>> {
        loop {
            self.open_current()?;
            let file = self.file.as_mut().expect("opened");
            let seek = self.seek.take();
            let last = self.at + 1 == self.queue.len();
            match file.next_event()? {
                Next::Event(ev) => {
                    if let Some(start) = seek {
                        if ev.header.type_code == types::FORMAT_DESCRIPTION {
                            // Give the format description, then move.
                            self.seek = Some(start);
                            return Ok(Some(super::SourceStep::Event));
                        }
                        let len = std::fs::metadata(file.path()).map(|m| m.len()).unwrap_or(0);
                        let target = match start {
                            FileStart::At(pos) if pos > len => {
                                anyhow::bail!("{}:{pos} is past the end of the file ({len} bytes)", file.name())
                            }
                            FileStart::At(pos) => pos,
                            FileStart::End => len,
                        };
                        file.seek(target)?;
                        continue;
                    }
                    if self.follow && last && ev.header.type_code == types::ROTATE {
                        // A ROTATE at the end of a file names the next one.
                        let name = String::from_utf8_lossy(ev.body.get(8..).unwrap_or_default()).into_owned();
                        let next = self.queue[self.at].with_file_name(name);
                        self.queue.push(next);
                    }
                    return Ok(Some(super::SourceStep::Event));
                }
                Next::End { partial } => {
                    if last {
                        if self.follow {
                            self.seek = seek;
                            return Ok(None);
                        }
                        if let Some(at) = partial {
                            tracing::warn!(
                                file = %file.path().display(),
                                offset = at,
                                "the file ends inside an event (still being written, or cut): stopped at the last whole event"
                            );
                        }
                        return Ok(Some(super::SourceStep::End { partial }));
                    }
                    self.at += 1;
                    self.file = None;
                }
            }
        }
    }
}

impl super::Source for BinlogFiles {
    async fn next(&mut self) -> anyhow::Result<super::SourceStep> {
        loop {
            match self.step()? {
                Some(step) => return Ok(step),
                // Following the last file: look again shortly.
                None => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    fn event(&self) -> RawEvent<'_> {
        self.file
            .as_ref()
            .and_then(BinlogFile::current)
            .expect("event() follows a SourceStep::Event")
    }

    fn file_name(&self) -> Option<&str> {
        self.file.as_ref().map(BinlogFile::name)
    }
}

fn verify(path: &Path, pos: u64, whole: &[u8]) -> Result<(), FileError> {
    let (data, stored) = whole.split_at(whole.len() - CHECKSUM_LEN);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(FileError::Checksum {
            path: path.to_owned(),
            pos,
            stored,
            computed,
        });
    }
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
