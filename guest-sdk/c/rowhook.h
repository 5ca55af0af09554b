/* rowhook.h: write rowhook handlers in C.
 *
 * rowhook reads a MySQL or MariaDB binlog and calls your handler once for
 * every row change of the tables it subscribed to, in binlog order. The
 * handler looks at the change and may emit messages to the sinks the
 * operator granted it, keep counters and values in its own state, log, and
 * set metrics. It runs as a WebAssembly component in a sandbox: no
 * filesystem, network, environment or clock of its own.
 *
 * A handler is one function from a change to a result, made the component's
 * `on-change` export by RH_EXPORT_HANDLER:
 *
 *     #include "rowhook.h"
 *
 *     static rh_result on_change(const rh_change *c) {
 *         int64_t id;
 *         RH_TRY(rh_get_i64(c, "id", &id));
 *         rh_field fields[] = {{"change", rh_change_id(c)}};
 *         rh_log_info("saw a row", fields, 1);
 *         return rh_ok();
 *     }
 *     RH_EXPORT_HANDLER(on_change)
 *
 * This header is the whole SDK: everything is `static inline`, so include it
 * wherever you need it and use RH_EXPORT_HANDLER in exactly one file. A
 * wasm32-wasi build also compiles and links the bindings in gen/ (see
 * README.md and rowhook.mk); a native build (gcc, clang) gets the reader and
 * the JSON builder, and capabilities that record into memory (rh_testing_*)
 * so a handler's logic can be unit-tested on the host.
 *
 * Ownership, in short: the change buffer and every rh_str / rh_bytes read
 * from it belong to the SDK and live until the handler returns; nothing is
 * copied. What the SDK allocates for you (rh_state_get, rh_json) you free.
 * The message of rh_fail is copied; the SDK frees the copy after rowhook has
 * read it.
 *
 * Reading a change
 *
 * The change arrives as one byte buffer in the row change encoding
 * (guest-sdk/abi/SPEC.md): a header and an index up front, so parsing is
 * O(columns) and reading a column decodes that column only, borrowed from
 * the buffer. rh_change_op says what the change is: RH_INSERT, RH_UPDATE or
 * RH_DELETE from the binlog, or RH_SNAPSHOT, a row read by a snapshot of its
 * table, with an after image only, as an insert has. rh_get_* read the row
 * as it is after the change (as it was before it, for a delete);
 * rh_before_* and rh_after_* pick the image. Each
 * getter returns RH_OK and writes *out, or a status saying why not; the
 * status's message (rh_last_error) names the column, as the Rust SDK does:
 *
 *     | getter              | reads                                                  |
 *     |---------------------|--------------------------------------------------------|
 *     | _i64 _i32 _u64 _u32 | integers, YEAR, BIT, in range                          |
 *     | _f64                | FLOAT, DOUBLE, integers, DECIMAL text (nearest double) |
 *     | _f32                | FLOAT                                                  |
 *     | _bool               | integers and BIT: not 0                                |
 *     | _text               | every text value (string, decimal, dates, times, JSON, |
 *     |                     | ENUM, SET), and bytes that are UTF-8                   |
 *     | _bytes              | bytes and vectors, and the UTF-8 of every text value   |
 *     | _value              | anything, NULL included (rh_value.tag says what)       |
 *
 * SQL NULL is RH_ERR_NULL from every typed getter, so a nullable column is
 * read as `st = rh_get_text(c, "email", &email)` and `st == RH_ERR_NULL`.
 */
#ifndef ROWHOOK_H
#define ROWHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status                                                                    */
/* ------------------------------------------------------------------------ */

/* What an SDK call came to. RH_OK is 0, so `if (st)` means it failed;
 * rh_last_error() has the message of the last failure. */
typedef enum rh_status {
    RH_OK = 0,
    /* The change buffer is not in the row change encoding this SDK reads
     * (a host and SDK of different versions): shorter than its header or
     * index say, */
    RH_ERR_TRUNCATED,
    /* not `RHC` and version 1, */
    RH_ERR_MAGIC,
    /* an operation other than insert, update, delete, snapshot, */
    RH_ERR_OP,
    /* a value tag this reader does not know, */
    RH_ERR_TAG,
    /* a span past the end of the buffer, */
    RH_ERR_SPAN,
    /* text that is not UTF-8. */
    RH_ERR_UTF8,
    /* The table has no column of this name. */
    RH_ERR_NO_COLUMN,
    /* No before image for an insert or a snapshot, no after image for a
     * delete. */
    RH_ERR_NO_IMAGE,
    /* The column is not in the image: the server logs a MINIMAL row image
     * and the statement did not touch it (SQL NULL is a value, not this). */
    RH_ERR_NOT_IN_IMAGE,
    /* The value is SQL NULL. */
    RH_ERR_NULL,
    /* The value cannot be read as the type asked for (or is out of its range). */
    RH_ERR_WRONG_TYPE,
    /* emit: the handler has no grant for this sink, or there is no such sink. */
    RH_ERR_EMIT_DENIED,
    /* emit: the event already emitted `limits.emits_per_event` messages (or
     * `limits.emit_mb_per_event`); rowhook applies `on_error`. Stop emitting. */
    RH_ERR_EMIT_QUOTA,
    /* emit: the sink cannot take messages now. */
    RH_ERR_EMIT_UNAVAILABLE,
    /* emit: payload or key larger than the sink or rowhook accepts. */
    RH_ERR_EMIT_TOO_LARGE,
    /* emit: a line sink (stdout, file, fifo) and a payload that is not UTF-8
     * or holds a control character other than tab. */
    RH_ERR_EMIT_INVALID,
    /* state: key or value larger than rowhook accepts. */
    RH_ERR_STATE_TOO_LARGE,
    /* state: the write would grow the state past `limits.state_mb`. */
    RH_ERR_STATE_QUOTA,
    /* state: increment of a value that is not an 8-byte counter. */
    RH_ERR_STATE_NOT_A_COUNTER,
    /* state: increment would overflow an int64_t. */
    RH_ERR_STATE_OVERFLOW,
    /* The SDK could not allocate memory. */
    RH_ERR_NO_MEMORY,
} rh_status;

/* ------------------------------------------------------------------------ */
/* Texts and bytes                                                           */
/* ------------------------------------------------------------------------ */

/* UTF-8 text, not NUL-terminated: print it with printf("%.*s", RH_STR_ARG(s)). */
typedef struct rh_str {
    const char *ptr;
    size_t len;
} rh_str;

/* Bytes. */
typedef struct rh_bytes {
    const uint8_t *ptr;
    size_t len;
} rh_bytes;

#define RH_STR_ARG(s) ((int)(s).len), ((s).ptr)

/* A NUL-terminated string as an rh_str (no copy). */
static inline rh_str rh_cstr(const char *s) {
    rh_str r = {s, s ? strlen(s) : 0};
    return r;
}

/* Whether `s` is the NUL-terminated `lit`. */
static inline bool rh_str_eq(rh_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}

/* ------------------------------------------------------------------------ */
/* The row change encoding                                                   */
/* ------------------------------------------------------------------------ */

#define RH_VERSION 1
#define RH_HEADER_LEN 72
#define RH_COLUMN_ENTRY_LEN 8
#define RH_VALUE_ENTRY_LEN 9

/* Header flags (byte 5). */
#define RH_FLAG_BEFORE 1
#define RH_FLAG_AFTER 2
#define RH_FLAG_GTID 4
#define RH_FLAG_NAMES 8

/* What a row change does. RH_SNAPSHOT: a row as it is, read by a snapshot
 * of its table; an after image only, as an insert has. */
typedef enum rh_op { RH_INSERT = 1, RH_UPDATE = 2, RH_DELETE = 3, RH_SNAPSHOT = 4 } rh_op;

/* One of a change's two row images. */
typedef enum rh_image { RH_BEFORE, RH_AFTER } rh_image;

/* A value's kind: its tag in the encoding (SPEC.md, "Value entries"). */
typedef enum rh_tag {
    RH_TAG_ABSENT = 0,    /* not in this image (MINIMAL row image) */
    RH_TAG_NULL = 1,      /* SQL NULL */
    RH_TAG_INT = 2,       /* .as.i: TINYINT ... BIGINT */
    RH_TAG_UINT = 3,      /* .as.u: UNSIGNED, YEAR, ENUM index / SET bits without labels */
    RH_TAG_FLOAT = 4,     /* .as.f: FLOAT, widened exactly to double */
    RH_TAG_DOUBLE = 5,    /* .as.f: DOUBLE */
    RH_TAG_DECIMAL = 6,   /* .as.text: `-10.55`, `1.50` */
    RH_TAG_STRING = 7,    /* .as.text: CHAR, VARCHAR, TEXT */
    RH_TAG_BYTES = 8,     /* .as.bytes: BINARY, VARBINARY, BLOB, GEOMETRY */
    RH_TAG_DATE = 9,      /* .as.text: YYYY-MM-DD */
    RH_TAG_DATETIME = 10, /* .as.text: YYYY-MM-DD HH:MM:SS[.f...] */
    RH_TAG_TIMESTAMP = 11,/* .as.text: YYYY-MM-DDTHH:MM:SS[.f...]Z (UTC) */
    RH_TAG_TIME = 12,     /* .as.text: [-]HH:MM:SS[.f...] */
    RH_TAG_JSON = 13,     /* .as.text: JSON text */
    RH_TAG_ENUM = 14,     /* .as.text: the label */
    RH_TAG_SET = 15,      /* .as.text: labels joined with `,` */
    RH_TAG_BIT = 16,      /* .as.u */
    RH_TAG_VECTOR = 17,   /* .as.bytes: little-endian f32s */
} rh_tag;

/* One column value, borrowed from the change buffer. */
typedef struct rh_value {
    rh_tag tag;
    union {
        int64_t i;
        uint64_t u;
        double f;
        rh_str text;
        rh_bytes bytes;
    } as;
} rh_value;

/* Values made in C, for rh_json_value and for changes built in tests
 * (rh_testing_change). Texts and bytes are borrowed, not copied. */
static inline rh_value rh_make_null(void) {
    rh_value v;
    memset(&v, 0, sizeof v);
    v.tag = RH_TAG_NULL;
    return v;
}

static inline rh_value rh_make_int(int64_t i) {
    rh_value v = rh_make_null();
    v.tag = RH_TAG_INT;
    v.as.i = i;
    return v;
}

static inline rh_value rh_make_uint(uint64_t u) {
    rh_value v = rh_make_null();
    v.tag = RH_TAG_UINT;
    v.as.u = u;
    return v;
}

