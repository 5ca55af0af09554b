/* The SDK beyond the encoding: the JSON builder's escaping and number
 * formatting (as guest-sdk/src/json.rs), and the typed getters, images,
 * `changed` and error messages (as guest-sdk/src/change.rs), on real
 * vectors. Built natively.
 *
 * Usage: test_sdk VECTORS_DIR */

#include <math.h>
#include <stdio.h>

#include "../rowhook.h"

static int passed, failed;

#define CHECK(cond)                                                                                    \
    do {                                                                                               \
        if (cond) passed++;                                                                            \
        else {                                                                                         \
            failed++;                                                                                  \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                            \
        }                                                                                              \
    } while (0)

/* Finishes `doc` and checks it is `want` (which may hold NUL-free UTF-8). */
static void check_doc(rh_json *doc, const char *want, int line) {
    bool ok = rh_json_finish(doc) == RH_OK && doc->len == strlen(want) && memcmp(doc->buf, want, doc->len) == 0;
    if (ok) passed++;
    else {
        failed++;
        fprintf(stderr, "FAIL line %d:\n  want %s\n  got  %.*s\n", line, want, (int)doc->len, (const char *)doc->buf);
    }
    rh_json_free(doc);
}

static void json_escaping(void) {
    rh_json doc;
    rh_json_init(&doc);
    rh_json_str(&doc, "a\"b", "x\ny\x7f\xc2\x85\xc2\xa0\xc2\x9f\xc3\xa9\t\\");
    rh_json_int(&doc, "i", -3);
    rh_json_uint(&doc, "u", 7);
    rh_json_float(&doc, "f", INFINITY);
    rh_json_bool(&doc, "t", true);
    rh_json_null(&doc, "n");
    rh_value d = {RH_TAG_DECIMAL, {.text = {"-1.50", 5}}};
    rh_json_value(&doc, "d", &d);
    rh_value b = {RH_TAG_BYTES, {.bytes = {(const uint8_t *)"ab", 2}}};
    rh_json_value(&doc, "b", &b);
    rh_value j = {RH_TAG_JSON, {.text = {"{\"k\":[1]}", 9}}};
    rh_json_value(&doc, "j", &j);
    rh_json_raw(&doc, "o", "[]", 2);
    /* U+00A0 is no control: it stays as it is. */
    check_doc(&doc,
              "{\"a\\\"b\":\"x\\ny\\u007f\\u0085\xc2\xa0\\u009f\xc3\xa9\\t\\\\\",\"i\":-3,\"u\":7,\"f\":null,"
              "\"t\":true,\"n\":null,\"d\":\"-1.50\",\"b\":\"YWI=\",\"j\":{\"k\":[1]},\"o\":[]}",
              __LINE__);

    /* Every C0 control, short where JSON has a short form. */
    char all[33];
    for (int c = 1; c < 32; c++) all[c - 1] = (char)c;
    all[31] = 0;
    rh_json_init(&doc);
    rh_json_str(&doc, "c", all);
    check_doc(&doc,
              "{\"c\":\"\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f"
              "\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c"
              "\\u001d\\u001e\\u001f\"}",
              __LINE__);

    /* A NUL inside a text read from a change, and a C1 control at the end. */
    rh_json_init(&doc);
    rh_str nul = {"a\0b\xc2\x80", 5};
    rh_json_text(&doc, "t", nul);
    check_doc(&doc, "{\"t\":\"a\\u0000b\\u0080\"}", __LINE__);

    /* A lone 0xC2 before a byte that is not C1, and DEL in a name. */
    rh_json_init(&doc);
    rh_json_str(&doc, "\x7f", "\xc2\xbf");
    check_doc(&doc, "{\"\\u007f\":\"\xc2\xbf\"}", __LINE__);

    rh_json_init(&doc);
    check_doc(&doc, "{}", __LINE__);

    /* A document larger than the first buffer. */
    rh_json_init_capacity(&doc, 2);
    char big[1001];
    memset(big, 'x', 1000);
    big[1000] = 0;
    rh_json_str(&doc, "x", big);
    CHECK(rh_json_finish(&doc) == RH_OK && doc.len == 1000 + 8);
    rh_json_free(&doc);
}

