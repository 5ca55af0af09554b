// The body both versions share: for every change, count it in state and
// emit `<version> <id> <count>`. A reload that loses or repeats an event, or
// loses the state, shows as a gap or a repeat in ids or counts.

fn on_change(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    let seen = rowhook_guest::state::increment("seen", 1)?;
    let id: i64 = change.get("id")?;
    rowhook_guest::emit("out", None, format!("{VERSION} {id} {seen}"))?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