static inline rh_value rh_make_double(double d) {
    rh_value v = rh_make_null();
    v.tag = RH_TAG_DOUBLE;
    v.as.f = d;
    return v;
}

static inline rh_value rh_make_float(float f) {
    rh_value v = rh_make_null();
    v.tag = RH_TAG_FLOAT;
    v.as.f = (double)f;
    return v;
}

/* A value of a text tag (RH_TAG_DECIMAL, RH_TAG_STRING, RH_TAG_DATE ...). */
static inline rh_value rh_make_text(rh_tag tag, const char *s) {
    rh_value v = rh_make_null();
    v.tag = tag;
    v.as.text.ptr = s;
    v.as.text.len = strlen(s);
    return v;
}

static inline rh_value rh_make_string(const char *s) { return rh_make_text(RH_TAG_STRING, s); }

static inline rh_value rh_make_bytes(const void *p, size_t n) {
    rh_value v = rh_make_null();
    v.tag = RH_TAG_BYTES;
    v.as.bytes.ptr = (const uint8_t *)p;
    v.as.bytes.len = n;
    return v;
}

/* A column of the changed table. */
typedef struct rh_column {
    rh_str name;       /* or `@1`, `@2`, ... where the binlog has no names */
    uint8_t type_code; /* MySQL type code from TABLE_MAP: 3 INT, 15 VARCHAR, 246 DECIMAL, ... */
    bool primary_key;
    bool nullable;
} rh_column;

/* One row change, read in place. Fill it with rh_change_parse (the export
 * glue does) and read it with the functions below; the fields are the
 * reader's own. */
typedef struct rh_change {
    const uint8_t *buf;
    size_t len;
    rh_op op;
    size_t ncols;
    size_t before; /* offset of the before value entries, or SIZE_MAX */
    size_t after;  /* offset of the after value entries, or SIZE_MAX */
    rh_str id, gtid, file, db, table;
    bool has_gtid;
} rh_change;

/* One image of a change. */
typedef struct rh_row {
    const rh_change *change;
    rh_image image;
    size_t at; /* offset of its value entries; SIZE_MAX for no values */
} rh_row;

/* ------------------------------------------------------------------------ */
/* Errors and results                                                        */
/* ------------------------------------------------------------------------ */

/* The message of the last failed SDK call (of this translation unit), as
 * the Rust SDK words it: "no column `x`", "column `x` holds null, not text". */
static char rh__error[512];

static inline const char *rh_last_error(void) { return rh__error; }

/* Appends NUL-terminated `s` to the message being built at *n. */
static inline void rh__err_put(size_t *n, const char *s, size_t len) {
    size_t room = sizeof rh__error - 1 - *n;
    if (len > room) len = room;
    memcpy(rh__error + *n, s, len);
    *n += len;
    rh__error[*n] = 0;
}

/* Sets the message to the concatenation of up to five parts and returns `st`. */
static inline rh_status rh__fail5(rh_status st, const char *a, const char *b, size_t blen, const char *c,
                                  const char *d, const char *e) {
    size_t n = 0;
    rh__error[0] = 0;
    if (a) rh__err_put(&n, a, strlen(a));
    if (b) rh__err_put(&n, b, blen);
    if (c) rh__err_put(&n, c, strlen(c));
    if (d) rh__err_put(&n, d, strlen(d));
    if (e) rh__err_put(&n, e, strlen(e));
    return st;
}

static inline const char *rh__format_error_text(rh_status st) {
    switch (st) {
    case RH_ERR_TRUNCATED: return "buffer is truncated";
    case RH_ERR_MAGIC: return "unknown magic or version (this reader knows version 1)";
    case RH_ERR_OP: return "unknown operation";
    case RH_ERR_TAG: return "unknown value tag";
    case RH_ERR_SPAN: return "a span reaches past the end";
    case RH_ERR_UTF8: return "text is not UTF-8";
    default: return "";
    }
}

static inline rh_status rh__format_fail(rh_status st) {
    return rh__fail5(st, "malformed row change: ", rh__format_error_text(st),
                     strlen(rh__format_error_text(st)), NULL, NULL, NULL);
}

/* What a handler returns: rh_ok(), or rh_fail("why"). */
typedef struct rh_result {
    /* NULL for success; else a message the SDK allocated (rh_fail) and frees. */
    char *error;
} rh_result;

/* The change is handled. */
static inline rh_result rh_ok(void) {
    rh_result r = {NULL};
    return r;
}

/* The handler failed this change: rowhook applies its `on_error` policy
 * (halt, skip, dead-letter) with `message`, and drops the call's emits and
 * state writes. The message is copied; the SDK frees the copy. Where even
 * the copy cannot be allocated the call traps, which rowhook treats as a
 * failure too. */
static inline rh_result rh_fail_n(const char *message, size_t len) {
    rh_result r;
    if (len == 0) {
        message = "the handler failed (no message)";
        len = strlen(message);
    }
    r.error = (char *)malloc(len + 1);
    if (!r.error) abort();
    memcpy(r.error, message, len);
    r.error[len] = 0;
    return r;
}

static inline rh_result rh_fail(const char *message) { return rh_fail_n(message, strlen(message)); }

/* Fails with the message of the SDK call that returned `st`. */
static inline rh_result rh_fail_status(rh_status st) {
    if (st == RH_OK) return rh_ok();
    return rh_fail(rh__error[0] ? rh__error : "rowhook SDK call failed");
}

/* Returns from the handler with the call's message if `expr` (an SDK call
 * returning rh_status) failed. */
#define RH_TRY(expr)                                                                                   \
    do {                                                                                               \
        rh_status rh__st = (expr);                                                                     \
        if (rh__st != RH_OK) return rh_fail_status(rh__st);                                            \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Reader internals                                                          */
/* ------------------------------------------------------------------------ */

static inline uint16_t rh__u16(const uint8_t *p) { return (uint16_t)(p[0] | (uint16_t)p[1] << 8); }

static inline uint32_t rh__u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t rh__u64(const uint8_t *p) { return (uint64_t)rh__u32(p) | (uint64_t)rh__u32(p + 4) << 32; }

/* Whether b[0..n) is UTF-8, as strictly as Rust's str::from_utf8: no
 * overlong forms, no surrogates, nothing past U+10FFFF. */
static inline bool rh_utf8_valid(const uint8_t *b, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII runs, eight bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, b + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = b[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return false;
        }
        if (n - i - 1 < need) return false;
        if (b[i + 1] < lo || b[i + 1] > hi) return false;
        for (size_t k = 2; k <= need; k++)
            if (b[i + k] < 0x80 || b[i + k] > 0xbf) return false;
        i += need + 1;
    }
    return true;
}

/* The span at `at` of c->buf, if it fits the buffer. */
static inline bool rh__span(const uint8_t *buf, size_t len, size_t at, const uint8_t **p, size_t *n) {
    uint64_t off = rh__u32(buf + at), l = rh__u32(buf + at + 4);
    if (off + l > len) return false;
    *p = buf + off;
    *n = (size_t)l;
    return true;
}

static inline rh_status rh__text(const uint8_t *buf, size_t len, size_t at, rh_str *out) {
    const uint8_t *p;
    size_t n;
    if (!rh__span(buf, len, at, &p, &n)) return RH_ERR_SPAN;
    if (!rh_utf8_valid(p, n)) return RH_ERR_UTF8;
    out->ptr = (const char *)p;
    out->len = n;
    return RH_OK;
}

/* ------------------------------------------------------------------------ */
/* Parsing and the header                                                    */
/* ------------------------------------------------------------------------ */

/* Reads the header and index of the encoded change buf[0..len) into *c.
 *
 * Checks the magic and version, the op, the header's texts, and that the
 * column directory and value entries fit the buffer. Column names, tags
 * and values are checked when read, so a handler pays only for the columns
 * it touches. On failure the status is RH_ERR_TRUNCATED ... RH_ERR_UTF8. */
static inline rh_status rh_change_parse(rh_change *c, const uint8_t *buf, size_t len) {
    memset(c, 0, sizeof *c);
    if (len < RH_HEADER_LEN) return rh__format_fail(RH_ERR_TRUNCATED);
    if (buf[0] != 'R' || buf[1] != 'H' || buf[2] != 'C' || buf[3] != RH_VERSION)
        return rh__format_fail(RH_ERR_MAGIC);
    if (buf[4] < RH_INSERT || buf[4] > RH_SNAPSHOT) return rh__format_fail(RH_ERR_OP);
    uint8_t flags = buf[5];
    size_t ncols = rh__u16(buf + 6);
    size_t at = RH_HEADER_LEN + ncols * RH_COLUMN_ENTRY_LEN;
    c->before = c->after = SIZE_MAX;
    if (flags & RH_FLAG_BEFORE) {
        c->before = at;
        at += ncols * RH_VALUE_ENTRY_LEN;
    }
    if (flags & RH_FLAG_AFTER) {
        c->after = at;
        at += ncols * RH_VALUE_ENTRY_LEN;
    }
    if (len < at) return rh__format_fail(RH_ERR_TRUNCATED);
    rh_status st;
    if (flags & RH_FLAG_GTID) {
        if ((st = rh__text(buf, len, 40, &c->gtid))) return rh__format_fail(st);
        c->has_gtid = true;
    }
    if ((st = rh__text(buf, len, 32, &c->id))) return rh__format_fail(st);
    if ((st = rh__text(buf, len, 48, &c->file))) return rh__format_fail(st);
    if ((st = rh__text(buf, len, 56, &c->db))) return rh__format_fail(st);
    if ((st = rh__text(buf, len, 64, &c->table))) return rh__format_fail(st);
    size_t txn = rh__u32(buf + 20);
    if (txn > c->id.len || (txn < c->id.len && ((uint8_t)c->id.ptr[txn] & 0xc0) == 0x80))
        return rh__format_fail(RH_ERR_SPAN);
    c->buf = buf;
    c->len = len;
    c->op = (rh_op)buf[4];
    c->ncols = ncols;
    return RH_OK;
}

/* Insert, update, delete or snapshot. */
static inline rh_op rh_change_op(const rh_change *c) { return c->op; }

/* `insert`, `update`, `delete` or `snapshot`, as in the row change JSON. */
static inline const char *rh_op_name(rh_op op) {
    switch (op) {
    case RH_INSERT: return "insert";
    case RH_UPDATE: return "update";
    case RH_DELETE: return "delete";
    case RH_SNAPSHOT: return "snapshot";
    }
    return "unknown";
}

/* The schema (database) name. */
static inline rh_str rh_change_db(const rh_change *c) { return c->db; }

/* The table name. */
static inline rh_str rh_change_table(const rh_change *c) { return c->table; }

