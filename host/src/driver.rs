//! The one loop: [`Source`] → [`Decoder`] → a [`Consumer`] → back to the
//! source, which `run`, `replay` and `inspect` all use.
//!
//! Everything about reading a stream lives here once: handing the decoder
//! the file it is in, telling the source where the last commit ended (so a
//! lost stream resumes there), dropping the copies of a transaction payload's
//! events, dropping the open transaction when the stream restarts, asking
//! the server for column names a binlog lacks, waiting for the next event
//! while timers and a stop request may wake the loop first. What to do with
//! row changes is the consumer's: the handler [`crate::pipeline::Pipeline`]
//! or `inspect`'s printer.
//!
//! The loop runs on the calling thread, outside any async runtime: handlers
//! are called from it, and WASI's synchronous bindings block on futures of
//! their own. It enters `rt` only to wait for the source. An event that is
//! ready is taken without a trip through the runtime's scheduler, so
//! replaying a file costs no more than a plain read loop.

use std::collections::HashSet;
use std::future::Future as _;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::decode::event::types;
use crate::decode::table_map::TableMap;
use crate::decode::{ChangeVisitor, DecodeError, Decoder, Flow};
use crate::source::{Source, SourceStep};

/// What the driver hands row changes to, with hooks at the points of the
/// loop where a consumer has work of its own.
pub trait Consumer: ChangeVisitor {
    /// After every event the decoder took: work due at event granularity
    /// (flushing buffered messages, applying reloads between transactions)
    /// and any error recorded while visiting. `began`: the event opened a
    /// transaction. Waits must give way to `stop` with [`Interrupted`].
    fn after_event(&mut self, rt: &Runtime, decoder: &Decoder, began: bool, stop: &mut Stop) -> anyhow::Result<()>;

    /// The decoder failed on an event: the error to stop with (the consumer
    /// may know better why, say a handler that halted).
    fn decode_failed(&mut self, e: DecodeError) -> anyhow::Error {
        e.into()
    }

    /// The open transaction is abandoned (the stream restarted at the last
    /// commit, or a stop interrupted it): drop what was buffered for it. Its
    /// events come again, with the same ids.
    fn abandon_transaction(&mut self);

