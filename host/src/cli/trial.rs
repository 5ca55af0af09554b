//! Trial calls for `rowhook check`: each handler is called a thousand times
//! with row changes of its tables (from recorded binlog files, or made up
//! from its subscription), and its memory is read after the first hundred
//! calls and at the end. A build whose memory grows with every call (a
//! language runtime that leaks per call) is caught before it runs, with
//! how many calls it has left before its `memory_mb`.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::{HandlerPlan, Plan};
use crate::decode::table_map::TableMap;
use crate::decode::txn::{ChangeVisitor, Flow};
use crate::decode::{Decoder, Op, RowChange};
use crate::driver::{Consumer, DriveOptions, Stop, drive};
use crate::guest_abi::DirectoryCache;
use crate::runtime::{GuestError, Instance};
use crate::source::file::BinlogFiles;

/// Calls made per handler.
pub const CALLS: usize = 1000;
/// Calls before memory is first read: a runtime's first calls fill its
/// caches and heaps.
pub const WARM_UP: usize = 100;
/// Distinct changes kept per handler from binlog files.
const MAX_SAMPLES: usize = 100;
/// A handler whose memory, growing at the measured rate, reaches its cap
/// within this many calls fails the check.
pub const LEAK_HORIZON: u64 = 1_000_000;

/// Encoded changes to call a handler with, and where they came from.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// The changes, in the row change encoding.
    pub changes: Vec<Vec<u8>>,
    /// Where they came from, for the report.
    pub from: String,
}

/// The changes of each handler's tables and operations in binlog `files`
/// (at most a hundred per handler), by handler name.
pub fn from_binlog(plan: &Plan, files: &[PathBuf]) -> anyhow::Result<HashMap<String, Samples>> {
    let rt = super::io_runtime()?;
    let mut collector = Collector {
        handlers: &plan.handlers,
        directories: DirectoryCache::default(),
        samples: HashMap::new(),
        buf: Vec::new(),
    };
    let mut decoder: Decoder = super::decoder_for(plan, "");
    let mut source = BinlogFiles::new(files, 0, None, false)?;
    drive(
        &rt,
        &mut source,
        &mut decoder,
        &mut collector,
        &mut Stop::never(),
        DriveOptions::default(),
    )?;
    let from = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(collector
        .samples
        .into_iter()
        .map(|(name, changes)| {
            let from = format!("{} change(s) of its tables from {from}", changes.len());
            (name, Samples { changes, from })
        })
        .collect())
}

struct Collector<'p> {
    handlers: &'p [HandlerPlan],
    directories: DirectoryCache,
    samples: HashMap<String, Vec<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChangeVisitor for Collector<'_> {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        let (db, table) = (change.table.db.as_str(), change.table.table.as_str());
        for h in self.handlers {
            let wanted = h.ops.contains(change.op) && h.tables.iter().any(|t| t.matches(db, table));
            let samples = self.samples.entry(h.name.clone()).or_default();
            if wanted && samples.len() < MAX_SAMPLES && self.directories.encode(change, &mut self.buf).is_ok() {
                samples.push(self.buf.clone());
            }
        }
        Flow::Continue
    }

    fn table_map(&mut self, table: &TableMap) {
        self.directories.forget(table.table_id);
    }
}

impl Consumer for Collector<'_> {
    fn after_event(&mut self, _: &tokio::runtime::Runtime, _: &Decoder, _: bool, _: &mut Stop) -> anyhow::Result<()> {
        Ok(())
    }

    fn abandon_transaction(&mut self) {}
}

