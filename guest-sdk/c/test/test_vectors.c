/* The C reader against every test vector of guest-sdk/abi/vectors
 * (SPEC.md, "Test vectors"), built natively.
 *
 * expect.py turns each vector's JSON into lines; this program decodes the
 * vector's .bin with rowhook.h into the same lines and compares them:
 * valid vectors must decode to every field their JSON states (header,
 * columns, both images, and the row change JSON rebuilt by
 * rh_change_to_json); malformed ones must fail with their error, at parse
 * or at the value their `at` names. Every prefix of a valid buffer must
 * parse and read without touching a byte outside it (the Makefile builds
 * this test with AddressSanitizer and UBSan).
 *
 * Usage: test_vectors VECTORS_DIR EXPECTED_TXT */

#include <stdarg.h>
#include <stdio.h>

#include "../rowhook.h"

/* The lines a decode produced, one buffer. */
static char *got;
static size_t got_len, got_cap;

static void put(const char *fmt, ...) {
    va_list ap;
    if (!got) {
        got_cap = 4096;
        got = malloc(got_cap);
        if (!got) abort();
    }
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(got + got_len, got_cap - got_len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n + 1 < got_cap - got_len) {
            got_len += (size_t)n;
            break;
        }
        got_cap *= 2;
        got = realloc(got, got_cap);
        if (!got) abort();
    }
}

/* Text as expect.py writes it: hex, `-` for empty. */
static void put_hex(const void *p, size_t n) {
    const uint8_t *b = p;
    if (n == 0) put("-");
    for (size_t i = 0; i < n; i++) put("%02x", b[i]);
}

static const char *error_name(rh_status st) {
    switch (st) {
    case RH_ERR_TRUNCATED: return "truncated";
    case RH_ERR_MAGIC: return "magic";
    case RH_ERR_OP: return "op";
    case RH_ERR_TAG: return "tag";
    case RH_ERR_SPAN: return "span";
    case RH_ERR_UTF8: return "utf8";
    default: return "other";
    }
}

static void put_text(const char *key, rh_str s) {
    put("%s ", key);
    put_hex(s.ptr, s.len);
    put("\n");
}

/* The lines of a valid change; returns the first failure's status. */
static rh_status decode(const rh_change *c) {
    rh_str gtid;
    rh_status st;
    put("op %s\n", rh_op_name(rh_change_op(c)));
    put("flags %u\n", rh_change_flags(c));
    put_text("id", rh_change_id(c));
    put_text("txn", rh_change_txn(c));
    put("event_index %u\nrow_index %u\n", rh_change_event_index(c), rh_change_row_index(c));
    if (rh_change_gtid(c, &gtid)) put_text("gtid", gtid);
    else put("gtid null\n");
    put_text("file", rh_change_file(c));
    put("pos %llu\nts %u\n", (unsigned long long)rh_change_pos(c), rh_change_ts(c));
    put_text("db", rh_change_db(c));
    put_text("table", rh_change_table(c));
    put("has_column_names %s\n", rh_change_has_column_names(c) ? "true" : "false");
    size_t n = rh_change_column_count(c);
    put("column_count %zu\n", n);
    for (size_t i = 0; i < n; i++) {
        rh_column col;
        if (!rh_change_column(c, i, &col)) return RH_ERR_NO_COLUMN;
        put("column %zu ", i);
        put_hex(col.name.ptr, col.name.len);
        put(" %u %s %s\n", col.type_code, col.primary_key ? "pk" : "-", col.nullable ? "nullable" : "-");
        /* Lookup by name finds the first column of that name. */
        size_t at;
        char name[256];
        if (col.name.len < sizeof name && !memchr(col.name.ptr, 0, col.name.len)) {
            memcpy(name, col.name.ptr, col.name.len);
            name[col.name.len] = 0;
            if (!rh_change_column_index(c, name, &at) || at > i) put("lookup of column %zu failed\n", i);
        }
    }
    for (int image = RH_BEFORE; image <= RH_AFTER; image++) {
        const char *iname = rh_image_name((rh_image)image);
        rh_row row;
        if (rh_change_image(c, (rh_image)image, &row)) {
            put("%s null\n", iname);
            continue;
        }
        put("%s %zu\n", iname, n);
        for (size_t i = 0; i < n; i++) {
            rh_value v;
            if ((st = rh_row_value_at(&row, i, &v))) return st;
            put("value %s %zu tag %d", iname, i, (int)v.tag);
            switch (v.tag) {
            case RH_TAG_ABSENT:
            case RH_TAG_NULL: break;
            case RH_TAG_INT: put(" int %lld", (long long)v.as.i); break;
            case RH_TAG_UINT:
            case RH_TAG_BIT: put(" uint %llu", (unsigned long long)v.as.u); break;
            case RH_TAG_FLOAT:
            case RH_TAG_DOUBLE: {
                uint64_t bits;
                memcpy(&bits, &v.as.f, 8);
                put(" f64_bits %016llx", (unsigned long long)bits);
                break;
            }
            case RH_TAG_BYTES:
            case RH_TAG_VECTOR:
                put(" hex ");
                put_hex(v.as.bytes.ptr, v.as.bytes.len);
                break;
            default:
                put(" text ");
                put_hex(v.as.text.ptr, v.as.text.len);
            }
            put("\n");
        }
    }
    rh_json doc;
    if ((st = rh_change_to_json(c, &doc))) return st;
    put("json ");
    put_hex(doc.buf, doc.len);
    put("\n");
    rh_json_free(&doc);
    return RH_OK;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 4096;
            b = realloc(b, cap);
            if (!b) abort();
        }
        size_t n = fread(b + *len, 1, cap - *len, f);
        if (n == 0) break;
        *len += n;
    }
    fclose(f);
    return b;
}

