/* The ip-block handler, natively, against rowhook.h's in-memory recorder:
 * the tests of its Rust twin (examples/handlers/ip-block), in C.
 *
 * Built and run by `make test`. */

#include "ip_block.c"

static int passed, failed;

#define CHECK(cond)                                                                                    \
    do {                                                                                               \
        if (cond) passed++;                                                                            \
        else {                                                                                         \
            failed++;                                                                                  \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                            \
        }                                                                                              \
    } while (0)

/* A hit from `ip`, as row `row` of a multi-row insert; true if handled. */
static bool hit_at(const char *ip, uint32_t row, char **error) {
    rh_testing_change b = rh_testing_insert("shop", "hits");
    rh_testing_gtid(&b, "0-1-17");
    rh_testing_index(&b, 0, row);
    rh_testing_column(&b, "id", rh_make_uint(row + 1));
    rh_testing_column(&b, "ip", rh_make_string(ip));
    rh_testing_column(&b, "path", rh_make_string("/login"));
    size_t len;
    uint8_t *buf = rh_testing_build(&b, &len);
    rh_result r = rh_testing_run(rh_exported_handler, buf, len);
    free(buf);
    if (error) *error = r.error;
    else free(r.error);
    return r.error == NULL;
}

static bool hit(const char *ip) { return hit_at(ip, 0, NULL); }

static bool message_is(size_t i, const char *payload, const char *key) {
    size_t n;
    const rh_testing_message *m = rh_testing_messages(&n);
    return i < n && m[i].len == strlen(payload) && memcmp(m[i].payload, payload, m[i].len) == 0 &&
           (key ? m[i].key && strcmp(m[i].key, key) == 0 : !m[i].key) && strcmp(m[i].sink, "firewall") == 0;
}

static size_t messages(void) {
    size_t n;
    rh_testing_messages(&n);
    return n;
}

static void blocks_exactly_once_at_the_threshold(void) {
    rh_testing_reset();
    for (uint32_t n = 1; n <= BLOCK_AT + 3; n++) {
        uint32_t row = 2 * n;
        CHECK(hit_at("203.0.113.7", row, NULL));
        CHECK(hit_at("198.51.100.2", row + 1, NULL));
        CHECK(messages() == (n < BLOCK_AT ? 0u : 2u));
    }
    CHECK(message_is(0, "{\"ip\":\"203.0.113.7\",\"family\":\"ip\",\"hits\":4,\"change\":\"0-1-17:0:8\"}", "203.0.113.7"));
    CHECK(message_is(1, "{\"ip\":\"198.51.100.2\",\"family\":\"ip\",\"hits\":4,\"change\":\"0-1-17:0:9\"}", "198.51.100.2"));
    CHECK(rh_state_counter("hits:203.0.113.7") == BLOCK_AT + 3);
    CHECK(rh_testing_counter("blocked_ips") == 2);
}

static void ipv6_addresses_count_in_canonical_form(void) {
    rh_testing_reset();
    const char *forms[] = {"2001:db8::1", "2001:0db8:0:0::1", "2001:DB8::1", "2001:db8:0:0:0:0:0:1"};
    for (size_t i = 0; i < 4; i++) CHECK(hit(forms[i]));
    CHECK(messages() == 1);
    CHECK(message_is(0, "{\"ip\":\"2001:db8::1\",\"family\":\"ip6\",\"hits\":4,\"change\":\"0-1-17:0:0\"}", "2001:db8::1"));
}

static void what_is_not_an_address_never_reaches_the_sink(void) {
    rh_testing_reset();
    const char *bad[] = {"203.0.113.7; rm -rf /", "$(reboot)", "", "203.0.113.07"};
    for (size_t i = 0; i < 4; i++)
        for (int k = 0; k < BLOCK_AT; k++) CHECK(hit(bad[i]));
    size_t n;
    const rh_testing_log *logs = rh_testing_logs(&n);
    CHECK(messages() == 0);
    CHECK(rh_testing_state_len() == 0);
    CHECK(n == 4 * BLOCK_AT);
    CHECK(n > 0 && logs[0].level == RH_WARN && strcmp(logs[0].message, "not an IP address, hit not counted") == 0 &&
          logs[0].nfields == 2 && strcmp(logs[0].values[0], "203.0.113.7; rm -rf /") == 0);
}

static void a_denied_emit_fails_the_change_and_the_count_with_it(void) {
    rh_testing_reset();
    rh_testing_grant(NULL, 0);
    for (int k = 1; k < BLOCK_AT; k++) CHECK(hit("203.0.113.7"));
    char *error;
    CHECK(!hit_at("203.0.113.7", 0, &error));
    CHECK(error && strstr(error, "denied"));
    free(error);
    /* The failed call's increment is discarded: the next try blocks again. */
    CHECK(rh_state_counter("hits:203.0.113.7") == BLOCK_AT - 1);
    CHECK(rh_testing_counter("blocked_ips") == 0);
}

int main(void) {
    blocks_exactly_once_at_the_threshold();
    ipv6_addresses_count_in_canonical_form();
    what_is_not_an_address_never_reaches_the_sink();
    a_denied_emit_fails_the_change_and_the_count_with_it();
    rh_testing_reset();
    printf("ip_block: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
