//! Rust SDK for rowhook handlers.