static void json_numbers(void) {
    static const struct {
        double value;
        const char *want;
    } doubles[] = {
        {0.0, "0.0"},       {-0.0, "-0.0"},       {1.0, "1.0"},         {1e-5, "0.00001"},
        {1e-7, "1e-7"},     {1.5e300, "1.5e300"}, {123456.75, "123456.75"}, {1e15, "1000000000000000.0"},
        {1e16, "1e16"},     {0.1, "0.1"},         {-2.5e-8, "-2.5e-8"}, {5e-324, "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e308"},           {NAN, "null"},
    };
    for (size_t i = 0; i < sizeof doubles / sizeof *doubles; i++) {
        rh_json doc;
        rh_json_init(&doc);
        rh_json_float(&doc, "f", doubles[i].value);
        char want[64];
        snprintf(want, sizeof want, "{\"f\":%s}", doubles[i].want);
        check_doc(&doc, want, __LINE__);
    }
    /* FLOAT columns: the shortest digits of the f32, and its own range of
     * plain notation (what Rust's ryu does for an f32). */
    static const struct {
        float value;
        const char *want;
    } floats[] = {
        {5.1268166e-6f, "0.0000051268166"}, {1e-7f, "1e-7"}, {1e-6f, "0.000001"}, {123456.7f, "123456.7"},
        {1e13f, "1e13"}, {1e12f, "1000000000000.0"}, {3.4028235e38f, "3.4028235e38"},
    };
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++) {
        rh_json doc;
        rh_value v = rh_make_float(floats[i].value);
        rh_json_init(&doc);
        rh_json_value(&doc, "f", &v);
        char want[64];
        snprintf(want, sizeof want, "{\"f\":%s}", floats[i].want);
        check_doc(&doc, want, __LINE__);
    }
    rh_json doc;
    rh_json_init(&doc);
    rh_value f = {RH_TAG_FLOAT, {.f = (double)1.1f}};
    rh_json_value(&doc, "f", &f);
    rh_value big = {RH_TAG_FLOAT, {.f = (double)1e13f}};
    rh_json_value(&doc, "g", &big);
    rh_json_int(&doc, "min", INT64_MIN);
    rh_json_uint(&doc, "max", UINT64_MAX);
    rh_json_int(&doc, "zero", 0);
    check_doc(&doc, "{\"f\":1.1,\"g\":1e13,\"min\":-9223372036854775808,\"max\":18446744073709551615,\"zero\":0}",
              __LINE__);

    static const struct {
        const char *in;
        const char *want;
    } b64[] = {{"", "\"\""}, {"a", "\"YQ==\""}, {"ab", "\"YWI=\""}, {"\x00\xff\x10\x07", "\"AP8QBw==\""},
               {"\xfb\xff\xbf", "\"+/+/\""}};
    for (size_t i = 0; i < sizeof b64 / sizeof *b64; i++) {
        size_t n = i == 3 ? 4 : strlen(b64[i].in);
        rh_value v = {RH_TAG_BYTES, {.bytes = {(const uint8_t *)b64[i].in, n}}};
        rh_json_init(&doc);
        rh_json_value(&doc, "b", &v);
        char want[64];
        snprintf(want, sizeof want, "{\"b\":%s}", b64[i].want);
        check_doc(&doc, want, __LINE__);
    }
}

static uint8_t *read_vector(const char *dir, const char *name, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    static uint8_t buf[1 << 16];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *b = malloc(*len);
    memcpy(b, buf, *len);
    return b;
}

static bool is(rh_str s, const char *want) { return rh_str_eq(s, want); }

static bool message_is(const char *want) {
    if (strcmp(rh_last_error(), want) == 0) return true;
    fprintf(stderr, "  message: %s\n  want:    %s\n", rh_last_error(), want);
    return false;
}