/* The change's stable id, `<txn>:<event>:<row>`: the same every time the
 * same binlog is replayed, so a sink can deduplicate on it. A snapshot's is
 * `snapshot:<db>.<table>:<chunk>:<row>`. */
static inline rh_str rh_change_id(const rh_change *c) { return c->id; }

/* The transaction part of the id: its GTID, or `<file>/<pos>` of its first
 * event where there is none; `snapshot:<db>.<table>` for a snapshot. */
static inline rh_str rh_change_txn(const rh_change *c) {
    rh_str s = {c->id.ptr, rh__u32(c->buf + 20)};
    return s;
}

/* Index of the rows event within the transaction, from 0 (of the chunk,
 * for a snapshot). */
static inline uint32_t rh_change_event_index(const rh_change *c) { return rh__u32(c->buf + 12); }

/* Index of the row within its rows event, from 0 (within the chunk, for a
 * snapshot). */
static inline uint32_t rh_change_row_index(const rh_change *c) { return rh__u32(c->buf + 16); }

/* The transaction's GTID into *out, if the server wrote one. */
static inline bool rh_change_gtid(const rh_change *c, rh_str *out) {
    if (c->has_gtid) *out = c->gtid;
    return c->has_gtid;
}

/* The binlog file of the rows event. */
static inline rh_str rh_change_file(const rh_change *c) { return c->file; }

/* Offset of the rows event in its binlog file. */
static inline uint64_t rh_change_pos(const rh_change *c) { return rh__u64(c->buf + 24); }

/* The rows event's header timestamp, seconds since the epoch. */
static inline uint32_t rh_change_ts(const rh_change *c) { return rh__u32(c->buf + 8); }

/* The header's flag byte (RH_FLAG_*). */
static inline uint8_t rh_change_flags(const rh_change *c) { return c->buf[5]; }

/* Whether column names come from the binlog; if not, they are `@1`, `@2`,
 * ... by position (a server with binlog_row_metadata=MINIMAL). */
static inline bool rh_change_has_column_names(const rh_change *c) { return (c->buf[5] & RH_FLAG_NAMES) != 0; }

/* The number of columns of the table. */
static inline size_t rh_change_column_count(const rh_change *c) { return c->ncols; }

static inline rh_str rh__name(const rh_change *c, size_t i) {
    const uint8_t *e = c->buf + RH_HEADER_LEN + i * RH_COLUMN_ENTRY_LEN;
    uint64_t off = rh__u32(e), len = rh__u16(e + 4);
    rh_str s = {"", 0};
    if (off + len <= c->len) {
        s.ptr = (const char *)c->buf + off;
        s.len = (size_t)len;
    }
    return s;
}

/* The `i`th column (from 0) into *out; false if there is none. A name out
 * of bounds or not UTF-8 reads as empty. */
static inline bool rh_change_column(const rh_change *c, size_t i, rh_column *out) {
    if (i >= c->ncols) return false;
    const uint8_t *e = c->buf + RH_HEADER_LEN + i * RH_COLUMN_ENTRY_LEN;
    out->name = rh__name(c, i);
    if (!rh_utf8_valid((const uint8_t *)out->name.ptr, out->name.len)) {
        out->name.ptr = "";
        out->name.len = 0;
    }
    out->type_code = e[6];
    out->primary_key = (e[7] & 1) != 0;
    out->nullable = (e[7] & 2) != 0;
    return true;
}

/* The position of the column `name` into *out; false if the table has none. */
static inline bool rh_change_column_index_n(const rh_change *c, const char *name, size_t len, size_t *out) {
    for (size_t i = 0; i < c->ncols; i++) {
        rh_str s = rh__name(c, i);
        if (s.len == len && memcmp(s.ptr, name, len) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static inline bool rh_change_column_index(const rh_change *c, const char *name, size_t *out) {
    return rh_change_column_index_n(c, name, strlen(name), out);
}

/* ------------------------------------------------------------------------ */
/* Images and values                                                         */
/* ------------------------------------------------------------------------ */

/* The before image (update, delete) into *out; false if there is none. */
static inline bool rh_change_before(const rh_change *c, rh_row *out) {
    if (c->before == SIZE_MAX) return false;
    out->change = c;
    out->image = RH_BEFORE;
    out->at = c->before;
    return true;
}

/* The after image (insert, update, snapshot) into *out; false if there is
 * none. */
static inline bool rh_change_after(const rh_change *c, rh_row *out) {
    if (c->after == SIZE_MAX) return false;
    out->change = c;
    out->image = RH_AFTER;
    out->at = c->after;
    return true;
}

/* The row as it is after the change, or as it was before a delete. */
static inline rh_row rh_change_row(const rh_change *c) {
    rh_row r = {c, RH_AFTER, c->after};
    if (c->after == SIZE_MAX && c->before != SIZE_MAX) {
        r.image = RH_BEFORE;
        r.at = c->before;
    }
    return r;
}

static inline const char *rh_image_name(rh_image image) { return image == RH_BEFORE ? "before" : "after"; }

/* The image `image` into *out, or RH_ERR_NO_IMAGE. */
static inline rh_status rh_change_image(const rh_change *c, rh_image image, rh_row *out) {
    bool ok = image == RH_BEFORE ? rh_change_before(c, out) : rh_change_after(c, out);
    if (ok) return RH_OK;
    return rh__fail5(RH_ERR_NO_IMAGE, "the change has no ", rh_image_name(image), strlen(rh_image_name(image)),
                     " image", NULL, NULL);
}

/* The value of the `i`th column (from 0) into *out: tag RH_TAG_ABSENT
 * where the image lacks it (MINIMAL row image) or there is no such column.
 * Fails (RH_ERR_TAG, RH_ERR_SPAN, RH_ERR_UTF8) where the entry is malformed. */
static inline rh_status rh_row_value_at(const rh_row *row, size_t i, rh_value *out) {
    const rh_change *c = row->change;
    memset(out, 0, sizeof *out);
    if (i >= c->ncols || row->at == SIZE_MAX) return RH_OK;
    const uint8_t *e = c->buf + row->at + i * RH_VALUE_ENTRY_LEN;
    const uint8_t *p;
    size_t n;
    rh_status st;
    uint8_t tag = e[0];
    switch (tag) {
    case RH_TAG_ABSENT:
    case RH_TAG_NULL:
        break;
    case RH_TAG_INT:
        out->as.i = (int64_t)rh__u64(e + 1);
        break;
    case RH_TAG_UINT:
    case RH_TAG_BIT:
        out->as.u = rh__u64(e + 1);
        break;
    case RH_TAG_FLOAT:
    case RH_TAG_DOUBLE: {
        uint64_t bits = rh__u64(e + 1);
        memcpy(&out->as.f, &bits, 8);
        break;
    }
    case RH_TAG_BYTES:
    case RH_TAG_VECTOR:
        if (!rh__span(c->buf, c->len, (size_t)(e + 1 - c->buf), &p, &n)) return rh__format_fail(RH_ERR_SPAN);
        out->as.bytes.ptr = p;
        out->as.bytes.len = n;
        break;
    default:
        if (tag > RH_TAG_VECTOR) return rh__format_fail(RH_ERR_TAG);
        if ((st = rh__text(c->buf, c->len, (size_t)(e + 1 - c->buf), &out->as.text))) return rh__format_fail(st);
        break;
    }
    out->tag = (rh_tag)tag;
    return RH_OK;
}

/* Whether values of tag `tag` carry text (.as.text). */
static inline bool rh_tag_is_text(rh_tag tag) {
    return tag == RH_TAG_DECIMAL || tag == RH_TAG_STRING || (tag >= RH_TAG_DATE && tag <= RH_TAG_SET);
}

/* A short name of the kind of value: "null", "int", "string", ... */
static inline const char *rh_tag_name(rh_tag tag) {
    static const char *const names[] = {"absent",   "null",     "int",       "uint", "float", "double",
                                        "decimal",  "string",   "bytes",     "date", "datetime",
                                        "timestamp", "time",    "json",      "enum", "set",   "bit", "vector"};
    return (unsigned)tag <= RH_TAG_VECTOR ? names[tag] : "unknown";
}

static inline rh_status rh__column_fail(rh_status st, const char *pre, const char *name, size_t len,
                                        const char *post, const char *x, const char *y) {
    return rh__fail5(st, pre, name, len, post, x, y);
}

/* Column `name`'s value in `row` into *out (NULL included): RH_ERR_NO_COLUMN
 * or RH_ERR_NOT_IN_IMAGE where there is none. */
static inline rh_status rh_row_value(const rh_row *row, const char *name, rh_value *out) {
    size_t i, len = strlen(name);
    if (!rh_change_column_index_n(row->change, name, len, &i))
        return rh__column_fail(RH_ERR_NO_COLUMN, "no column `", name, len, "`", NULL, NULL);
    rh_status st = rh_row_value_at(row, i, out);
    if (st) return st;
    if (out->tag == RH_TAG_ABSENT)
        return rh__column_fail(RH_ERR_NOT_IN_IMAGE, "column `", name, len, "` is not in the ",
                               rh_image_name(row->image), " image (MINIMAL row image)");
    return RH_OK;
}

/* Conversions of a value, as the Rust SDK's FromValue: true and *out, or
 * false where the value is of another kind or out of range. */
static inline bool rh_value_i64(const rh_value *v, int64_t *out) {
    if (v->tag == RH_TAG_INT) *out = v->as.i;
    else if ((v->tag == RH_TAG_UINT || v->tag == RH_TAG_BIT) && v->as.u <= INT64_MAX) *out = (int64_t)v->as.u;
    else return false;
    return true;
}

static inline bool rh_value_u64(const rh_value *v, uint64_t *out) {
    if (v->tag == RH_TAG_INT && v->as.i >= 0) *out = (uint64_t)v->as.i;
    else if (v->tag == RH_TAG_UINT || v->tag == RH_TAG_BIT) *out = v->as.u;
    else return false;
    return true;
}

static inline bool rh_value_i32(const rh_value *v, int32_t *out) {
    int64_t x;
    if (!rh_value_i64(v, &x) || x < INT32_MIN || x > INT32_MAX) return false;
    *out = (int32_t)x;
    return true;
}

static inline bool rh_value_u32(const rh_value *v, uint32_t *out) {
    uint64_t x;
    if (!rh_value_u64(v, &x) || x > UINT32_MAX) return false;
    *out = (uint32_t)x;
    return true;
}

static inline bool rh_value_f64(const rh_value *v, double *out) {
    switch (v->tag) {
    case RH_TAG_FLOAT:
    case RH_TAG_DOUBLE: *out = v->as.f; return true;
    case RH_TAG_INT: *out = (double)v->as.i; return true;
    case RH_TAG_UINT: *out = (double)v->as.u; return true;
    case RH_TAG_DECIMAL: {
        /* Digits, an optional sign and point: nothing strtod would read
         * differently from Rust's f64 parser. */
        char tmp[128];
        const char *s = v->as.text.ptr;
        size_t n = v->as.text.len, k;
        if (n == 0 || n >= sizeof tmp) return false;
        for (k = 0; k < n; k++)
            if (!((s[k] >= '0' && s[k] <= '9') || s[k] == '.' || s[k] == '-' || s[k] == '+')) return false;
        memcpy(tmp, s, n);
        tmp[n] = 0;
        char *end;
        double d = strtod(tmp, &end);
        if (end != tmp + n) return false;
        *out = d;
        return true;
    }
    default: return false;
    }
}

static inline bool rh_value_f32(const rh_value *v, float *out) {
    if (v->tag != RH_TAG_FLOAT) return false;
    *out = (float)v->as.f;
    return true;
}

static inline bool rh_value_bool(const rh_value *v, bool *out) {
    if (v->tag == RH_TAG_INT) *out = v->as.i != 0;
    else if (v->tag == RH_TAG_UINT || v->tag == RH_TAG_BIT) *out = v->as.u != 0;
    else return false;
    return true;
}

static inline bool rh_value_text(const rh_value *v, rh_str *out) {
    if (rh_tag_is_text(v->tag)) *out = v->as.text;
    else if (v->tag == RH_TAG_BYTES && rh_utf8_valid(v->as.bytes.ptr, v->as.bytes.len)) {
        out->ptr = (const char *)v->as.bytes.ptr;
        out->len = v->as.bytes.len;
    } else return false;
    return true;
}

static inline bool rh_value_bytes(const rh_value *v, rh_bytes *out) {
    if (v->tag == RH_TAG_BYTES || v->tag == RH_TAG_VECTOR) *out = v->as.bytes;
    else if (rh_tag_is_text(v->tag)) {
        out->ptr = (const uint8_t *)v->as.text.ptr;
        out->len = v->as.text.len;
    } else return false;
    return true;
}

static inline bool rh_value_value(const rh_value *v, rh_value *out) {
    *out = *v;
    return true;
}

/* Typed getters. For each TYPE: rh_row_get_TYPE (an image), rh_get_TYPE
 * (the row: after, or before for a delete), rh_before_TYPE, rh_after_TYPE. */
#define RH__GETTERS(NAME, CTYPE, EXPECTED, TAKES_NULL)                                                 \
    static inline rh_status rh_row_get_##NAME(const rh_row *row, const char *name, CTYPE *out) {       \
        rh_value v;                                                                                    \
        rh_status st = rh_row_value(row, name, &v);                                                    \
        if (st) return st;                                                                             \
        if ((TAKES_NULL || v.tag != RH_TAG_NULL) && rh_value_##NAME(&v, out)) return RH_OK;            \
        return rh__column_fail(v.tag == RH_TAG_NULL ? RH_ERR_NULL : RH_ERR_WRONG_TYPE, "column `", name, \
                               strlen(name), "` holds ", rh_tag_name(v.tag), ", not " EXPECTED);       \
    }                                                                                                  \
    static inline rh_status rh_get_##NAME(const rh_change *c, const char *name, CTYPE *out) {         \
        rh_row row = rh_change_row(c);                                                                 \
        return rh_row_get_##NAME(&row, name, out);                                                     \
    }                                                                                                  \
    static inline rh_status rh_before_##NAME(const rh_change *c, const char *name, CTYPE *out) {      \
        rh_row row;                                                                                    \
        rh_status st = rh_change_image(c, RH_BEFORE, &row);                                            \
        return st ? st : rh_row_get_##NAME(&row, name, out);                                           \
    }                                                                                                  \
    static inline rh_status rh_after_##NAME(const rh_change *c, const char *name, CTYPE *out) {       \
        rh_row row;                                                                                    \
        rh_status st = rh_change_image(c, RH_AFTER, &row);                                             \
        return st ? st : rh_row_get_##NAME(&row, name, out);                                           \
    }

