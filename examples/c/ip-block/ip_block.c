/* Block an IP address once it has made too many requests: the C twin of
 * examples/handlers/ip-block, with the same output for the same binlog.
 *
 * Who: a shop whose web servers log every request into `shop.hits`, and who
 * wants abusive clients firewalled as soon as they cross a line, not after
 * tonight's log analysis.
 *
 * In: inserts into `shop.hits` (the config subscribes to inserts only;
 * anything else that reaches the handler is ignored); the handler reads the
 * `ip` column.
 *
 * Out: hits are counted per address in the handler's state (counter
 * `hits:<ip>`). When an address reaches BLOCK_AT hits, one message goes to
 * the sink `firewall`, keyed by the address: a JSON object whose fields fill
 * the placeholders of the command the config grants (an `exec` sink):
 *
 *     {"ip":"203.0.113.7","family":"ip","hits":4,"change":"0-1-17:0:4"}
 *
 * `family` is nftables' name for the address family (`ip`, or `ip6` for an
 * IPv6 address); `hits` and `change` say which change tipped the count, for
 * the log. The handler never writes a command line: the operator's config
 * names the executable and its arguments, and each field must match its
 * placeholder's pattern there again. Exactly once in state: the counter
 * passes BLOCK_AT only once, and rowhook commits state together with its
 * position, so a restart does not count a hit twice (the sink's `once_only`
 * ledger keeps the command from running twice). A value that is not an IP
 * address is logged and not counted: it never reaches the command. The
 * threshold is a constant because handlers get no environment or
 * configuration: to change it, change it here and rebuild (rowhook reloads
 * the new module).
 *
 * Build: `make -C examples/c/ip-block`; run: examples/ip-block-c.toml. */

#include <stdio.h>

#include "ip_address.h"
#include "rowhook.h"

/* The sink the block messages go to; the config must grant it. */
#define SINK "firewall"

/* The hit that gets an address blocked. In the recorded shop binlog
 * 203.0.113.7 makes five requests: the fourth blocks it, the fifth changes
 * nothing. */
#define BLOCK_AT 4

static rh_result on_change(const rh_change *c) {
    if (rh_change_op(c) != RH_INSERT) return rh_ok();
    rh_str raw;
    RH_TRY(rh_get_text(c, "ip", &raw));
    ip_address ip;
    if (!ip_address_parse(raw.ptr, raw.len, &ip)) {
        rh_field fields[] = {{"ip", raw}, {"change", rh_change_id(c)}};
        rh_log_warn("not an IP address, hit not counted", fields, 2);
        return rh_ok();
    }
    /* The canonical form, so `::1` and `0:0::1` count as one address. */
    char text[IP_ADDRESS_TEXT], key[sizeof "hits:" + IP_ADDRESS_TEXT];
    ip_address_text(&ip, text);
    snprintf(key, sizeof key, "hits:%s", text);
    int64_t hits;
    RH_TRY(rh_state_increment(key, 1, &hits));
    if (hits == BLOCK_AT) {
        rh_str id = rh_change_id(c);
        /* An address's text and a change id need no JSON escaping. */
        char message[256];
        int n = snprintf(message, sizeof message, "{\"ip\":\"%s\",\"family\":\"%s\",\"hits\":%lld,\"change\":\"%.*s\"}",
                         text, ip.v6 ? "ip6" : "ip", (long long)hits, RH_STR_ARG(id));
        if (n < 0 || (size_t)n >= sizeof message) return rh_fail("change id too long for the block message");
        RH_TRY(rh_emit(SINK, text, message, (size_t)n));
        rh_counter_add("blocked_ips", 1);
    }
    return rh_ok();
}

RH_EXPORT_HANDLER(on_change)
