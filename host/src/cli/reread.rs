//! Readers of held changes (see [`crate::pipeline::reread`]): for `run`,
//! a binlog connection of their own to the server; for `replay`, the
//! binlog files given.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{io_runtime, resume_gtids};
use crate::decode::{Decoder, DecoderOptions};
use crate::driver::{DriveOptions, drive};
use crate::pipeline::reread::{RereadJob, RereadStarter, Rereader, table_filter};
use crate::source::Source;
use crate::source::file::{BinlogFiles, FileStart};
use crate::source::live::LiveOptions;
use crate::source::reconnect::{Resilient, RetryPolicy};

/// How many server ids past the lanes' the readers of `run` take in turn.
const READER_IDS: u32 = 64;

/// Readers on the live server of `rowhook run`.
pub struct LiveReread {
    /// The main connection's options: a reader's differ in server id and start.
    pub live: LiveOptions,
    /// The number of declared tenants: the lanes take the server ids after
    /// the main one's, the readers those after the lanes'.
    pub tenants: u32,
    next: AtomicU32,
}

impl LiveReread {
    /// Readers for the server `live` reads.
    pub fn new(live: LiveOptions, tenants: u32) -> LiveReread {
        LiveReread {
            live,
            tenants,
            next: AtomicU32::new(0),
        }
    }
}

impl RereadStarter for LiveReread {
    fn start(&self, job: RereadJob) -> anyhow::Result<()> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % READER_IDS;
        let server_id = (self.live.server_id)
            .checked_add(1 + self.tenants + turn)
            .ok_or_else(|| {
                anyhow::anyhow!("[source] server_id is too large to number the held changes' readers after it")
            })?;
        let live = LiveOptions {
            server_id,
            start: super::start_at(&job.at.from),
            ..self.live.clone()
        };
        spawn(job, move |rt| {
            let source = rt.block_on(Resilient::open(live, RetryPolicy::default()))?;
            let gtids = source.start_gtids().clone();
            Ok((source, Some(gtids)))
        })
    }
}

/// Readers of the binlog files `rowhook replay` was given.
pub struct FileReread {
    /// The files, in order.
    pub files: Vec<PathBuf>,
}

impl RereadStarter for FileReread {
    fn start(&self, job: RereadJob) -> anyhow::Result<()> {
        let from = &job.at.from;
        let first = BinlogFiles::position_of(&self.files, &from.file).ok_or_else(|| {
            anyhow::anyhow!(
                "the held changes start in {}, which is not among the files given: pass it and the files after it",
                from.file
            )
        })?;
        let (files, pos) = (self.files.clone(), from.pos);
        spawn(job, move |_| {
            Ok((BinlogFiles::new(&files, first, Some(FileStart::At(pos)), false)?, None))
        })
    }
}