RH__GETTERS(i64, int64_t, "int64_t", false)
RH__GETTERS(i32, int32_t, "int32_t", false)
RH__GETTERS(u64, uint64_t, "uint64_t", false)
RH__GETTERS(u32, uint32_t, "uint32_t", false)
RH__GETTERS(f64, double, "double", false)
RH__GETTERS(f32, float, "float", false)
RH__GETTERS(bool, bool, "bool", false)
RH__GETTERS(text, rh_str, "text", false)
RH__GETTERS(bytes, rh_bytes, "bytes", false)
RH__GETTERS(value, rh_value, "any value", true)

/* Whether column `name` of the row (after the change, before it for a
 * delete) is SQL NULL, into *out. */
static inline rh_status rh_is_null(const rh_change *c, const char *name, bool *out) {
    rh_value v;
    rh_status st = rh_get_value(c, name, &v);
    if (st == RH_OK) *out = v.tag == RH_TAG_NULL;
    return st;
}

/* Whether two values are the same: same tag and payload; floats compared
 * bit for bit, so an unchanged NaN is no change. */
static inline bool rh_value_same(const rh_value *a, const rh_value *b) {
    if (a->tag != b->tag) return false;
    switch (a->tag) {
    case RH_TAG_ABSENT:
    case RH_TAG_NULL: return true;
    case RH_TAG_INT:
    case RH_TAG_UINT:
    case RH_TAG_BIT:
    case RH_TAG_FLOAT:
    case RH_TAG_DOUBLE: return a->as.u == b->as.u;
    default:
        return a->as.bytes.len == b->as.bytes.len &&
               (a->as.bytes.len == 0 || memcmp(a->as.bytes.ptr, b->as.bytes.ptr, a->as.bytes.len) == 0);
    }
}

/* Whether an update changed column `name` (its before and after values
 * differ) into *out. False for inserts, deletes and snapshots, and where
 * either image lacks the column (MINIMAL row image). */
static inline rh_status rh_changed(const rh_change *c, const char *name, bool *out) {
    rh_row before, after;
    size_t i, len = strlen(name);
    rh_value b, a;
    rh_status st;
    *out = false;
    if (!rh_change_before(c, &before) || !rh_change_after(c, &after)) return RH_OK;
    if (!rh_change_column_index_n(c, name, len, &i))
        return rh__column_fail(RH_ERR_NO_COLUMN, "no column `", name, len, "`", NULL, NULL);
    if ((st = rh_row_value_at(&before, i, &b)) || (st = rh_row_value_at(&after, i, &a))) return st;
    if (b.tag == RH_TAG_ABSENT || a.tag == RH_TAG_ABSENT) return RH_OK;
    if (a.tag == RH_TAG_FLOAT && b.tag == RH_TAG_FLOAT) {
        /* A FLOAT's payload is widened from f32: compare the f32 bits. */
        float x = (float)b.as.f, y = (float)a.as.f;
        *out = memcmp(&x, &y, sizeof x) != 0;
        return RH_OK;
    }
    *out = !rh_value_same(&b, &a);
    return RH_OK;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/* A JSON object written field by field, straight into the bytes a handler
 * emits: no tree, one growing buffer.
 *
 *     rh_json doc;
 *     rh_json_init(&doc);
 *     rh_json_text(&doc, "change", rh_change_id(c));
 *     rh_json_int(&doc, "order", id);
 *     RH_TRY(rh_json_finish(&doc));
 *     rh_status st = rh_emit("orders", NULL, doc.buf, doc.len);
 *     rh_json_free(&doc);
 *
 * Values are written as the row change JSON shows them (rh_json_value:
 * decimals and dates as strings, bytes as base64, floats shortest, NaN and
 * infinities as null), with one difference that makes every document fit a
 * line sink (stdout, file, fifo, which take no control characters): strings
 * escape DEL and the C1 controls (U+0080 to U+009F) as \u007f ... \u009f,
 * besides `"`, `\` and the C0 controls. Field names are escaped alike.
 * Strings must be UTF-8. The builder does not check that names are
 * distinct. An allocation failure makes rh_json_finish return
 * RH_ERR_NO_MEMORY. */
typedef struct rh_json {
    uint8_t *buf; /* the document: `len` bytes, after rh_json_finish */
    size_t len;
    size_t cap;
    bool failed;
} rh_json;

static inline bool rh__json_reserve(rh_json *o, size_t more) {
    if (o->failed) return false;
    if (o->cap - o->len >= more) return true;
    size_t cap = o->cap ? o->cap : 128;
    while (cap - o->len < more) {
        if (cap > SIZE_MAX / 2) {
            o->failed = true;
            return false;
        }
        cap *= 2;
    }
    uint8_t *p = (uint8_t *)realloc(o->buf, cap);
    if (!p) {
        o->failed = true;
        return false;
    }
    o->buf = p;
    o->cap = cap;
    return true;
}

static inline void rh__json_put(rh_json *o, const void *p, size_t n) {
    if (!rh__json_reserve(o, n)) return;
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

/* Appends a string literal. */
#define RH__LIT(o, s) rh__json_put((o), (s), sizeof(s) - 1)

static inline void rh__json_byte(rh_json *o, uint8_t b) {
    if (!rh__json_reserve(o, 1)) return;
    o->buf[o->len++] = b;
}

/* An empty object with room for `bytes` of JSON. */
static inline void rh_json_init_capacity(rh_json *o, size_t bytes) {
    o->buf = NULL;
    o->len = o->cap = 0;
    o->failed = false;
    rh__json_reserve(o, bytes < 2 ? 2 : bytes);
    rh__json_byte(o, '{');
}

/* An empty object, with room for a small document. */
static inline void rh_json_init(rh_json *o) { rh_json_init_capacity(o, 128); }

/* Frees the document's buffer. */
static inline void rh_json_free(rh_json *o) {
    free(o->buf);
    o->buf = NULL;
    o->len = o->cap = 0;
}

/* Appends `s` as a quoted JSON string: escaped as the host escapes (`"`,
 * `\` and the C0 controls, `\b \t \n \f \r` short, the rest as \u00xx),
 * and, for a line sink (`line`), DEL and U+0080 to U+009F as \u00xx too. */
static inline void rh__json_str(rh_json *o, const char *str, size_t n, bool line) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *b = (const uint8_t *)str;
    size_t i = 0, start = 0;
    /* Most strings need no escape: one pass to tell, then one copy. */
    for (; i < n; i++) {
        uint8_t c = b[i];
        if (c < 0x20 || c == '"' || c == '\\' || (line && (c == 0x7f || c == 0xc2))) break;
    }
    if (!rh__json_reserve(o, n + 2)) return;
    rh__json_byte(o, '"');
    if (i == n) {
        rh__json_put(o, b, n);
        rh__json_byte(o, '"');
        return;
    }
    rh__json_put(o, b, i);
    start = i;
    while (i < n) {
        uint8_t c = b[i], code;
        size_t len;
        if (c == '"' || c == '\\') {
            len = 1;
            code = 0;
        } else if (c < 0x20 || (line && c == 0x7f)) {
            len = 1;
            code = c;
        } else if (line && c == 0xc2 && i + 1 < n && b[i + 1] >= 0x80 && b[i + 1] <= 0x9f) {
            len = 2;
            code = b[i + 1];
        } else {
            i++;
            continue;
        }
        rh__json_put(o, b + start, i - start);
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case 0x08: esc[1] = 'b'; break;
        case '\t': esc[1] = 't'; break;
        case '\n': esc[1] = 'n'; break;
        case 0x0c: esc[1] = 'f'; break;
        case '\r': esc[1] = 'r'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[code >> 4];
            esc[5] = hex[code & 0xf];
            elen = 6;
        }
        rh__json_put(o, esc, elen);
        i += len;
        start = i;
    }
    rh__json_put(o, b + start, n - start);
    rh__json_byte(o, '"');
}

