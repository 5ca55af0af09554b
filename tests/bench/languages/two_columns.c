/* The languages benchmark's handler in C: reads `id` and `status` of a
 * `cdcbench.orders` change and emits them as one JSON line. */
#include "rowhook.h"

static rh_result on_change(const rh_change *c) {
    uint64_t id;
    rh_str status;
    RH_TRY(rh_get_u64(c, "id", &id));
    RH_TRY(rh_get_text(c, "status", &status));
    rh_json doc;
    rh_json_init(&doc);
    rh_json_uint(&doc, "id", id);
    rh_json_text(&doc, "status", status);
    RH_TRY(rh_json_finish(&doc));
    rh_status st = rh_emit("out", NULL, doc.buf, doc.len);
    rh_json_free(&doc);
    RH_TRY(st);
    return rh_ok();
}
RH_EXPORT_HANDLER(on_change)