/* shop-02: an update of shop.orders, status new -> paid. */
static void getters(const char *dir) {
    size_t len;
    uint8_t *buf = read_vector(dir, "shop-02", &len);
    rh_change c;
    CHECK(rh_change_parse(&c, buf, len) == RH_OK);
    CHECK(rh_change_op(&c) == RH_UPDATE && is(rh_change_db(&c), "shop") && is(rh_change_table(&c), "orders"));
    CHECK(is(rh_change_id(&c), "0-1-11:0:0") && is(rh_change_txn(&c), "0-1-11"));

    uint64_t id;
    int64_t sid;
    int32_t i32;
    uint32_t u32;
    double amount;
    float f;
    bool flag;
    rh_str text;
    rh_bytes bytes;
    CHECK(rh_get_u64(&c, "id", &id) == RH_OK && id == 1001);
    CHECK(rh_get_i64(&c, "id", &sid) == RH_OK && sid == 1001);
    CHECK(rh_get_i32(&c, "id", &i32) == RH_OK && i32 == 1001);
    CHECK(rh_get_u32(&c, "id", &u32) == RH_OK && u32 == 1001);
    CHECK(rh_get_bool(&c, "id", &flag) == RH_OK && flag);
    CHECK(rh_get_f64(&c, "amount", &amount) == RH_OK && amount == 12.5);
    CHECK(rh_get_f64(&c, "id", &amount) == RH_OK && amount == 1001.0);
    CHECK(rh_get_text(&c, "amount", &text) == RH_OK && is(text, "12.50"));
    CHECK(rh_before_text(&c, "status", &text) == RH_OK && is(text, "new"));
    CHECK(rh_after_text(&c, "status", &text) == RH_OK && is(text, "paid"));
    CHECK(rh_get_text(&c, "status", &text) == RH_OK && is(text, "paid"));
    CHECK(rh_get_bytes(&c, "currency", &bytes) == RH_OK && bytes.len == 3 && memcmp(bytes.ptr, "EUR", 3) == 0);
    CHECK(rh_changed(&c, "status", &flag) == RH_OK && flag);
    CHECK(rh_changed(&c, "amount", &flag) == RH_OK && !flag);
    CHECK(rh_is_null(&c, "amount", &flag) == RH_OK && !flag);

    CHECK(rh_get_i64(&c, "nope", &sid) == RH_ERR_NO_COLUMN && message_is("no column `nope`"));
    CHECK(rh_changed(&c, "nope", &flag) == RH_ERR_NO_COLUMN);
    CHECK(rh_get_i64(&c, "status", &sid) == RH_ERR_WRONG_TYPE &&
          message_is("column `status` holds enum, not int64_t"));
    CHECK(rh_get_f32(&c, "amount", &f) == RH_ERR_WRONG_TYPE &&
          message_is("column `amount` holds decimal, not float"));
    CHECK(rh_get_text(&c, "id", &text) == RH_ERR_WRONG_TYPE);
    rh_result r = rh_fail_status(rh_get_text(&c, "id", &text));
    CHECK(r.error && strcmp(r.error, "column `id` holds uint, not text") == 0);
    free(r.error);
    free(buf);

    /* shop-03: a delete; rh_get_* read the before image. */
    buf = read_vector(dir, "shop-03", &len);
    CHECK(rh_change_parse(&c, buf, len) == RH_OK && rh_change_op(&c) == RH_DELETE);
    CHECK(rh_get_u64(&c, "id", &id) == RH_OK && id == 1003);
    CHECK(rh_after_u64(&c, "id", &id) == RH_ERR_NO_IMAGE && message_is("the change has no after image"));
    CHECK(rh_changed(&c, "id", &flag) == RH_OK && !flag);
    free(buf);

    /* mariadb-types-00: integers at their limits. */
    buf = read_vector(dir, "mariadb-types-00", &len);
    CHECK(rh_change_parse(&c, buf, len) == RH_OK);
    CHECK(rh_get_i64(&c, "bi", &sid) == RH_OK && sid == INT64_MIN);
    CHECK(rh_get_u64(&c, "bi", &id) == RH_ERR_WRONG_TYPE);
    CHECK(rh_get_i32(&c, "bi", &i32) == RH_ERR_WRONG_TYPE);
    CHECK(rh_get_i32(&c, "i", &i32) == RH_OK && i32 == INT32_MIN);
    CHECK(rh_get_u64(&c, "b64", &id) == RH_OK && id == 0);
    CHECK(rh_before_i64(&c, "id", &sid) == RH_ERR_NO_IMAGE && message_is("the change has no before image"));
    rh_value v;
    CHECK(rh_get_value(&c, "y", &v) == RH_OK && v.tag == RH_TAG_UINT && v.as.u == 1901);
    free(buf);

    /* A NULL reads as RH_ERR_NULL from typed getters, as a value from rh_get_value. */
    bool found_null = false;
    const char *with_nulls[] = {"mariadb-types-01", "mariadb-types-02", "mariadb-types-03", "mariadb-types-04",
                                "mariadb-types-05", "mariadb-types-06", "mariadb-types-07", "mysql-vector-00"};
    for (size_t k = 0; k < sizeof with_nulls / sizeof *with_nulls && !found_null; k++) {
        buf = read_vector(dir, with_nulls[k], &len);
        CHECK(rh_change_parse(&c, buf, len) == RH_OK);
        rh_row row = rh_change_row(&c);
        for (size_t i = 0; i < rh_change_column_count(&c); i++) {
            rh_column col;
            char name[128];
            if (rh_row_value_at(&row, i, &v) || v.tag != RH_TAG_NULL) continue;
            rh_change_column(&c, i, &col);
            snprintf(name, sizeof name, "%.*s", RH_STR_ARG(col.name));
            CHECK(rh_get_text(&c, name, &text) == RH_ERR_NULL);
            char want[256];
            snprintf(want, sizeof want, "column `%s` holds null, not text", name);
            CHECK(message_is(want));
            CHECK(rh_get_value(&c, name, &v) == RH_OK && v.tag == RH_TAG_NULL);
            CHECK(rh_is_null(&c, name, &flag) == RH_OK && flag);
            found_null = true;
            break;
        }
        free(buf);
    }
    CHECK(found_null);

    /* A malformed buffer: the message the export glue hands rowhook. */
    buf = read_vector(dir, "malformed-op", &len);
    CHECK(rh_change_parse(&c, buf, len) == RH_ERR_OP && message_is("malformed row change: unknown operation"));
    free(buf);
}

