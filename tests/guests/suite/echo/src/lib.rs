//! Every change it is given goes to the sink `out` as the row change JSON,
//! so a test sees exactly what a handler sees: column names included.

fn on_change(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    rowhook_guest::emit("out", Some(change.id()), change.to_json()?)?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
