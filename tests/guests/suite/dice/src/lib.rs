//! Every change it is given: one line to the sink `out` with what the
//! handler draws from each `wasi:random` interface and the hash a fresh
//! Rust `HashMap` would give the change's id, so a test can check that
//! replays draw the same and that handlers of other names draw otherwise.

use std::hash::BuildHasher as _;

#[allow(unsafe_code, missing_docs, clippy::all)]
mod wasi {
    wit_bindgen::generate!({
        inline: "
            package wasi:random@0.2.0;
            interface random {
                get-random-bytes: func(len: u64) -> list<u8>;
                get-random-u64: func() -> u64;
            }
            interface insecure {
                get-insecure-random-bytes: func(len: u64) -> list<u8>;
                get-insecure-random-u64: func() -> u64;
            }
            interface insecure-seed {
                insecure-seed: func() -> tuple<u64, u64>;
            }
            world dice {
                import random;
                import insecure;
                import insecure-seed;
            }
        ",
        world: "dice",
    });
}

use wasi::wasi::random::{insecure, insecure_seed, random};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn on_change(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    let bytes = hex(&random::get_random_bytes(12));
    let number = random::get_random_u64();
    let insecure = hex(&insecure::get_insecure_random_bytes(8));
    let (s0, s1) = insecure_seed::insecure_seed();
    let hash = std::collections::hash_map::RandomState::new().hash_one(change.id());
    rowhook_guest::emit(
        "out",
        None,
        format!(
            r#"{{"id":"{}","random":"{bytes}","u64":{number},"insecure":"{insecure}","seed":"{s0:016x}{s1:016x}","hash":{hash}}}"#,
            change.id()
        ),
    )?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