static inline void rh__json_name(rh_json *o, const char *name) {
    if (o->len > 1) rh__json_byte(o, ',');
    rh__json_str(o, name, strlen(name), true);
    rh__json_byte(o, ':');
}

/* Decimal digits of `v` at the end of buf[0..20); returns where they start. */
static inline size_t rh__utoa(uint64_t v, char buf[20]) {
    size_t start = 20;
    do {
        buf[--start] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return start;
}

static inline void rh__json_uint(rh_json *o, uint64_t v) {
    char buf[20];
    size_t s = rh__utoa(v, buf);
    rh__json_put(o, buf + s, 20 - s);
}

static inline void rh__json_int(rh_json *o, int64_t v) {
    if (v < 0) {
        rh__json_byte(o, '-');
        rh__json_uint(o, (uint64_t)0 - (uint64_t)v);
    } else {
        rh__json_uint(o, (uint64_t)v);
    }
}

/* Writes `d` (a float if `single`) as Rust's ryu crate does, the way the
 * row change JSON shows numbers: the shortest digits that read back as the
 * same value, plain from 1e-5 up to 1e16 (1e-6 up to 1e13 for a float),
 * `1e-7` and `1.5e300` past that, `.0` on whole numbers; NaN and
 * infinities as null. */
static inline void rh__json_float(rh_json *o, double d, bool single) {
    if (d != d || d - d != 0) {
        RH__LIT(o, "null");
        return;
    }
    char sci[40];
    int prec;
    /* The fewest significant digits that round-trip. */
    for (prec = 0; prec < 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec, d);
        if (single ? strtof(sci, NULL) == (float)d : strtod(sci, NULL) == d) break;
    }
    if (prec == 17) snprintf(sci, sizeof sci, "%.*e", prec, d);
    /* sci is [-]D[.DDD]e[+-]X: split into digits and exponent. */
    const char *p = sci;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    int nd = 0;
    for (; *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (d == 0) {
        nd = 1;
        digits[0] = '0';
        exp10 = 0;
    }
    int limit = single ? 13 : 16;
    int k = exp10 - (nd - 1); /* value = digits * 10^k */
    int kk = nd + k;          /* 10^(kk-1) <= |value| < 10^kk */
    char out[48];
    int n = 0;
    if (neg) out[n++] = '-';
    if (k >= 0 && kk <= limit) {
        memcpy(out + n, digits, (size_t)nd);
        n += nd;
        for (int z = 0; z < k; z++) out[n++] = '0';
        out[n++] = '.';
        out[n++] = '0';
    } else if (kk > 0 && kk <= limit) {
        memcpy(out + n, digits, (size_t)kk);
        n += kk;
        out[n++] = '.';
        memcpy(out + n, digits + kk, (size_t)(nd - kk));
        n += nd - kk;
    } else if (kk > (single ? -6 : -5) && kk <= 0) {
        out[n++] = '0';
        out[n++] = '.';
        for (int z = 0; z < -kk; z++) out[n++] = '0';
        memcpy(out + n, digits, (size_t)nd);
        n += nd;
    } else {
        out[n++] = digits[0];
        if (nd > 1) {
            out[n++] = '.';
            memcpy(out + n, digits + 1, (size_t)(nd - 1));
            n += nd - 1;
        }
        out[n++] = 'e';
        int e = kk - 1;
        if (e < 0) {
            out[n++] = '-';
            e = -e;
        }
        char eb[20];
        size_t s = rh__utoa((uint64_t)e, eb);
        memcpy(out + n, eb + s, 20 - s);
        n += (int)(20 - s);
    }
    rh__json_put(o, out, (size_t)n);
}

static inline void rh__json_base64(rh_json *o, const uint8_t *b, size_t n) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!rh__json_reserve(o, (n + 2) / 3 * 4 + 2)) return;
    uint8_t *out = o->buf + o->len;
    size_t i = 0, w = 0;
    out[w++] = '"';
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16 | (uint32_t)b[i + 1] << 8 | b[i + 2];
        out[w++] = (uint8_t)alphabet[v >> 18 & 63];
        out[w++] = (uint8_t)alphabet[v >> 12 & 63];
        out[w++] = (uint8_t)alphabet[v >> 6 & 63];
        out[w++] = (uint8_t)alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)b[i] << 16;
        out[w++] = (uint8_t)alphabet[v >> 18 & 63];
        out[w++] = (uint8_t)alphabet[v >> 12 & 63];
        out[w++] = '=';
        out[w++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)b[i] << 16 | (uint32_t)b[i + 1] << 8;
        out[w++] = (uint8_t)alphabet[v >> 18 & 63];
        out[w++] = (uint8_t)alphabet[v >> 12 & 63];
        out[w++] = (uint8_t)alphabet[v >> 6 & 63];
        out[w++] = '=';
    }
    out[w++] = '"';
    o->len += w;
}

/* Adds `"name":"value"`, `value` NUL-terminated UTF-8. */
static inline void rh_json_str(rh_json *o, const char *name, const char *value) {
    rh__json_name(o, name);
    rh__json_str(o, value, strlen(value), true);
}

/* Adds `"name":"value"`, `value` UTF-8 (a text read from the change, say). */
static inline void rh_json_text(rh_json *o, const char *name, rh_str value) {
    rh__json_name(o, name);
    rh__json_str(o, value.ptr, value.len, true);
}

/* Adds a signed integer. */
static inline void rh_json_int(rh_json *o, const char *name, int64_t value) {
    rh__json_name(o, name);
    rh__json_int(o, value);
}

/* Adds an unsigned integer. */
static inline void rh_json_uint(rh_json *o, const char *name, uint64_t value) {
    rh__json_name(o, name);
    rh__json_uint(o, value);
}

/* Adds a number, or null for NaN and infinities (JSON has neither). */
static inline void rh_json_float(rh_json *o, const char *name, double value) {
    rh__json_name(o, name);
    rh__json_float(o, value, false);
}

/* Adds true or false. */
static inline void rh_json_bool(rh_json *o, const char *name, bool value) {
    rh__json_name(o, name);
    if (value) RH__LIT(o, "true");
    else RH__LIT(o, "false");
}

/* Adds null. */
static inline void rh_json_null(rh_json *o, const char *name) {
    rh__json_name(o, name);
    RH__LIT(o, "null");
}

/* Appends `v` as the row change JSON shows it; texts escaped for a line
 * sink where `line`. */
static inline void rh__json_value(rh_json *o, const rh_value *v, bool line) {
    switch (v->tag) {
    case RH_TAG_ABSENT:
    case RH_TAG_NULL: RH__LIT(o, "null"); break;
    case RH_TAG_INT: rh__json_int(o, v->as.i); break;
    case RH_TAG_UINT:
    case RH_TAG_BIT: rh__json_uint(o, v->as.u); break;
    case RH_TAG_FLOAT: rh__json_float(o, v->as.f, true); break;
    case RH_TAG_DOUBLE: rh__json_float(o, v->as.f, false); break;
    /* MySQL's writer escapes controls in JSON text: it goes as it is. */
    case RH_TAG_JSON: rh__json_put(o, v->as.text.ptr, v->as.text.len); break;
    case RH_TAG_BYTES: rh__json_base64(o, v->as.bytes.ptr, v->as.bytes.len); break;
    case RH_TAG_VECTOR:
        rh__json_byte(o, '[');
        for (size_t i = 0; i + 4 <= v->as.bytes.len; i += 4) {
            uint32_t bits = rh__u32(v->as.bytes.ptr + i);
            float f;
            memcpy(&f, &bits, 4);
            if (i) rh__json_byte(o, ',');
            rh__json_float(o, f, true);
        }
        rh__json_byte(o, ']');
        break;
    default: rh__json_str(o, v->as.text.ptr, v->as.text.len, line); break;
    }
}

/* Adds a column's value as the row change JSON shows it: numbers, texts as
 * strings, JSON columns as they are, bytes as base64, vectors as arrays. */
static inline void rh_json_value(rh_json *o, const char *name, const rh_value *v) {
    rh__json_name(o, name);
    rh__json_value(o, v, true);
}

/* Adds `json` as the value, unchecked: it must be one JSON value (another
 * finished rh_json, say). */
static inline void rh_json_raw(rh_json *o, const char *name, const char *json, size_t len) {
    rh__json_name(o, name);
    rh__json_put(o, json, len);
}

/* Closes the object: o->buf[0..o->len) is the document. RH_ERR_NO_MEMORY
 * if an allocation failed on the way (the buffer is then freed). */
static inline rh_status rh_json_finish(rh_json *o) {
    rh__json_byte(o, '}');
    if (!o->failed) return RH_OK;
    rh_json_free(o);
    return rh__fail5(RH_ERR_NO_MEMORY, "out of memory building a JSON document", NULL, 0, NULL, NULL, NULL);
}

static inline void rh__json_image(rh_json *o, const rh_change *c, bool present, size_t at, rh_image image,
                                  rh_status *st) {
    if (!present) {
        RH__LIT(o, "null");
        return;
    }
    rh_row row = {c, image, at};
    bool first = true;
    rh__json_byte(o, '{');
    for (size_t i = 0; i < c->ncols && !*st; i++) {
        rh_value v;
        rh_column col;
        if ((*st = rh_row_value_at(&row, i, &v)) || v.tag == RH_TAG_ABSENT) continue;
        rh_change_column(c, i, &col);
        if (!first) rh__json_byte(o, ',');
        first = false;
        rh__json_str(o, col.name.ptr, col.name.len, false);
        rh__json_byte(o, ':');
        rh__json_value(o, &v, false);
    }
    rh__json_byte(o, '}');
}