/* snapshot-00 and rh_testing_snapshot: a snapshot reads as an insert does,
 * with its own id and no GTID. */
static void snapshots(const char *dir) {
    size_t len;
    uint8_t *buf = read_vector(dir, "snapshot-00", &len);
    rh_change c;
    rh_str gtid, text;
    uint64_t id;
    bool flag;
    CHECK(rh_change_parse(&c, buf, len) == RH_OK && rh_change_op(&c) == RH_SNAPSHOT);
    CHECK(strcmp(rh_op_name(rh_change_op(&c)), "snapshot") == 0);
    CHECK(is(rh_change_id(&c), "snapshot:shop.orders:0:0") && is(rh_change_txn(&c), "snapshot:shop.orders"));
    CHECK(!rh_change_gtid(&c, &gtid));
    CHECK(rh_change_row(&c).image == RH_AFTER);
    CHECK(rh_get_u64(&c, "id", &id) == RH_OK && id == 1001);
    CHECK(rh_after_text(&c, "status", &text) == RH_OK && is(text, "paid"));
    CHECK(rh_before_u64(&c, "id", &id) == RH_ERR_NO_IMAGE && message_is("the change has no before image"));
    CHECK(rh_changed(&c, "status", &flag) == RH_OK && !flag);
    free(buf);

    rh_testing_change b = rh_testing_snapshot("shop", "orders");
    rh_testing_index(&b, 3, 17);
    rh_testing_column(&b, "id", rh_make_int(7));
    buf = rh_testing_build(&b, &len);
    CHECK(rh_change_parse(&c, buf, len) == RH_OK && rh_change_op(&c) == RH_SNAPSHOT);
    CHECK(is(rh_change_id(&c), "snapshot:shop.orders:3:17") && is(rh_change_txn(&c), "snapshot:shop.orders"));
    CHECK(!rh_change_gtid(&c, &gtid) && rh_change_flags(&c) == (RH_FLAG_AFTER | RH_FLAG_NAMES));
    int64_t sid;
    CHECK(rh_get_i64(&c, "id", &sid) == RH_OK && sid == 7);
    free(buf);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s VECTORS_DIR\n", argv[0]);
        return 2;
    }
    json_escaping();
    json_numbers();
    getters(argv[1]);
    snapshots(argv[1]);
    printf("sdk: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