/* Parses every prefix of a valid buffer, in a copy of just that length,
 * and reads everything a prefix that parses has. */
static void prefixes(const uint8_t *b, size_t len) {
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b, n);
        rh_change c;
        if (rh_change_parse(&c, copy, n) == RH_OK) {
            size_t saved = got_len;
            (void)decode(&c);
            got_len = saved;
            got[got_len] = 0;
        }
        free(copy);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s VECTORS_DIR EXPECTED_TXT\n", argv[0]);
        return 2;
    }
    size_t elen;
    char *expected = (char *)read_file(argv[2], &elen);
    if (!expected) {
        fprintf(stderr, "%s: cannot read\n", argv[2]);
        return 2;
    }
    expected = realloc(expected, elen + 1);
    expected[elen] = 0;
    int passed = 0, failed = 0, valid = 0, malformed = 0;
    char *p = expected;
    while (*p) {
        /* One vector: "vector NAME\n" ... "end\n". */
        if (strncmp(p, "vector ", 7) != 0) {
            fprintf(stderr, "%s: expected `vector NAME`, found: %.40s\n", argv[2], p);
            return 2;
        }
        char *name = p + 7, *eol = strchr(name, '\n');
        *eol = 0;
        char *body = eol + 1, *end = strstr(body, "end\n");
        *end = 0;
        p = end + 4;

        char path[4096];
        size_t len;
        snprintf(path, sizeof path, "%s/%s.bin", argv[1], name);
        uint8_t *bin = read_file(path, &len);
        if (!bin) {
            fprintf(stderr, "FAIL %s: cannot read %s\n", name, path);
            failed++;
            continue;
        }
        /* Read from a buffer of exactly its length, so the sanitizer sees
         * any read past the end. */
        uint8_t *buf = malloc(len ? len : 1);
        memcpy(buf, bin, len);
        got_len = 0;
        put("");
        rh_change c;
        rh_status st = rh_change_parse(&c, buf, len);
        if (strncmp(body, "error ", 6) == 0) {
            malformed++;
            if (st) {
                put("error %s parse\n", error_name(st));
            } else {
                /* The malformed value: the image and column `at` names. */
                char image[16];
                size_t column;
                rh_row row;
                rh_value v;
                if (sscanf(body, "error %*s %15s %zu", image, &column) == 2 &&
                    rh_change_image(&c, strcmp(image, "before") == 0 ? RH_BEFORE : RH_AFTER, &row) == RH_OK &&
                    (st = rh_row_value_at(&row, column, &v)) != RH_OK) {
                    put("error %s %s %zu\n", error_name(st), image, column);
                    if (strstr(rh_last_error(), "malformed row change: ") != rh_last_error())
                        put("message %s\n", rh_last_error());
                } else {
                    put("read without error\n");
                }
            }
        } else {
            valid++;
            if (st) put("parse failed: %s\n", rh_last_error());
            else if ((st = decode(&c))) put("decode failed: %s\n", rh_last_error());
            prefixes(bin, len);
        }
        if (strcmp(got, body) == 0) {
            passed++;
        } else {
            failed++;
            /* The first line that differs. */
            const char *a = body, *b = got;
            while (*a && *a == *b) a++, b++;
            while (a > body && a[-1] != '\n') a--;
            b = got + (a - body);
            fprintf(stderr, "FAIL %s\n  expected: %.*s\n  got:      %.*s\n", name, (int)strcspn(a, "\n"), a,
                    (int)strcspn(b, "\n"), b);
        }
        free(buf);
        free(bin);
    }
    printf("%d valid vectors, %d malformed\n", valid, malformed);
    if (valid < 20 || malformed < 10) {
        fprintf(stderr, "too few vectors: %d valid, %d malformed\n", valid, malformed);
        failed++;
    }
    free(expected);
    free(got);
    printf("vectors: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