/// Changes made up from a handler's subscription alone, when neither a
/// binlog nor the server's description of its tables is at hand: for each
/// table it names (`db.*` as a table `t`) and each operation it takes, one
/// change without columns. A handler that reads a column gets its error
/// for a missing column, which still measures its memory; rows shaped as
/// the tables are come from the server ([`super::shapes`]), real rows with
/// `--binlog`.
pub fn synthetic(h: &HandlerPlan) -> Samples {
    let mut changes = Vec::new();
    for pattern in &h.tables {
        let (db, table) = (pattern.db.as_str(), pattern.table.as_deref());
        for op in [Op::Insert, Op::Update, Op::Delete] {
            if !h.ops.contains(op) {
                continue;
            }
            let head = rowhook_abi::write::Header {
                op,
                before: op != Op::Insert,
                after: op != Op::Delete,
                db,
                table: table.unwrap_or("t"),
                ..Default::default()
            };
            let mut out = Vec::new();
            let directory = rowhook_abi::write::ColumnDirectory::new(std::iter::empty::<rowhook_abi::Column<'_>>())
                .expect("no columns");
            if rowhook_abi::write::ChangeWriter::new(&mut out, &head, &directory)
                .and_then(|w| w.finish())
                .is_ok()
            {
                changes.push(out);
            }
        }
    }
    Samples {
        from: format!(
            "{} made-up change(s) without columns (pass --binlog FILE for real rows)",
            changes.len()
        ),
        changes,
    }
}

/// What a thousand calls showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    /// Calls made (fewer than [`CALLS`] if one trapped).
    pub calls: usize,
    /// Calls that returned an error (not a trap).
    pub errors: usize,
    /// The first error's text.
    pub first_error: Option<String>,
    /// The trap, timeout or quota that broke the instance, if one did.
    pub broke: Option<String>,
    /// Memory after [`WARM_UP`] calls and at the end, bytes.
    pub memory: (usize, usize),
}

impl Trial {
    /// Bytes the memory grew per call after the warm-up.
    pub fn growth_per_call(&self) -> f64 {
        let calls = self.calls.saturating_sub(WARM_UP).max(1);
        self.memory.1.saturating_sub(self.memory.0) as f64 / calls as f64
    }

    /// Calls left before `cap` bytes at the measured growth, if it grows.
    pub fn calls_to_cap(&self, cap: usize) -> Option<u64> {
        let per_call = self.growth_per_call();
        (per_call > 0.0).then(|| (cap.saturating_sub(self.memory.1) as f64 / per_call) as u64)
    }
}

/// Calls `instance` [`CALLS`] times with `changes` in turn; nothing it
/// emits or writes goes anywhere.
pub fn run(instance: &mut Instance, changes: &[Vec<u8>]) -> Trial {
    let mut trial = Trial {
        calls: 0,
        errors: 0,
        first_error: None,
        broke: None,
        memory: (instance.memory_bytes(), instance.memory_bytes()),
    };
    if changes.is_empty() {
        return trial;
    }
    for change in changes.iter().cycle().take(CALLS) {
        let result = instance.call(change);
        trial.calls += 1;
        instance.drop_emitted();
        let _ = instance.take_logs();
        instance.state().abandon();
        match result {
            Ok(()) => {}
            Err(GuestError::Failed(e)) => {
                trial.errors += 1;
                trial.first_error.get_or_insert(e);
            }
            Err(e) => {
                trial.broke = Some(e.to_string());
                break;
            }
        }
        if trial.calls == WARM_UP {
            trial.memory.0 = instance.memory_bytes();
        }
    }
    trial.memory.1 = instance.memory_bytes();
    if trial.calls < WARM_UP {
        trial.memory.0 = trial.memory.1;
    }
    trial
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_projected_to_the_cap() {
        let trial = Trial {
            calls: CALLS,
            errors: 0,
            first_error: None,
            broke: None,
            memory: (1 << 20, (1 << 20) + 900 * 1024),
        };
        assert_eq!(trial.growth_per_call(), 1024.0);
        assert_eq!(
            trial.calls_to_cap(16 << 20),
            Some(((16 << 20) - (1 << 20) - 900 * 1024) / 1024)
        );
        let flat = Trial {
            memory: (1 << 20, 1 << 20),
            ..trial
        };
        assert_eq!(flat.calls_to_cap(16 << 20), None);
    }
}