    /// The source has nothing ready: write out what is waiting.
    fn idle(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// When [`Consumer::tick`] is due next, if ever.
    fn next_tick(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// Time-driven work (checkpoints, the status file), called once due;
    /// `decoder` says where the stream is.
    fn tick(&mut self, rt: &Runtime, decoder: &Decoder) -> anyhow::Result<()> {
        let _ = (rt, decoder);
        Ok(())
    }
}

/// Work given up for a stop request (a wait on a sink, a handler call): the
/// transaction was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("stopped before the transaction was acknowledged")]
pub struct Interrupted;

/// A stop request (SIGINT, SIGTERM), or none.
#[derive(Debug, Default, Clone)]
pub struct Stop(Option<watch::Receiver<bool>>);

impl Stop {
    /// Never stops.
    pub fn never() -> Stop {
        Stop(None)
    }

    /// Stops when `rx` turns true.
    pub fn on(rx: watch::Receiver<bool>) -> Stop {
        Stop(Some(rx))
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Resolves once a stop is requested; never without one.
    pub async fn requested_wait(&mut self) {
        match &mut self.0 {
            Some(rx) => {
                if rx.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Turns the first SIGINT or SIGTERM into a stop request, and calls
/// `on_stop` at once (to cut a handler call in progress: see
/// [`crate::runtime::Interrupt`]); the second signal exits at once (the
/// store is crash-safe: the next start resumes at the last checkpoint).
///
/// The signals are awaited on a thread of their own: the loop's runtime
/// runs only while the loop waits in it, and a stop must land while a
/// handler runs too.
pub fn stop_on_signals(on_stop: impl Fn() + Send + 'static) -> anyhow::Result<Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the signal runtime: {e}"))?;
    // Registered before returning, so that a signal from now on is seen.
    let (mut int, mut term) = {
        let _in_rt = rt.enter();
        let listen = |kind| signal(kind).map_err(|e| anyhow::anyhow!("listening for signals: {e}"));
        (listen(SignalKind::interrupt())?, listen(SignalKind::terminate())?)
    };
    std::thread::Builder::new()
        .name("rowhook-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut signals = 0;
                loop {
                    tokio::select! {
                        Some(()) = int.recv() => {}
                        Some(()) = term.recv() => {}
                        else => return,
                    }
                    signals += 1;
                    if signals == 1 {
                        tracing::info!("stopping after the acknowledged transactions (signal again to exit at once)");
                        on_stop();
                        tx.send_replace(true);
                    } else {
                        tracing::warn!("exiting at once: the next start resumes at the last checkpoint");
                        std::process::exit(130);
                    }
                }
            })
        })
        .map_err(|e| anyhow::anyhow!("starting the signal thread: {e}"))?;
    Ok(Stop::on(rx))
}

/// Options of [`drive`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DriveOptions {
    /// Ask the source for the column names of tables whose TABLE_MAP has
    /// none (`binlog_row_metadata` not FULL), once per table.
    pub names_from_source: bool,
}

/// Why [`drive`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The source has no more events; `partial` as in [`SourceStep::End`].
    End {
        /// Offset of a partial trailing event.
        partial: Option<u64>,
    },
    /// The consumer said [`Flow::Stop`] (a limit was reached).
    Stopped,
    /// A stop was requested; the open transaction was abandoned.
    Interrupted,
}

/// How many events pass between looks at the clock and the stop request
/// while events keep coming.
const CHECK_EVERY: u32 = 256;

/// Reads `source` through `decoder` into `consumer` until the source ends,
/// the consumer stops, `stop` is requested, or something fails.
pub fn drive<S: Source, C: Consumer>(
    rt: &Runtime,
    source: &mut S,
    decoder: &mut Decoder,
    consumer: &mut C,
    stop: &mut Stop,
    opts: DriveOptions,
) -> anyhow::Result<Ended> {
    let mut named: HashSet<(String, String)> = HashSet::new();
    let mut since_check = 0u32;
    let mut opened = String::new();
    loop {
        let step = {
            let mut next = pin!(source.next());
            // Most of the time an event is ready: take it without blocking.
            let ready = {
                let _in_rt = rt.enter();
                next.as_mut().poll(&mut Context::from_waker(Waker::noop()))
            };
            match ready {
                Poll::Ready(step) => step?,
                Poll::Pending => {
                    consumer.idle()?;
                    loop {
                        if stop.requested() {
                            return Ok(Ended::Interrupted);
                        }
                        let tick = consumer.next_tick();
                        let woke = rt.block_on(async {
                            tokio::select! {
                                step = &mut next => Some(Some(step)),
                                () = stop.requested_wait() => None,
                                () = tokio::time::sleep_until(tick.unwrap_or_else(tokio::time::Instant::now)), if tick.is_some() => Some(None),
                            }
                        });
                        match woke {
                            Some(Some(step)) => break step?,
                            Some(None) => consumer.tick(rt, decoder)?,
                            None => return Ok(Ended::Interrupted),
                        }
                    }
                }
            }
        };
        match step {
            SourceStep::Event => {}
            SourceStep::Resumed => {
                let txn = decoder.current_gtid().map(str::to_owned);
                if decoder.abandon_transaction() {
                    tracing::info!(
                        txn = txn.as_deref().unwrap_or("-"),
                        "the stream was lost inside a transaction: it is read again from its start, with the same ids"
                    );
                }
                consumer.abandon_transaction();
                continue;
            }
            SourceStep::End { partial } => return Ok(Ended::End { partial }),
        }
        // A file source names each file as it opens it; within a file, a
        // ROTATE the decoder reads (a relay log's first event) may rename it.
        if let Some(name) = source.file_name()
            && name != opened
        {
            name.clone_into(&mut opened);
            decoder.set_file(name);
        }
        let ev = source.event();
        let type_code = ev.header.type_code;
        if opts.names_from_source
            && type_code == types::TABLE_MAP
            && let Some((_, db, table)) = TableMap::peek_names(ev.body, decoder.table_id_len())
        {
            let key = (
                String::from_utf8_lossy(db).into_owned(),
                String::from_utf8_lossy(table).into_owned(),
            );
            if !named.contains(&key) {
                if let Some(names) = rt.block_on(source.column_names(&key.0, &key.1))? {
                    tracing::warn!(
                        db = %key.0, table = %key.1,
                        "column names taken from information_schema (binlog_row_metadata is not FULL): they are today's names and are wrong for rows written before a rename"
                    );
                    decoder.provide_names(&key.0, &key.1, names);
                }
                named.insert(key);
            }
        }
        // Taken again: asking the source for names borrowed it mutably.
        let ev = source.event();
        let (was_open, commits) = (decoder.in_transaction(), decoder.commits());
        let flow = decoder.feed(ev, consumer).map_err(|e| consumer.decode_failed(e))?;
        let began = !was_open && decoder.in_transaction();
        match consumer.after_event(rt, decoder, began, stop) {
            Ok(()) => {}
            Err(e) if e.is::<Interrupted>() => {
                // Its messages may be partly written: it is handled again,
                // with the same ids, at the next start.
                decoder.abandon_transaction();
                consumer.abandon_transaction();
                return Ok(Ended::Interrupted);
            }
            Err(e) => return Err(e),
        }
        if decoder.commits() != commits {
            source.committed(decoder.resume_position());
        }
        if type_code == types::TRANSACTION_PAYLOAD {
            source.skip_payload_copies(decoder.payload_events());
        }
        if flow == Flow::Stop {
            return Ok(Ended::Stopped);
        }
        since_check += 1;
        if since_check == CHECK_EVERY {
            since_check = 0;
            if stop.requested() {
                if decoder.in_transaction() {
                    decoder.abandon_transaction();
                    consumer.abandon_transaction();
                }
                return Ok(Ended::Interrupted);
            }
            if consumer.next_tick().is_some_and(|t| t <= tokio::time::Instant::now()) {
                consumer.tick(rt, decoder)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::decode::{Commit, DecoderOptions, RowChange};
    use crate::source::file::{BinlogFiles, FileStart};

    /// Counts what the driver hands on.
    #[derive(Default)]
    struct Counter {
        changes: u64,
        commits: u64,
        limit: Option<u64>,
        /// (end of the commit, changes up to it)
        ends: Vec<(u64, u64)>,
    }

    impl ChangeVisitor for Counter {
        fn change(&mut self, _: &RowChange<'_>) -> Flow {
            self.changes += 1;
            if self.limit.is_some_and(|l| self.changes >= l) {
                return Flow::Stop;
            }
            Flow::Continue
        }
        fn commit(&mut self, c: &Commit<'_>) -> Flow {
            self.commits += 1;
            self.ends.push((c.end, self.changes));
            Flow::Continue
        }
    }

    impl Consumer for Counter {
        fn after_event(&mut self, _: &Runtime, _: &Decoder, _: bool, _: &mut Stop) -> anyhow::Result<()> {
            Ok(())
        }
        fn abandon_transaction(&mut self) {}
    }

    fn shop() -> Vec<PathBuf> {
        vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/binlog/shop-bin.000001")]
    }

    fn run(files: &[PathBuf], start: Option<FileStart>, limit: Option<u64>) -> (Counter, Ended, (String, u64)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut source = BinlogFiles::new(files, 0, start, false).unwrap();
        let mut decoder = Decoder::new(DecoderOptions::default(), "");
        let mut counter = Counter {
            limit,
            ..Counter::default()
        };
        let ended = drive(
            &rt,
            &mut source,
            &mut decoder,
            &mut counter,
            &mut Stop::never(),
            DriveOptions::default(),
        )
        .unwrap();
        let (file, pos, _) = decoder.resume_position();
        (counter, ended, (file.to_owned(), pos))
    }

    #[test]
    fn reads_a_file_to_its_end() {
        let (c, ended, (file, pos)) = run(&shop(), None, None);
        assert_eq!(ended, Ended::End { partial: None });
        assert_eq!((c.changes, c.commits), (23, 20));
        // The file ends in a ROTATE: what follows is the next file's start.
        assert_eq!((file.as_str(), pos), ("shop-bin.000002", 4));
    }

    #[test]
    fn a_start_at_any_commit_reads_exactly_the_rest() {
        let (all, _, _) = run(&shop(), None, None);
        for &(end, before) in &all.ends {
            let (rest, ended, _) = run(&shop(), Some(FileStart::At(end)), None);
            assert_eq!(ended, Ended::End { partial: None });
            assert_eq!(rest.changes, all.changes - before, "from {end}");
        }
        let (none, _, _) = run(&shop(), Some(FileStart::End), None);
        assert_eq!(none.changes, 0);
    }

    #[test]
    fn a_limit_stops_the_loop() {
        let (c, ended, _) = run(&shop(), None, Some(5));
        assert_eq!((c.changes, ended), (5, Ended::Stopped));
    }
}