/* The whole change as one line of row change JSON (no newline), byte for
 * byte what `rowhook inspect` prints and sinks get by default, into a new
 * buffer `out` (rh_json_free it). Costs a pass over every column: a
 * handler that reads a few columns does better with rh_get_*. Fails where
 * a value is malformed (out is then freed). */
static inline rh_status rh_change_to_json(const rh_change *c, rh_json *out) {
    rh_status st = RH_OK;
    rh_str gtid;
    rh_json_init_capacity(out, c->len * 2);
    RH__LIT(out, "\"id\":");
    rh__json_str(out, c->id.ptr, c->id.len, false);
    RH__LIT(out, ",\"op\":\"");
    rh__json_put(out, rh_op_name(c->op), strlen(rh_op_name(c->op)));
    RH__LIT(out, "\",\"db\":");
    rh__json_str(out, c->db.ptr, c->db.len, false);
    RH__LIT(out, ",\"table\":");
    rh__json_str(out, c->table.ptr, c->table.len, false);
    RH__LIT(out, ",\"ts\":");
    rh__json_uint(out, rh_change_ts(c));
    RH__LIT(out, ",\"gtid\":");
    if (rh_change_gtid(c, &gtid)) rh__json_str(out, gtid.ptr, gtid.len, false);
    else RH__LIT(out, "null");
    RH__LIT(out, ",\"file\":");
    rh__json_str(out, c->file.ptr, c->file.len, false);
    RH__LIT(out, ",\"pos\":");
    rh__json_uint(out, rh_change_pos(c));
    RH__LIT(out, ",\"before\":");
    rh__json_image(out, c, c->before != SIZE_MAX, c->before, RH_BEFORE, &st);
    RH__LIT(out, ",\"after\":");
    rh__json_image(out, c, c->after != SIZE_MAX, c->after, RH_AFTER, &st);
    if (st) {
        rh_json_free(out);
        return st;
    }
    return rh_json_finish(out);
}

/* ------------------------------------------------------------------------ */
/* Capabilities                                                              */
/* ------------------------------------------------------------------------ */

/* Every text a capability takes (sink, key, state key, log message and
 * fields, metric name) must be UTF-8: the component model checks, and a
 * call with text that is not traps. Texts read from a change are UTF-8;
 * bytes columns (rh_get_bytes) may not be. */

/* How important a log line is; the operator's filter decides what shows. */
typedef enum rh_level { RH_TRACE, RH_DEBUG, RH_INFO, RH_WARN, RH_ERROR } rh_level;

/* A log field: name and value. */
typedef struct rh_field {
    const char *name;
    rh_str value;
} rh_field;

static inline const char *rh__emit_error_text(rh_status st) {
    switch (st) {
    case RH_ERR_EMIT_DENIED: return "denied (the handler has no grant for this sink)";
    case RH_ERR_EMIT_QUOTA: return "emit quota of this event reached";
    case RH_ERR_EMIT_UNAVAILABLE: return "sink unavailable";
    case RH_ERR_EMIT_TOO_LARGE: return "message too large";
    default:
        return "payload not valid for this sink: a line sink (stdout, file, fifo) takes one line of UTF-8 text "
               "with no control character but tab (no \\n, \\r, NUL or ESC)";
    }
}

static inline const char *rh__state_error_text(rh_status st) {
    switch (st) {
    case RH_ERR_STATE_TOO_LARGE: return "key or value too large";
    case RH_ERR_STATE_QUOTA: return "state quota reached (limits.state_mb); delete keys or store less";
    case RH_ERR_STATE_NOT_A_COUNTER: return "value is not a counter";
    default: return "counter overflow";
    }
}

static inline rh_status rh__emit_fail(rh_status st, const char *sink) {
    return rh__fail5(st, "emit to sink `", sink, strlen(sink), "`: ", rh__emit_error_text(st), NULL);
}

static inline rh_status rh__state_fail(rh_status st, const char *key) {
    return rh__fail5(st, "state key `", key, strlen(key), "`: ", rh__state_error_text(st), NULL);
}

#ifdef __wasm__
#include "gen/handler.h"

static inline handler_string_t rh__wit_str(const char *p, size_t n) {
    handler_string_t s = {(uint8_t *)p, n};
    return s;
}

static inline rh_status rh__emit(const char *sink, const rh_str *key, const void *payload, size_t len) {
    handler_string_t s = rh__wit_str(sink, strlen(sink));
    handler_string_t k;
    handler_list_u8_t p = {(uint8_t *)payload, len};
    rowhook_handler_emit_emit_error_t err;
    if (key) k = rh__wit_str(key->ptr, key->len);
    if (rowhook_handler_emit_emit(&s, key ? &k : NULL, &p, &err)) return RH_OK;
    static const rh_status map[] = {RH_ERR_EMIT_DENIED, RH_ERR_EMIT_QUOTA, RH_ERR_EMIT_UNAVAILABLE,
                                    RH_ERR_EMIT_TOO_LARGE, RH_ERR_EMIT_INVALID};
    return rh__emit_fail(err < 5 ? map[err] : RH_ERR_EMIT_INVALID, sink);
}

static inline rh_status rh__state_status(rowhook_handler_state_state_error_t e) {
    static const rh_status map[] = {RH_ERR_STATE_TOO_LARGE, RH_ERR_STATE_QUOTA, RH_ERR_STATE_NOT_A_COUNTER,
                                    RH_ERR_STATE_OVERFLOW};
    return e < 4 ? map[e] : RH_ERR_STATE_OVERFLOW;
}

/* The value stored under `key`: true with *value (malloc'd, NULL for an
 * empty value: free() it) and *len, or false if there is none. */
static inline bool rh_state_get(const char *key, uint8_t **value, size_t *len) {
    handler_string_t k = rh__wit_str(key, strlen(key));
    handler_list_u8_t v;
    if (!rowhook_handler_state_get(&k, &v)) return false;
    /* The canonical ABI allocates nothing for an empty list. */
    *value = v.len ? v.ptr : NULL;
    *len = v.len;
    return true;
}

/* Stores value[0..len) under `key`, replacing any value. */
static inline rh_status rh_state_set(const char *key, const void *value, size_t len) {
    handler_string_t k = rh__wit_str(key, strlen(key));
    handler_list_u8_t v = {(uint8_t *)value, len};
    rowhook_handler_state_state_error_t err;
    if (rowhook_handler_state_set(&k, &v, &err)) return RH_OK;
    return rh__state_fail(rh__state_status(err), key);
}

/* Removes `key`; removing a missing key is not an error. */
static inline void rh_state_delete(const char *key) {
    handler_string_t k = rh__wit_str(key, strlen(key));
    rowhook_handler_state_delete(&k);
}

/* Adds `delta` (may be negative) to the counter under `key` (missing
 * counts as 0) and writes the new value to *out (may be NULL), in one step.
 * The counter is stored as 8 little-endian bytes; rh_state_counter reads it. */
static inline rh_status rh_state_increment(const char *key, int64_t delta, int64_t *out) {
    handler_string_t k = rh__wit_str(key, strlen(key));
    int64_t v;
    rowhook_handler_state_state_error_t err;
    if (rowhook_handler_state_increment(&k, delta, &v, &err)) {
        if (out) *out = v;
        return RH_OK;
    }
    return rh__state_fail(rh__state_status(err), key);
}

/* Writes one line to rowhook's log, labelled with the handler: `message`
 * with `n` fields. rowhook keeps at most 10,000 lines per call. */
static inline void rh_log(rh_level level, const char *message, const rh_field *fields, size_t n) {
    handler_string_t m = rh__wit_str(message, strlen(message));
    handler_tuple2_string_string_t stack[8];
    handler_tuple2_string_string_t *f = n <= 8 ? stack : (handler_tuple2_string_string_t *)malloc(n * sizeof *f);
    if (!f) n = 0, f = stack;
    for (size_t i = 0; i < n; i++) {
        f[i].f0 = rh__wit_str(fields[i].name, strlen(fields[i].name));
        f[i].f1 = rh__wit_str(fields[i].value.ptr, fields[i].value.len);
    }
    handler_list_tuple2_string_string_t list = {f, n};
    rowhook_handler_log_log((rowhook_handler_log_level_t)level, &m, &list);
    if (f != stack) free(f);
}

/* Adds `delta` to the counter metric `name` (1 to 64 ASCII letters, digits
 * and `_`, not starting with a digit; rowhook ignores other names). */
static inline void rh_counter_add(const char *name, uint64_t delta) {
    handler_string_t n = rh__wit_str(name, strlen(name));
    rowhook_handler_metrics_counter_add(&n, delta);
}

/* Sets the gauge metric `name` to `value`. */
static inline void rh_gauge_set(const char *name, double value) {
    handler_string_t n = rh__wit_str(name, strlen(name));
    rowhook_handler_metrics_gauge_set(&n, value);
}

/* Makes `handler`, a `rh_result handler(const rh_change *)`, the
 * component's `on-change` export. Use it once, in one file.
 *
 * The glue parses the change (a malformed one fails the call with
 * "malformed row change: ..." and the handler is not called), calls the
 * handler, frees the change buffer when it returns, and hands an error
 * message to rowhook, whose post-return call frees it. */
#define RH_EXPORT_HANDLER(handler)                                                                     \
    bool exports_handler_on_change(handler_list_u8_t *change, handler_string_t *err) {                 \
        rh_change c;                                                                                   \
        rh_result r;                                                                                   \
        if (rh_change_parse(&c, change->ptr, change->len) != RH_OK) r = rh_fail(rh_last_error());      \
        else r = handler(&c);                                                                          \
        handler_list_u8_free(change);                                                                  \
        if (!r.error) return true;                                                                     \
        err->ptr = (uint8_t *)r.error;                                                                 \
        err->len = strlen(r.error);                                                                    \
        return false;                                                                                  \
    }

#else /* not __wasm__ */

/* Natively (a handler's unit tests, built with gcc or clang for the host)
 * the capabilities go to an in-memory recorder, one per translation unit,
 * and rh_testing_run calls a handler the way rowhook does. rh_testing_change
 * makes the change to give it:
 *
 *     rh_testing_change b = rh_testing_insert("shop", "hits");
 *     rh_testing_column(&b, "ip", rh_make_string("203.0.113.7"));
 *     size_t len;
 *     uint8_t *buf = rh_testing_build(&b, &len);
 *     rh_result r = rh_testing_run(on_change, buf, len);
 *     // r.error is NULL, or the message rowhook would get (free it)
 *     // rh_testing_messages()[0].payload is what the handler emitted
 */

