//! The input is a binlog file after its 4 magic bytes: framed like the file
//! source frames it, decoded event by event, every row change rendered as
//! JSON, until the end or the first error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut v = rowhook_fuzz::RenderVisitor::default();
    rowhook_fuzz::decode_file(data, &mut v);
});
