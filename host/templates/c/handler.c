/* {{name}}: every new order of `shop.orders` as one JSON line to the sink
 * `out`, keyed by the order id, and a count of the orders in the handler's
 * state. */
#include <stdio.h>

#include "rowhook.h"

static rh_result on_change(const rh_change *c) {
    if (rh_change_op(c) != RH_INSERT) {
        return rh_ok();
    }
    int64_t id, total;
    rh_str amount;
    RH_TRY(rh_get_i64(c, "id", &id));
    RH_TRY(rh_get_text(c, "amount", &amount));
    rh_json line;
    rh_json_init(&line);
    rh_json_int(&line, "order", id);
    rh_json_text(&line, "amount", amount);
    RH_TRY(rh_json_finish(&line));
    char key[24];
    int n = snprintf(key, sizeof key, "%lld", (long long)id);
    rh_status st = rh_emit_key("out", (rh_str){key, (size_t)n}, line.buf, line.len);
    rh_json_free(&line);
    RH_TRY(st);
    RH_TRY(rh_state_increment("orders", 1, &total));
    return rh_ok();
}
RH_EXPORT_HANDLER(on_change)