/* A message a handler emitted. */
typedef struct rh_testing_message {
    char *sink;
    char *key; /* NULL: none */
    uint8_t *payload;
    size_t len;
} rh_testing_message;

/* A line a handler logged. */
typedef struct rh_testing_log {
    rh_level level;
    char *message;
    size_t nfields;
    char **names;
    char **values;
} rh_testing_log;

/* A state entry, counter or gauge: a name and bytes (a counter's value is
 * its uint64_t, a gauge's its double, in `value`). */
typedef struct rh_testing_entry {
    char *key;
    uint8_t *value;
    size_t len;
} rh_testing_entry;

typedef struct rh_testing_list {
    void *items;
    size_t len, cap;
} rh_testing_list;

static struct rh__recorder {
    const char *const *granted; /* NULL: every sink */
    size_t ngranted;
    size_t emit_limit; /* 0: none */
    size_t emitted_this_event;
    rh_testing_list messages, logs, state, counters, gauges;
} rh__rec;

static inline void *rh__push(rh_testing_list *l, size_t size) {
    if (l->len == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->items = realloc(l->items, l->cap * size);
        if (!l->items) abort();
    }
    return (char *)l->items + l->len++ * size;
}

static inline char *rh__dup(const void *p, size_t n) {
    char *d = (char *)malloc(n + 1);
    if (!d) abort();
    if (n) memcpy(d, p, n);
    d[n] = 0;
    return d;
}

/* The entry `key` of a state-like list, or NULL. */
static inline rh_testing_entry *rh__entry(rh_testing_list *l, const char *key) {
    rh_testing_entry *e = (rh_testing_entry *)l->items;
    for (size_t i = 0; i < l->len; i++)
        if (strcmp(e[i].key, key) == 0) return &e[i];
    return NULL;
}

static inline void rh__entry_put(rh_testing_list *l, const char *key, const void *value, size_t len) {
    rh_testing_entry *e = rh__entry(l, key);
    if (!e) {
        e = (rh_testing_entry *)rh__push(l, sizeof *e);
        e->key = rh__dup(key, strlen(key));
    } else {
        free(e->value);
    }
    e->value = (uint8_t *)rh__dup(value, len);
    e->len = len;
}

static inline void rh__entries_free(rh_testing_list *l) {
    rh_testing_entry *e = (rh_testing_entry *)l->items;
    for (size_t i = 0; i < l->len; i++) {
        free(e[i].key);
        free(e[i].value);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

static inline rh_testing_list rh__entries_copy(const rh_testing_list *l) {
    rh_testing_list c = {NULL, 0, 0};
    const rh_testing_entry *e = (const rh_testing_entry *)l->items;
    for (size_t i = 0; i < l->len; i++) rh__entry_put(&c, e[i].key, e[i].value, e[i].len);
    return c;
}

static inline void rh__messages_truncate(size_t len) {
    rh_testing_message *m = (rh_testing_message *)rh__rec.messages.items;
    for (size_t i = len; i < rh__rec.messages.len; i++) {
        free(m[i].sink);
        free(m[i].key);
        free(m[i].payload);
    }
    rh__rec.messages.len = len;
}

static inline rh_status rh__emit(const char *sink, const rh_str *key, const void *payload, size_t len) {
    if (rh__rec.granted) {
        size_t i = 0;
        while (i < rh__rec.ngranted && strcmp(rh__rec.granted[i], sink) != 0) i++;
        if (i == rh__rec.ngranted) return rh__emit_fail(RH_ERR_EMIT_DENIED, sink);
    }
    if (rh__rec.emit_limit && rh__rec.emitted_this_event >= rh__rec.emit_limit)
        return rh__emit_fail(RH_ERR_EMIT_QUOTA, sink);
    rh__rec.emitted_this_event++;
    rh_testing_message *m = (rh_testing_message *)rh__push(&rh__rec.messages, sizeof *m);
    m->sink = rh__dup(sink, strlen(sink));
    m->key = key ? rh__dup(key->ptr, key->len) : NULL;
    m->payload = (uint8_t *)rh__dup(payload, len);
    m->len = len;
    return RH_OK;
}

static inline bool rh_state_get(const char *key, uint8_t **value, size_t *len) {
    rh_testing_entry *e = rh__entry(&rh__rec.state, key);
    if (!e) return false;
    *value = e->len ? (uint8_t *)rh__dup(e->value, e->len) : NULL;
    *len = e->len;
    return true;
}

static inline rh_status rh_state_set(const char *key, const void *value, size_t len) {
    rh__entry_put(&rh__rec.state, key, value, len);
    return RH_OK;
}

static inline void rh_state_delete(const char *key) {
    rh_testing_entry *e = rh__entry(&rh__rec.state, key), *all = (rh_testing_entry *)rh__rec.state.items;
    if (!e) return;
    free(e->key);
    free(e->value);
    *e = all[--rh__rec.state.len];
}

static inline rh_status rh_state_increment(const char *key, int64_t delta, int64_t *out) {
    rh_testing_entry *e = rh__entry(&rh__rec.state, key);
    int64_t old = 0, v;
    if (e) {
        if (e->len != 8) return rh__state_fail(RH_ERR_STATE_NOT_A_COUNTER, key);
        old = (int64_t)rh__u64(e->value);
    }
    if ((delta > 0 && old > INT64_MAX - delta) || (delta < 0 && old < INT64_MIN - delta))
        return rh__state_fail(RH_ERR_STATE_OVERFLOW, key);
    v = old + delta;
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)v >> (8 * i));
    rh__entry_put(&rh__rec.state, key, le, 8);
    if (out) *out = v;
    return RH_OK;
}

static inline void rh_log(rh_level level, const char *message, const rh_field *fields, size_t n) {
    rh_testing_log *l = (rh_testing_log *)rh__push(&rh__rec.logs, sizeof *l);
    l->level = level;
    l->message = rh__dup(message, strlen(message));
    l->nfields = n;
    l->names = (char **)malloc((n ? n : 1) * sizeof(char *));
    l->values = (char **)malloc((n ? n : 1) * sizeof(char *));
    if (!l->names || !l->values) abort();
    for (size_t i = 0; i < n; i++) {
        l->names[i] = rh__dup(fields[i].name, strlen(fields[i].name));
        l->values[i] = rh__dup(fields[i].value.ptr, fields[i].value.len);
    }
}

static inline void rh_counter_add(const char *name, uint64_t delta) {
    rh_testing_entry *e = rh__entry(&rh__rec.counters, name);
    uint64_t v = delta;
    if (e) v += *(const uint64_t *)(const void *)e->value;
    rh__entry_put(&rh__rec.counters, name, &v, sizeof v);
}

static inline void rh_gauge_set(const char *name, double value) {
    rh__entry_put(&rh__rec.gauges, name, &value, sizeof value);
}

/* Makes `handler` the handler rh_testing_run calls as `rh_exported_handler`
 * (on wasm32, the component's export). */
#define RH_EXPORT_HANDLER(handler)                                                                     \
    __attribute__((unused)) static rh_result (*const rh_exported_handler)(const rh_change *) = handler;

/* Calls `handler` with the change buf[0..len) as rowhook does: a fresh emit
 * quota, and the call's messages, state writes and metrics discarded if it
 * fails. Returns its result: r.error is the message rowhook would get
 * (free it). */
static inline rh_result rh_testing_run(rh_result (*handler)(const rh_change *), const uint8_t *buf, size_t len) {
    size_t messages = rh__rec.messages.len;
    rh_testing_list state = rh__entries_copy(&rh__rec.state);
    rh_testing_list counters = rh__entries_copy(&rh__rec.counters);
    rh_testing_list gauges = rh__entries_copy(&rh__rec.gauges);
    rh_change c;
    rh_result r;
    rh__rec.emitted_this_event = 0;
    if (rh_change_parse(&c, buf, len) != RH_OK) r = rh_fail(rh_last_error());
    else r = handler(&c);
    if (r.error) {
        rh__messages_truncate(messages);
        rh__entries_free(&rh__rec.state);
        rh__entries_free(&rh__rec.counters);
        rh__entries_free(&rh__rec.gauges);
        rh__rec.state = state;
        rh__rec.counters = counters;
        rh__rec.gauges = gauges;
    } else {
        rh__entries_free(&state);
        rh__entries_free(&counters);
        rh__entries_free(&gauges);
    }
    return r;
}

/* Only these sinks may be emitted to (n = 0: none); by default, all. The
 * array must outlive the test. */
static inline void rh_testing_grant(const char *const *sinks, size_t n) {
    static const char *const none[1] = {NULL};
    rh__rec.granted = sinks ? sinks : none;
    rh__rec.ngranted = n;
}

/* At most `limit` emits per call (limits.emits_per_event); 0: no limit. */
static inline void rh_testing_set_emit_limit(size_t limit) { rh__rec.emit_limit = limit; }

/* What the handlers emitted, in order. */
static inline const rh_testing_message *rh_testing_messages(size_t *n) {
    *n = rh__rec.messages.len;
    return (const rh_testing_message *)rh__rec.messages.items;
}

/* What they logged, in order. */
static inline const rh_testing_log *rh_testing_logs(size_t *n) {
    *n = rh__rec.logs.len;
    return (const rh_testing_log *)rh__rec.logs.items;
}

/* The number of state keys. */
static inline size_t rh_testing_state_len(void) { return rh__rec.state.len; }

/* The counter metric `name`, 0 if never added to. */
static inline uint64_t rh_testing_counter(const char *name) {
    rh_testing_entry *e = rh__entry(&rh__rec.counters, name);
    return e ? *(const uint64_t *)(const void *)e->value : 0;
}

/* The gauge metric `name`, or `otherwise` if never set. */
static inline double rh_testing_gauge(const char *name, double otherwise) {
    rh_testing_entry *e = rh__entry(&rh__rec.gauges, name);
    return e ? *(const double *)(const void *)e->value : otherwise;
}

/* Forgets everything recorded, grants and limits included. */
static inline void rh_testing_reset(void) {
    rh__messages_truncate(0);
    free(rh__rec.messages.items);
    rh_testing_log *l = (rh_testing_log *)rh__rec.logs.items;
    for (size_t i = 0; i < rh__rec.logs.len; i++) {
        for (size_t k = 0; k < l[i].nfields; k++) {
            free(l[i].names[k]);
            free(l[i].values[k]);
        }
        free(l[i].names);
        free(l[i].values);
        free(l[i].message);
    }
    free(rh__rec.logs.items);
    rh__entries_free(&rh__rec.state);
    rh__entries_free(&rh__rec.counters);
    rh__entries_free(&rh__rec.gauges);
    memset(&rh__rec, 0, sizeof rh__rec);
}

