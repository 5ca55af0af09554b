//! The input is `[event type][event body]`: one event, fed after a fixed
//! MariaDB FORMAT_DESCRIPTION and the fixed TABLE_MAP (from the seed
//! binlogs) of the table id the body starts with, so rows-event bodies
//! (table ids 21-26) reach the row and value decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&type_code, body)) = data.split_first() else {
        return;
    };
    let mut v = rowhook_fuzz::RenderVisitor::default();
    rowhook_fuzz::decode_event(type_code, body, &mut v);
});
