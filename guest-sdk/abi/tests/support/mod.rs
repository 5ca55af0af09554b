//! Test support shared with rowhook's own tests.

pub mod vectors;
