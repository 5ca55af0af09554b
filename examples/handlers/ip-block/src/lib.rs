//! Block an IP address once it has made too many requests.
//!
//! Who: a shop whose web servers log every request into `shop.hits`, and who
//! wants abusive clients firewalled as soon as they cross a line, not after
//! tonight's log analysis.
//!
//! In: inserts into `shop.hits` (the config subscribes to inserts only;
//! anything else that reaches the handler is ignored); the handler reads the
//! `ip` column.
//!
//! Out: hits are counted per address in the handler's state (counter
//! `hits:<ip>`). When an address reaches `BLOCK_AT` hits, one message goes
//! to the sink `firewall`, keyed by the address: a JSON object whose fields
//! fill the placeholders of the command the config grants (an `exec` sink):
//!
//! ```text
//! {"ip":"203.0.113.7","family":"ip","hits":4,"change":"0-1-17:0:4"}
//! ```
//!
//! `family` is nftables' name for the address family (`ip`, or `ip6` for an
//! IPv6 address); `hits` and `change` say which change tipped the count, for
//! the log. The handler never writes a command line: the operator's config
//! names the executable and its arguments, and each field must match its
//! placeholder's pattern there again. Exactly once in state: the counter
//! passes `BLOCK_AT` only once, and rowhook commits state together with its
//! position, so a restart does not count a hit twice (the sink's
//! `once_only` ledger keeps the command from running twice). A value that is
//! not an IP address is logged and not counted: it never reaches the
//! command. The threshold is a constant because handlers get no environment
//! or configuration: to change it, change it here and rebuild (rowhook
//! reloads the new module).
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/handlers`
//! (or `bash examples/demo.sh`); run: `examples/ip-block.toml`.

use std::net::IpAddr;

use rowhook_guest::{Change, Op, Result, log, metrics, state};

/// The sink the block messages go to; the config must grant it.
const SINK: &str = "firewall";

/// The hit that gets an address blocked. In the recorded shop binlog
/// 203.0.113.7 makes five requests: the fourth blocks it, the fifth changes
/// nothing.
const BLOCK_AT: i64 = 4;

/// The message that gets `ip` blocked: the fields the sink's command
/// template takes, and which change made it `hits`. An address's text and a
/// change id need no JSON escaping.
fn block_message(ip: IpAddr, hits: i64, change: &Change) -> String {
    let family = match ip {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    };
    format!(
        r#"{{"ip":"{ip}","family":"{family}","hits":{hits},"change":"{}"}}"#,
        change.id()
    )
}

fn on_change(change: &Change) -> Result<()> {
    if change.op() != Op::Insert {
        return Ok(());
    }
    let raw: &str = change.get("ip")?;
    let Ok(ip) = raw.parse::<IpAddr>() else {
        log::warn(
            "not an IP address, hit not counted",
            &[("ip", raw), ("change", change.id())],
        );
        return Ok(());
    };
    // The canonical form, so `::1` and `0:0::1` count as one address.
    let hits = state::increment(&format!("hits:{ip}"), 1)?;
    if hits == BLOCK_AT {
        rowhook_guest::emit(SINK, Some(&ip.to_string()), block_message(ip, hits, change))?;
        metrics::counter_add("blocked_ips", 1);
    }
    Ok(())
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    use super::*;

    /// A hit, as row `row` of a multi-row insert.
    fn hit_at(ip: &'static str, row: u32) -> Vec<u8> {
        ChangeBuilder::insert("shop", "hits")
            .gtid("0-1-17")
            .index(0, row)
            .column("id", Value::UInt(u64::from(row) + 1))
            .column("ip", Value::String(ip))
            .column("path", Value::String("/login"))
            .build()
    }

    fn hit(ip: &'static str) -> Vec<u8> {
        hit_at(ip, 0)
    }

    fn commands() -> Vec<String> {
        testing::messages()
            .into_iter()
            .map(|m| String::from_utf8(m.payload).unwrap())
            .collect()
    }

    #[test]
    fn blocks_exactly_once_at_the_threshold() {
        for n in 1..=BLOCK_AT + 3 {
            let row = 2 * n as u32;
            testing::run(on_change, &hit_at("203.0.113.7", row)).unwrap();
            testing::run(on_change, &hit_at("198.51.100.2", row + 1)).unwrap();
            let expected = if n < BLOCK_AT { 0 } else { 2 };
            assert_eq!(testing::messages().len(), expected, "after {n} hits each");
        }
        assert_eq!(
            commands(),
            [
                r#"{"ip":"203.0.113.7","family":"ip","hits":4,"change":"0-1-17:0:8"}"#,
                r#"{"ip":"198.51.100.2","family":"ip","hits":4,"change":"0-1-17:0:9"}"#
            ]
        );
        assert_eq!(testing::messages()[0].key.as_deref(), Some("203.0.113.7"));
        assert_eq!(state::counter("hits:203.0.113.7"), BLOCK_AT + 3);
        assert_eq!(testing::counters()["blocked_ips"], 2);
    }

    #[test]
    fn ipv6_addresses_count_in_canonical_form() {
        for ip in ["2001:db8::1", "2001:0db8:0:0::1", "2001:DB8::1", "2001:db8:0:0:0:0:0:1"] {
            testing::run(on_change, &hit(ip)).unwrap();
        }
        assert_eq!(
            commands(),
            [r#"{"ip":"2001:db8::1","family":"ip6","hits":4,"change":"0-1-17:0:0"}"#]
        );
    }

    #[test]
    fn what_is_not_an_address_never_reaches_the_sink() {
        for bad in ["203.0.113.7; rm -rf /", "$(reboot)", "", "203.0.113.07"] {
            for _ in 0..BLOCK_AT {
                testing::run(on_change, &hit(bad)).unwrap();
            }
        }
        assert!(testing::messages().is_empty());
        assert!(testing::state().is_empty());
        assert_eq!(testing::logs().len(), 4 * BLOCK_AT as usize);
    }

    #[test]
    fn a_denied_emit_fails_the_change_and_the_count_with_it() {
        testing::grant(&[]);
        for _ in 1..BLOCK_AT {
            testing::run(on_change, &hit("203.0.113.7")).unwrap();
        }
        let err = testing::run(on_change, &hit("203.0.113.7")).unwrap_err();
        assert!(err.contains("denied"), "{err}");
        // The failed call's increment is discarded: the next try blocks again.
        assert_eq!(state::counter("hits:203.0.113.7"), BLOCK_AT - 1);
    }
}
