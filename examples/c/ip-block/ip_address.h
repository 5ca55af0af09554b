/* IP addresses as Rust's std::net::IpAddr reads and writes them, so the C
 * ip-block counts and blocks exactly what its Rust twin does.
 *
 * Reading is strict: IPv4 is four decimal octets with no leading zeros
 * (`203.0.113.07` is not an address: some tools read it as octal); IPv6 is
 * up to eight groups of 1 to 4 hex digits with at most one `::`, an IPv4
 * address allowed as its last 32 bits; nothing else (no zone, no brackets,
 * no spaces). Writing gives the canonical form (RFC 5952): IPv6 in
 * lowercase, the longest run of two or more zero groups (the first of
 * equals) as `::`, and `::ffff:a.b.c.d` for an IPv4-mapped address. */
#ifndef IP_ADDRESS_H
#define IP_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* An IPv4 or IPv6 address. */
typedef struct ip_address {
    bool v6;
    uint8_t v4[4];
    uint16_t groups[8];
} ip_address;

/* Room for the longest canonical text, with its NUL. */
#define IP_ADDRESS_TEXT 46

typedef struct ip_cursor {
    const char *p, *end;
} ip_cursor;

static bool ip__take(ip_cursor *c, char ch) {
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

static int ip__hex(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Up to `max` digits of `radix`, at least one; a leading zero only alone
 * unless `zero_prefix`. Leaves the cursor where it was on failure. */
static bool ip__number(ip_cursor *c, int radix, int max, bool zero_prefix, uint32_t limit, uint32_t *out) {
    ip_cursor save = *c;
    bool leading_zero = c->p < c->end && *c->p == '0';
    int digits = 0;
    uint32_t v = 0;
    while (c->p < c->end) {
        int d = ip__hex(*c->p);
        if (d < 0 || d >= radix) break;
        c->p++;
        v = v * (uint32_t)radix + (uint32_t)d;
        if (++digits > max || v > limit) {
            *c = save;
            return false;
        }
    }
    if (digits == 0 || (!zero_prefix && leading_zero && digits > 1)) {
        *c = save;
        return false;
    }
    *out = v;
    return true;
}

static bool ip__v4(ip_cursor *c, uint8_t out[4]) {
    ip_cursor save = *c;
    for (int i = 0; i < 4; i++) {
        uint32_t v;
        if ((i > 0 && !ip__take(c, '.')) || !ip__number(c, 10, 3, false, 255, &v)) {
            *c = save;
            return false;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

/* Groups separated by `:`, at most `limit`; the last two may be an IPv4
 * address (*v4 then). Returns how many were read. */
static size_t ip__groups(ip_cursor *c, uint16_t *groups, size_t limit, bool *v4) {
    *v4 = false;
    for (size_t i = 0; i < limit; i++) {
        ip_cursor save = *c;
        if (i + 1 < limit) {
            uint8_t a[4];
            if ((i == 0 || ip__take(c, ':')) && ip__v4(c, a)) {
                groups[i] = (uint16_t)(a[0] << 8 | a[1]);
                groups[i + 1] = (uint16_t)(a[2] << 8 | a[3]);
                *v4 = true;
                return i + 2;
            }
            *c = save;
        }
        uint32_t g;
        if ((i > 0 && !ip__take(c, ':')) || !ip__number(c, 16, 4, true, 0xffff, &g)) {
            *c = save;
            return i;
        }
        groups[i] = (uint16_t)g;
    }
    return limit;
}

static bool ip__v6(ip_cursor *c, uint16_t out[8]) {
    ip_cursor save = *c;
    uint16_t head[8] = {0}, tail[7];
    bool v4;
    size_t n = ip__groups(c, head, 8, &v4);
    if (n < 8) {
        /* An IPv4 part only at the end; `::` stands for at least one group. */
        if (v4 || !ip__take(c, ':') || !ip__take(c, ':')) {
            *c = save;
            return false;
        }
        size_t t = ip__groups(c, tail, 8 - (n + 1), &v4);
        memcpy(head + 8 - t, tail, t * sizeof *tail);
    }
    memcpy(out, head, sizeof head);
    return true;
}

/* Reads text[0..len) as an address: true and *out if all of it is one. */
static bool ip_address_parse(const char *text, size_t len, ip_address *out) {
    ip_cursor c = {text, text + len};
    memset(out, 0, sizeof *out);
    if (ip__v4(&c, out->v4)) return c.p == c.end;
    out->v6 = true;
    return ip__v6(&c, out->groups) && c.p == c.end;
}

static char *ip__decimal(char *p, unsigned v) {
    if (v >= 100) *p++ = (char)('0' + v / 100);
    if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

static char *ip__v4_text(char *p, const uint8_t a[4]) {
    for (int i = 0; i < 4; i++) {
        if (i) *p++ = '.';
        p = ip__decimal(p, a[i]);
    }
    return p;
}

static char *ip__groups_text(char *p, const uint16_t *g, size_t n) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        if (i) *p++ = ':';
        int shift = 12;
        while (shift > 0 && (g[i] >> shift & 0xf) == 0) shift -= 4;
        for (; shift >= 0; shift -= 4) *p++ = hex[g[i] >> shift & 0xf];
    }
    return p;
}

/* Writes the canonical text of `a` to out (IP_ADDRESS_TEXT bytes); returns
 * its length. */
static size_t ip_address_text(const ip_address *a, char out[IP_ADDRESS_TEXT]) {
    char *p = out;
    const uint16_t *g = a->groups;
    if (!a->v6) {
        p = ip__v4_text(p, a->v4);
    } else if (!g[0] && !g[1] && !g[2] && !g[3] && !g[4] && g[5] == 0xffff) {
        uint8_t v4[4] = {(uint8_t)(g[6] >> 8), (uint8_t)g[6], (uint8_t)(g[7] >> 8), (uint8_t)g[7]};
        memcpy(p, "::ffff:", 7);
        p = ip__v4_text(p + 7, v4);
    } else {
        size_t best = 0, best_len = 0, run = 0;
        for (size_t i = 0; i < 8; i++) {
            run = g[i] ? 0 : run + 1;
            if (run > best_len) {
                best_len = run;
                best = i + 1 - run;
            }
        }
        if (best_len > 1) {
            p = ip__groups_text(p, g, best);
            *p++ = ':';
            *p++ = ':';
            p = ip__groups_text(p, g + best + best_len, 8 - best - best_len);
        } else {
            p = ip__groups_text(p, g, 8);
        }
    }
    *p = 0;
    return (size_t)(p - out);
}

#endif /* IP_ADDRESS_H */