/// Reads `job`'s changes on a thread of its own from the source `open`
/// gives (with the GTID state it starts at, if it says).
fn spawn<S: Source + 'static>(
    job: RereadJob,
    open: impl FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<(S, Option<crate::decode::gtid::GtidState>)>
    + Send
    + 'static,
) -> anyhow::Result<()> {
    let name = format!("rowhook-held-{}", job.handler.name());
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            let mut stop = job.stop.clone();
            let from = job.at.from.clone();
            let mut decoder = Decoder::new(
                DecoderOptions {
                    require_names: true,
                    tables: table_filter(&job.subscription),
                    skip_statements: false,
                },
                "",
            );
            let mut rereader = Rereader::new(job);
            let result = (|| {
                let rt = Arc::new(io_runtime()?);
                let (mut source, gtids) = open(&rt)?;
                if let Some(gtids) = gtids {
                    decoder.set_gtid_state(gtids);
                }
                resume_gtids(&mut decoder, &from)?;
                drive(
                    &rt,
                    &mut source,
                    &mut decoder,
                    &mut rereader,
                    &mut stop,
                    DriveOptions::default(),
                )
            })();
            // At the end of the files the reader has passed back all
            // there is; the queue asks again if it needs more.
            if let Err(e) = result
                && !rereader.stopped()
            {
                rereader.fail(e);
            }
        })
        .map_err(|e| anyhow::anyhow!("starting a reader of held changes: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OpSet, TablePattern};
    use crate::decode::{ChangeVisitor, Commit, Flow, RowChange};
    use crate::driver::Stop;
    use crate::handler_id::HandlerId;
    use crate::pipeline::reread::Reread;
    use crate::pipeline::router::Subscription;
    use crate::store::{Checkpoint, HeldAt};

    fn shop_binlog() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/binlog/shop-bin.000001")
    }

    fn subscription() -> Subscription {
        Subscription {
            tables: vec![TablePattern::parse("shop.*").unwrap()],
            ops: OpSet::ALL,
        }
    }

    /// Every change of the recorded binlog, as the stream first gives it:
    /// its id and where its transaction starts.
    #[derive(Default)]
    struct Stream {
        from: Option<Checkpoint>,
        changes: Vec<(String, Checkpoint)>,
    }

    impl ChangeVisitor for Stream {
        fn change(&mut self, change: &RowChange<'_>) -> Flow {
            let from = self.from.clone().expect("a transaction before the first change");
            self.changes.push((change.id(), from));
            Flow::Continue
        }

        fn commit(&mut self, commit: &Commit<'_>) -> Flow {
            self.from = Some(Checkpoint::after(commit));
            Flow::Continue
        }
    }

    impl crate::driver::Consumer for Stream {
        fn after_event(
            &mut self,
            _: &tokio::runtime::Runtime,
            _: &Decoder,
            _: bool,
            _: &mut Stop,
        ) -> anyhow::Result<()> {
            Ok(())
        }

        fn abandon_transaction(&mut self) {}
    }

    fn stream() -> Vec<(String, Checkpoint)> {
        let rt = io_runtime().unwrap();
        let mut source = BinlogFiles::new(&[shop_binlog()], 0, None, false).unwrap();
        let mut decoder = Decoder::new(
            DecoderOptions {
                require_names: true,
                tables: table_filter(&subscription()),
                skip_statements: false,
            },
            "",
        );
        let mut stream = Stream::default();
        drive(
            &rt,
            &mut source,
            &mut decoder,
            &mut stream,
            &mut Stop::never(),
            DriveOptions::default(),
        )
        .unwrap();
        stream.changes
    }

    /// What a reader of `at` passes back, up to the end of the file.
    fn read(at: HeldAt) -> Vec<(String, Checkpoint)> {
        let (out, changes) = std::sync::mpsc::sync_channel(4);
        let reread = FileReread {
            files: vec![shop_binlog()],
        };
        reread
            .start(RereadJob {
                handler: HandlerId::new("default", "h"),
                at,
                subscription: subscription(),
                dead_letters: false,
                out,
                stop: Stop::never(),
            })
            .unwrap();
        changes
            .iter()
            .map(|r| match r {
                Reread::Change(c, from) => (c.id, Checkpoint::clone(&from)),
                Reread::Failed(e) => panic!("{e:#}"),
            })
            .collect()
    }

    #[test]
    fn a_reader_gives_the_held_changes_again_as_the_stream_gave_them() {
        let all = stream();
        assert!(all.len() > 10, "{}", all.len());
        // From a change inside a transaction that is not the file's first.
        let k = (1..all.len())
            .find(|&k| all[k].1 == all[k - 1].1 && all[k].1.pos > all[0].1.pos)
            .expect("a transaction of two changes after the first");
        let (first, from) = all[k].clone();
        let at = HeldAt {
            from,
            first,
            past: false,
            count: (all.len() - k) as u64,
            closed: false,
        };
        assert_eq!(read(at), all[k..]);
        // On past a change handed over, from its transaction's start.
        let (first, from) = all[k + 2].clone();
        let at = HeldAt {
            from,
            first,
            past: true,
            count: (all.len() - k - 3) as u64,
            closed: false,
        };
        assert_eq!(read(at), all[k + 3..]);
    }

    #[test]
    fn a_held_change_missing_from_its_transaction_is_an_error() {
        let all = stream();
        let (out, changes) = std::sync::mpsc::sync_channel(4);
        FileReread {
            files: vec![shop_binlog()],
        }
        .start(RereadJob {
            handler: HandlerId::new("default", "h"),
            at: HeldAt {
                from: all[0].1.clone(),
                first: "0-1-999:0:0".into(),
                past: false,
                count: 1,
                closed: false,
            },
            subscription: subscription(),
            dead_letters: false,
            out,
            stop: Stop::never(),
        })
        .unwrap();
        match changes.recv().unwrap() {
            Reread::Failed(e) => assert!(
                format!("{e:#}").contains("held change 0-1-999:0:0 is not in the transaction at shop-bin.000001:"),
                "{e:#}"
            ),
            Reread::Change(c, _) => panic!("{}", c.id),
        }
        let files = FileReread { files: vec![] };
        let err = files
            .start(RereadJob {
                handler: HandlerId::new("default", "h"),
                at: HeldAt {
                    from: all[0].1.clone(),
                    first: all[0].0.clone(),
                    past: false,
                    count: 1,
                    closed: false,
                },
                subscription: subscription(),
                dead_letters: false,
                out: std::sync::mpsc::sync_channel(1).0,
                stop: Stop::never(),
            })
            .unwrap_err();
        assert!(err.to_string().contains("not among the files given"), "{err}");
    }

    /// The handler the queue tests hold changes for.
    fn handler() -> HandlerId {
        HandlerId::new("default", "h")
    }

    /// A queue for [`handler`] (`shop.*`, held while suspended, with
    /// `breaker` added to its breaker), whose held changes are read back
    /// from `files`, with its held file in `dir` as `range` says.
    fn queue(
        breaker: &str,
        files: Vec<PathBuf>,
        dir: &std::path::Path,
        range: crate::store::HeldRange,
    ) -> crate::pipeline::hold::Holds {
        let text = format!(
            "[[handlers]]\nname = \"h\"\nmodule = \"h.wasm\"\ntables = [\"shop.*\"]\non_error = \"skip\"\nbreaker = {{ while_suspended = \"hold\"{breaker} }}\n"
        );
        let plan = crate::config::Plan::parse(&text, std::path::Path::new("/tmp/rowhook.toml"), |_| None).unwrap();
        let mut holds = crate::pipeline::hold::Holds::default();
        holds.add(handler(), &plan.handlers[0], &crate::telemetry::Registry::new());
        holds.reread_with(Arc::new(FileReread { files }));
        holds.open_file(&handler(), dir, range).unwrap();
        holds
    }

    fn ids_of(holds: &mut crate::pipeline::hold::Holds, id: &HandlerId, want: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < want {
            match holds.get(id, out.len()).unwrap() {
                Some(c) => out.push(c.id.clone()),
                None if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(2)),
                None => panic!("only {} of {want} read back", out.len()),
            }
        }
        assert!(holds.get(id, want).unwrap().is_none(), "no more than held");
        out
    }

    /// A queue leaves its held changes in the binlog, records where, reads
    /// them back in order, moves on past those handed over, and comes back
    /// from the range the store records; what is held after a refusal
    /// goes to the file, behind them.
    #[test]
    fn a_queue_reads_its_held_changes_back_from_the_binlog() {
        let all = stream();
        let id = handler();
        let dir = crate::sink::testing::TempDir::new("holds-binlog");
        let open = |range| queue(", hold_mb = 1", vec![shop_binlog()], dir.path(), range);
        let mut holds = open(Default::default());
        let k = 2;
        for (change, from) in &all[k..] {
            holds
                .push(&id, change.clone(), Vec::new(), &[1; 10], Some(from))
                .unwrap()
                .unwrap();
        }
        let range = holds.end_transaction().pop().unwrap().1;
        let at = range.binlog.clone().unwrap();
        assert_eq!(
            (&at.first, &at.from, at.past, at.count),
            (&all[k].0, &all[k].1, false, (all.len() - k) as u64)
        );
        assert_eq!(
            (range.count, range.in_file(), range.end),
            (at.count, 0, 0),
            "nothing written"
        );
        let want: Vec<String> = all[k..].iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(ids_of(&mut holds, &id, want.len()), want);

        let range = holds.release(&id, 3).unwrap();
        let at = range.binlog.clone().unwrap();
        assert_eq!((&at.first, &at.from, at.past), (&all[k + 2].0, &all[k + 2].1, true));
        assert_eq!(range.count, want.len() as u64 - 3);
        // Refused for want of room: the next one held goes to the file.
        let big = vec![0; 2 << 20];
        assert!(
            holds
                .push(&id, "x:1:0".into(), Vec::new(), &big, None)
                .unwrap()
                .is_err()
        );
        holds
            .push(&id, "x:2:0".into(), Vec::new(), &[1; 10], Some(&all[0].1))
            .unwrap()
            .unwrap();
        let range = holds.end_transaction().pop().unwrap().1;
        assert!(range.binlog.as_ref().unwrap().closed);
        assert_eq!((range.in_file(), range.count), (1, want.len() as u64 - 2));
        holds.sync().unwrap();
        drop(holds);

        // Back from what the store recorded: the rest, in order, then the file's.
        let mut holds = open(range);
        let mut rest = want[3..].to_vec();
        rest.push("x:2:0".into());
        assert_eq!(ids_of(&mut holds, &id, rest.len()), rest);
        let range = holds.release(&id, rest.len()).unwrap();
        assert!(range.is_empty() && range.binlog.is_none(), "{range:?}");
    }

    /// A binlog the reader cannot read (here: a file not given, as a purged
    /// one would be) holds the hand-over back without losing the count,
    /// and is tried again after a pause, not in a loop.
    #[test]
    fn a_binlog_that_cannot_be_read_holds_the_changes_and_is_tried_again_later() {
        let all = stream();
        let id = handler();
        let dir = crate::sink::testing::TempDir::new("holds-unreadable");
        let mut holds = queue("", vec![], dir.path(), Default::default());
        holds
            .push(&id, all[0].0.clone(), Vec::new(), &[1; 10], Some(&all[0].1))
            .unwrap()
            .unwrap();
        holds.end_transaction();
        let now = std::time::Instant::now();
        assert!(holds.get(&id, 0).unwrap().is_none());
        assert_eq!(holds.size(&id).0, 1, "still held");
        let again = holds.read_due(&id, now).unwrap();
        assert!(again >= now + std::time::Duration::from_secs(4), "{:?}", again - now);
    }
}
