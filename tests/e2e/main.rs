//! End-to-end tests of rowhook against a real MariaDB with the binlog on.
//!
//! Every test that needs a server starts its own (`tests/mariadb.sh`), on a
//! free port with a temporary datadir, and stops it when done. Outputs are
//! compared with golden JSONL files under `tests/golden/`; set
//! `ROWHOOK_BLESS=1` to rewrite them after a deliberate change.

/// Reading MySQL's binlog formats from the conformance corpus in ../shared.
mod conformance;
/// Wrong passwords, missing grants, wrong server settings, bad files.
mod errors;
/// WebAssembly handlers run by `rowhook replay`: output, containment, policies.
mod handlers;
/// Resuming from every commit position gives exactly the rest.
mod resume;
/// Shared helpers: the test server, running the CLI, golden files.
mod support;
/// The type-coverage workload: live and file against golden, and against mysqlbinlog.
mod types;
