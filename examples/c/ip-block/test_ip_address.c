/* ip_address.h against what Rust's std::net::IpAddr makes of the same
 * strings (its parse, then its Display), so the C ip-block keys and blocks
 * what the Rust one does. Built natively: `make test`. */

#include <stdio.h>

#include "ip_address.h"

/* Input, and Rust's canonical text of it (NULL: Rust rejects it). */
static const struct {
    const char *in;
    const char *rust;
} cases[] = {
    {"203.0.113.7", "203.0.113.7"},
    {"198.51.100.2", "198.51.100.2"},
    {"2001:db8::1", "2001:db8::1"},
    {"2001:0db8:0:0::1", "2001:db8::1"},
    {"2001:DB8::1", "2001:db8::1"},
    {"2001:db8:0:0:0:0:0:1", "2001:db8::1"},
    {"203.0.113.7; rm -rf /", NULL},
    {"$(reboot)", NULL},
    {"", NULL},
    {"203.0.113.07", NULL},
    {"::", "::"},
    {"::1", "::1"},
    {"1::", "1::"},
    {"::ffff:1.2.3.4", "::ffff:1.2.3.4"},
    {"::1.2.3.4", "::102:304"},
    {"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"},
    {"1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"},
    {"::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"},
    {"1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"},
    {"1::1.2.3.4", "1::102:304"},
    {"0:0:1:0:0:0:1:0", "0:0:1::1:0"},
    {"1:0:0:1:0:0:1:1", "1::1:0:0:1:1"},
    {"256.1.1.1", NULL},
    {"1.2.3", NULL},
    {"1.2.3.4.5", NULL},
    {"0.0.0.0", "0.0.0.0"},
    {"00.0.0.0", NULL},
    {"1.2.3.4:80", NULL},
    {"[::1]", NULL},
    {"fe80::1%eth0", NULL},
    {"12345::", NULL},
    {"1:2:3:4:5:6:7:8:9", NULL},
    {":::", NULL},
    {"1:::2", NULL},
    {"::ffff:0:0", "::ffff:0.0.0.0"},
    {"::ffff:ffff:ffff", "::ffff:255.255.255.255"},
    {"0:0:0:0:0:ffff:102:304", "::ffff:1.2.3.4"},
    {"1.2.3.4::", NULL},
    {"::1.2.3.4:5", NULL},
    {"a::b::c", NULL},
    {"0::0", "::"},
    {"ffff::ffff:1.2.3.255", "ffff::ffff:102:3ff"},
    {"1.2.3.04", NULL},
    {"1:2:3:4:5:6:7:1.2.3.4", NULL},
    {"1:2:3:4:5::1.2.3.4", "1:2:3:4:5:0:102:304"},
    {"::0:0:0:0:0:0:0", "::"},
    {"0:0:0:0:0:0:0::", "::"},
    {"1:0:0:0:0:0:0:0", "1::"},
};

int main(void) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ip_address a;
        char text[IP_ADDRESS_TEXT];
        bool ok = ip_address_parse(cases[i].in, strlen(cases[i].in), &a);
        if (ok) ip_address_text(&a, text);
        if (ok == (cases[i].rust != NULL) && (!ok || strcmp(text, cases[i].rust) == 0)) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL \"%s\": got %s, want %s\n", cases[i].in, ok ? text : "(rejected)",
                    cases[i].rust ? cases[i].rust : "(rejected)");
        }
    }
    printf("ip_address: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