/* A change to hand a handler in a test, built column by column. */
#define RH_TESTING_MAX_COLUMNS 64
typedef struct rh_testing_change {
    rh_op op;
    /* txn NULL: `snapshot:<db>.<table>`, a snapshot's, made when built. */
    const char *db, *table, *txn, *gtid, *file;
    uint64_t pos;
    uint32_t ts, event_index, row_index;
    size_t ncols;
    struct {
        const char *name;
        bool primary_key;
        rh_value before, after; /* tag RH_TAG_ABSENT: not set */
    } cols[RH_TESTING_MAX_COLUMNS];
} rh_testing_change;

/* A change of `op` to db.table: GTID 0-1-1 (a snapshot: none, and the id
 * `snapshot:<db>.<table>:0:0`), mysql-bin.000001 at 4, ts 0, event and row
 * 0, no columns yet. */
static inline rh_testing_change rh_testing_new(rh_op op, const char *db, const char *table) {
    rh_testing_change b;
    memset(&b, 0, sizeof b);
    b.op = op;
    b.db = db;
    b.table = table;
    if (op != RH_SNAPSHOT) b.txn = b.gtid = "0-1-1";
    b.file = "mysql-bin.000001";
    b.pos = 4;
    return b;
}

static inline rh_testing_change rh_testing_insert(const char *db, const char *table) {
    return rh_testing_new(RH_INSERT, db, table);
}

static inline rh_testing_change rh_testing_update(const char *db, const char *table) {
    return rh_testing_new(RH_UPDATE, db, table);
}

static inline rh_testing_change rh_testing_delete(const char *db, const char *table) {
    return rh_testing_new(RH_DELETE, db, table);
}

/* A row read by a snapshot of db.table: an after image only, no GTID. */
static inline rh_testing_change rh_testing_snapshot(const char *db, const char *table) {
    return rh_testing_new(RH_SNAPSHOT, db, table);
}

/* The transaction's GTID (also the id's transaction part). */
static inline void rh_testing_gtid(rh_testing_change *b, const char *gtid) { b->txn = b->gtid = gtid; }

/* Which rows event of the transaction, and which row of it (a snapshot's
 * chunk, and which row of it). */
static inline void rh_testing_index(rh_testing_change *b, uint32_t event, uint32_t row) {
    b->event_index = event;
    b->row_index = row;
}

static inline size_t rh__slot(rh_testing_change *b, const char *name) {
    for (size_t i = 0; i < b->ncols; i++)
        if (strcmp(b->cols[i].name, name) == 0) return i;
    if (b->ncols == RH_TESTING_MAX_COLUMNS) abort();
    memset(&b->cols[b->ncols], 0, sizeof b->cols[0]);
    b->cols[b->ncols].name = name;
    return b->ncols++;
}

/* Column `name` with `value`: in the after image (the before image of a
 * delete); an update's before image has it too unless rh_testing_before
 * says otherwise. Texts and bytes are read when the change is built. */
static inline void rh_testing_column(rh_testing_change *b, const char *name, rh_value value) {
    size_t i = rh__slot(b, name);
    if (b->op == RH_DELETE) b->cols[i].before = value;
    else b->cols[i].after = value;
}

/* Column `name`'s value before an update. */
static inline void rh_testing_before(rh_testing_change *b, const char *name, rh_value value) {
    b->cols[rh__slot(b, name)].before = value;
}

/* Marks column `name` part of the primary key. */
static inline void rh_testing_primary_key(rh_testing_change *b, const char *name) {
    b->cols[rh__slot(b, name)].primary_key = true;
}

static inline void rh__le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The change in the row change encoding: malloc'd, *len bytes; free() it. */
static inline uint8_t *rh_testing_build(const rh_testing_change *b, size_t *len) {
    static const uint8_t type_codes[] = {252, 6, 8, 8, 4, 5, 246, 15, 252, 10, 18, 17, 19, 245, 247, 248, 16, 242};
    bool before = b->op == RH_UPDATE || b->op == RH_DELETE, after = b->op != RH_DELETE;
    size_t n = b->ncols, images = (size_t)before + (size_t)after;
    char id[512];
    int idlen = b->txn ? snprintf(id, sizeof id, "%s:%u:%u", b->txn, b->event_index, b->row_index)
                       : snprintf(id, sizeof id, "snapshot:%s.%s:%u:%u", b->db, b->table, b->event_index, b->row_index);
    if (idlen < 0 || (size_t)idlen >= sizeof id) abort();
    size_t txnlen = b->txn ? strlen(b->txn) : strlen("snapshot:.") + strlen(b->db) + strlen(b->table);
    /* Room: the index, then names, texts and values. */
    size_t data = RH_HEADER_LEN + n * RH_COLUMN_ENTRY_LEN + n * RH_VALUE_ENTRY_LEN * images;
    size_t cap = data + (size_t)idlen + strlen(b->gtid ? b->gtid : "") + strlen(b->file) + strlen(b->db) +
                 strlen(b->table);
    for (size_t i = 0; i < n; i++) {
        cap += strlen(b->cols[i].name);
        const rh_value *v[2] = {&b->cols[i].before, &b->cols[i].after};
        for (int k = 0; k < 2; k++)
            if (v[k]->tag >= RH_TAG_DECIMAL && v[k]->tag != RH_TAG_BIT) cap += v[k]->as.bytes.len;
    }
    uint8_t *buf = (uint8_t *)calloc(1, cap ? cap : 1);
    if (!buf) abort();
    size_t at = data;
    uint8_t flags = (uint8_t)((before ? RH_FLAG_BEFORE : 0) | (after ? RH_FLAG_AFTER : 0) |
                              (b->gtid ? RH_FLAG_GTID : 0) | RH_FLAG_NAMES);
    /* Appends p[0..l) to the data area; returns its offset. */
#define RH__DATA(p, l) (memcpy(buf + at, (p), (l)), at += (l), at - (l))
    memcpy(buf, "RHC\x01", 4);
    buf[4] = (uint8_t)b->op;
    buf[5] = flags;
    rh__le(buf + 6, n, 2);
    rh__le(buf + 8, b->ts, 4);
    rh__le(buf + 12, b->event_index, 4);
    rh__le(buf + 16, b->row_index, 4);
    rh__le(buf + 20, txnlen, 4);
    rh__le(buf + 24, b->pos, 8);
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = buf + RH_HEADER_LEN + i * RH_COLUMN_ENTRY_LEN;
        const rh_value *v = b->cols[i].after.tag ? &b->cols[i].after : &b->cols[i].before;
        size_t l = strlen(b->cols[i].name);
        rh__le(e, RH__DATA(b->cols[i].name, l), 4);
        rh__le(e + 4, l, 2);
        e[6] = type_codes[v->tag];
        e[7] = (uint8_t)((b->cols[i].primary_key ? 1 : 0) | 2);
    }
    const char *texts[5] = {id, b->gtid, b->file, b->db, b->table};
    for (int k = 0; k < 5; k++) {
        if (!texts[k]) continue;
        size_t l = k == 0 ? (size_t)idlen : strlen(texts[k]);
        rh__le(buf + 32 + 8 * k, RH__DATA(texts[k], l), 4);
        rh__le(buf + 36 + 8 * k, l, 4);
    }
    size_t entries = RH_HEADER_LEN + n * RH_COLUMN_ENTRY_LEN;
    for (int image = 0; image < 2; image++) {
        if (!(image == 0 ? before : after)) continue;
        for (size_t i = 0; i < n; i++) {
            const rh_value *v = image == 0 ? &b->cols[i].before : &b->cols[i].after;
            if (!v->tag) v = image == 0 ? &b->cols[i].after : &b->cols[i].before;
            uint8_t *e = buf + entries + i * RH_VALUE_ENTRY_LEN;
            e[0] = (uint8_t)v->tag;
            if (v->tag == RH_TAG_INT || v->tag == RH_TAG_UINT || v->tag == RH_TAG_BIT ||
                v->tag == RH_TAG_FLOAT || v->tag == RH_TAG_DOUBLE) {
                rh__le(e + 1, v->as.u, 8);
            } else if (v->tag >= RH_TAG_DECIMAL) {
                rh__le(e + 1, RH__DATA(v->as.bytes.ptr, v->as.bytes.len), 4);
                rh__le(e + 5, v->as.bytes.len, 4);
            }
        }
        entries += n * RH_VALUE_ENTRY_LEN;
    }
#undef RH__DATA
    *len = at;
    return buf;
}

#endif /* __wasm__ */

/* Queues payload[0..len) for the sink `sink` (a key of [sinks] in the
 * configuration), with message key `key` (NUL-terminated; NULL lets the
 * sink choose). The message goes out when the transaction has been
 * handled, and only if this call to the handler succeeds. RH_OK, or
 * RH_ERR_EMIT_*: nothing reached any sink. */
static inline rh_status rh_emit(const char *sink, const char *key, const void *payload, size_t len) {
    rh_str k = rh_cstr(key);
    return rh__emit(sink, key ? &k : NULL, payload, len);
}

/* rh_emit with the key an rh_str (the change id, a column's text). */
static inline rh_status rh_emit_key(const char *sink, rh_str key, const void *payload, size_t len) {
    return rh__emit(sink, &key, payload, len);
}

/* The counter under `key` (rh_state_increment), 0 if there is none or the
 * value is not a counter. */
static inline int64_t rh_state_counter(const char *key) {
    uint8_t *v;
    size_t n;
    int64_t r = 0;
    if (!rh_state_get(key, &v, &n)) return 0;
    if (n == 8) r = (int64_t)rh__u64(v);
    free(v);
    return r;
}

static inline void rh_log_trace(const char *m, const rh_field *f, size_t n) { rh_log(RH_TRACE, m, f, n); }
static inline void rh_log_debug(const char *m, const rh_field *f, size_t n) { rh_log(RH_DEBUG, m, f, n); }
static inline void rh_log_info(const char *m, const rh_field *f, size_t n) { rh_log(RH_INFO, m, f, n); }
static inline void rh_log_warn(const char *m, const rh_field *f, size_t n) { rh_log(RH_WARN, m, f, n); }
static inline void rh_log_error(const char *m, const rh_field *f, size_t n) { rh_log(RH_ERROR, m, f, n); }


#ifdef __cplusplus
}
#endif

#endif /* ROWHOOK_H */
