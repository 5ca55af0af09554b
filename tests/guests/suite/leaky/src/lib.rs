//! A handler that keeps 4 KiB from every call and never frees it, as a
//! language runtime that leaks per call does: `rowhook check` must say so.

fn on_change(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    let kept: &'static mut [u8] = Box::leak(vec![1u8; 4096].into_boxed_slice());
    kept[0] = change.id().len() as u8;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
