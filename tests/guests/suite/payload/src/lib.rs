//! Every inserted row's `payload` column goes to the sink `out` as it is:
//! the exec sink's tests write the JSON a command's placeholders are
//! filled from (hostile values included) into the table.

fn on_change(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    let payload: &str = change.get("payload")?;
    rowhook_guest::emit("out", None, payload)?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
