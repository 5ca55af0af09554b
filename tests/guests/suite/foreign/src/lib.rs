//! A handler that dials out through an interface of its own making: its
//! component imports `acme:raw/net`, which rowhook refuses to load.

mod raw {
    wit_bindgen::generate!({
        inline: "
            package acme:raw@0.1.0;
            interface net {
                dial: func(host: string) -> bool;
            }
            world foreign {
                import net;
            }
        ",
        world: "foreign",
    });
}

fn on_change(_change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
    let dialed = raw::acme::raw::net::dial("example.com");
    rowhook_guest::emit("out", None, format!("dialed: {dialed}"))?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
