//! A handler that tries to reach the network directly. Its component
//! imports `wasi:sockets`, which rowhook links to implementations that deny
//! every use: it loads, and the connection fails.

fn on_change(_change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    let connected = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    rowhook_guest::emit("out", None, format!("connected: {connected}"))?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
