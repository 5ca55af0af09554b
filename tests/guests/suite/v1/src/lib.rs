//! Version `v1` of the hot-reload test handler (the shared body is in
//! `../versioned.rs`).

const VERSION: &str = "v1";

include!("../../versioned.rs");
