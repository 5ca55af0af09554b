//! A handler that never returns: it spins on every row change until its
//! deadline. The noisy neighbour of the benchmark (tests/bench/run.sh):
//! its circuit breaker suspends it, and the handlers beside it must keep
//! their throughput.

use rowhook_guest::{Change, Result};

fn on_change(change: &Change) -> Result<()> {
    loop {
        std::hint::black_box(change.id());
    }
}

rowhook_guest::export_handler!(on_change);
