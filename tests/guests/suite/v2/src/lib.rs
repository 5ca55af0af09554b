//! Version `v2` of the hot-reload test handler (the shared body is in
//! `../versioned.rs`).

const VERSION: &str = "v2";

include!("../../versioned.rs");
