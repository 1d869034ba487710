/* Firewall (spec filters.md §7): allows or denies packets by the peer's IP and port. Read
 * checks on_read against the client, write checks on_write against the server (the context
 * source). Rules are decoded and their masks precomputed when the snapshot is built; the
 * packet path only compares words and never allocates. */
#include "base/err.h"
#include "config/node.h"
#include "filters/filter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum fw_action {
    FW_ALLOW = 0,
    FW_DENY,
};

static const char *const action_names[] = {"ALLOW", "DENY"};

/* One CIDR with its mask applied: an address matches when (addr & mask) == net. IPv4 lives
 * in the low 32 bits of w[0] (host order); IPv6 uses both 64-bit words (host order). */
struct fw_cidr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t prefix; /* 0-32 or 0-128 */
    uint8_t ip[16]; /* as written (host bits kept), for printing the normalised form */
    uint64_t net[2], mask[2];
};

/* Half-open [lo, hi) (spec filters.md §7: the end is exclusive), lo < hi. */
struct fw_ports {
    uint16_t lo, hi;
};

/* Owned by firewall_args: the two arrays are freed by args_free. */
struct fw_rule {
    enum fw_action action;
    struct fw_cidr *cidrs;
    size_t n_cidrs;
    struct fw_ports *ports;
    size_t n_ports;
};

struct fw_list {
    struct fw_rule *rules; /* owned */
    size_t n;
};

/* Filled by from_yaml, freed by args_free; read-only (and shared by workers) afterwards. */
struct firewall_args {
    struct fw_list on_read, on_write;
};

/* ---- decoding ------------------------------------------------------------------------- */

static uint64_t load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t mask_bits(unsigned bits) /* top `bits` of a 64-bit word, bits <= 64 */
{
    return bits == 0 ? 0 : bits >= 64 ? UINT64_MAX : ~(UINT64_MAX >> bits);
}

/* Parses a decimal prefix length 0..max (no sign, no spaces). */
static int parse_prefix(const char *s, unsigned max, unsigned *out)
{
    if (*s == '\0' || strlen(s) > 3)
        return -EINVAL;
    unsigned v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* "a.b.c.d[/len]" or "ipv6[/len]"; a bare address is a host route. Like v0.7.0 (ipnetwork),
 * text with a ':' is IPv6, anything else IPv4, and host bits may be set. */
static int parse_cidr(const struct node *n, const char *text, struct fw_cidr *out, struct err *e)
{
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    if (slash && strchr(slash + 1, '/'))
        return node_error(n, e, "invalid cidr format: CIDR must contain a single '/': %.64s", text);
    if (alen >= sizeof(buf))
        return node_error(n, e, "invalid address: %.64s", text);
    memcpy(buf, text, alen);
    buf[alen] = '\0';

    bool is_v6 = memchr(buf, ':', alen) != NULL;
    struct addr a;
    if (addr_parse_ip(buf, &a) < 0 || (!is_v6 && a.family != AF_INET))
        return node_error(n, e, "invalid address: %s", buf);
    memset(out, 0, sizeof(*out));
    out->family = is_v6 ? AF_INET6 : AF_INET;
    if (is_v6 && a.family == AF_INET) {
        /* addr_parse_ip folds ::ffff:a.b.c.d to IPv4; the text spelt an IPv6 CIDR */
        out->ip[10] = out->ip[11] = 0xff;
        memcpy(out->ip + 12, a.ip, 4);
    } else {
        memcpy(out->ip, a.ip, is_v6 ? 16 : 4);
    }
    unsigned max = is_v6 ? 128 : 32, prefix = max;
    if (slash && parse_prefix(slash + 1, max, &prefix) < 0)
        return node_error(n, e, "invalid prefix");
    out->prefix = (uint8_t)prefix;
    if (is_v6) {
        out->mask[0] = mask_bits(prefix > 64 ? 64 : prefix);
        out->mask[1] = mask_bits(prefix > 64 ? prefix - 64 : 0);
        out->net[0] = load_be64(out->ip) & out->mask[0];
        out->net[1] = load_be64(out->ip + 8) & out->mask[1];
    } else {
        out->mask[0] = mask_bits(prefix) >> 32;
        out->net[0] = (load_be64(out->ip) >> 32) & out->mask[0];
    }
    return 0;
}

/* A decimal u16 the way Rust's u16::from_str reads it (optional '+', digits only), with its
 * error texts. */
static int parse_u16(const struct node *n, const char *s, size_t len, uint16_t *out, struct err *e)
{
    if (len == 0)
        return node_error(n, e, "cannot parse integer from empty string");
    size_t i = 0;
    if (s[0] == '+' && len > 1)
        i = 1;
    uint32_t v = 0;
    for (; i < len; i++) { /* the first problem from the left wins, as in Rust */
        if (s[i] < '0' || s[i] > '9')
            return node_error(n, e, "invalid digit found in string");
        v = v * 10 + (uint32_t)(s[i] - '0');
        if (v > UINT16_MAX)
            return node_error(n, e, "number too large to fit in target type");
    }
    *out = (uint16_t)v;
    return 0;
}

/* "N" (or YAML integer N) = [N, N+1); "A-B" = [A, B). */
static int parse_ports(const struct node *n, struct fw_ports *out, struct err *e)
{
    const char *s;
    int rc = node_get_str(n, &s, e);
    if (rc < 0)
        return rc;
    size_t len = n->str_len;
    const char *dash = memchr(s, '-', len);
    uint16_t lo = 0, hi = 0;
    if (!dash) {
        if ((rc = parse_u16(n, s, len, &lo, e)) < 0)
            return rc;
        /* v0.7.0 computes N + 1 in u16: for 65535 it wraps to 0 and the range check fails */
        hi = (uint16_t)(lo + 1);
    } else {
        if ((rc = parse_u16(n, s, (size_t)(dash - s), &lo, e)) < 0 ||
            (rc = parse_u16(n, dash + 1, len - (size_t)(dash - s) - 1, &hi, e)) < 0)
            return rc;
    }
    if (lo >= hi)
        return node_error(n, e, "invalid port range: min %u is greater than or equal to max %u",
                          (unsigned)lo, (unsigned)hi);
    out->lo = lo;
    out->hi = hi;
    return 0;
}

static const struct node *required(const struct node *map, const char *key, struct err *e, int *rc)
{
    const struct node *v = node_map_get(map, key);
    if (!v)
        *rc = node_error(map, e, "missing field `%s`", key);
    return v;
}

static int expect_seq(const struct node *n, struct err *e)
{
    if (n->kind != NODE_SEQ)
        return node_error(n, e, "expected a sequence, found %s", node_kind_name(n->kind));
    return 0;
}

static int parse_rule(const struct node *n, struct fw_rule *r, struct err *e)
{
    int rc = node_check_map(n, NULL, 0, e); /* unknown keys ignored (spec §1.2) */
    if (rc < 0)
        return rc;
    const struct node *action, *sources, *ports;
    if (!(action = required(n, "action", e, &rc)) || !(sources = required(n, "sources", e, &rc)) ||
        !(ports = required(n, "ports", e, &rc)))
        return rc;
    int act;
    if ((rc = node_get_enum(action, action_names, 2, &act, e)) < 0)
        return rc;
    r->action = (enum fw_action)act;
    if ((rc = expect_seq(sources, e)) < 0 || (rc = expect_seq(ports, e)) < 0)
        return rc;
    if (sources->n_items) {
        r->cidrs = calloc(sources->n_items, sizeof(*r->cidrs));
        if (!r->cidrs)
            return err_set(e, "out of memory"), -ENOMEM;
    }
    for (size_t i = 0; i < sources->n_items; i++) {
        const char *s;
        const struct node *item = sources->items[i];
        if ((rc = node_get_str(item, &s, e)) < 0)
            return rc;
        if (strlen(s) != item->str_len) /* an embedded NUL would hide the rest */
            return node_error(item, e, "invalid address: %s", s);
        if ((rc = parse_cidr(item, s, &r->cidrs[i], e)) < 0)
            return rc;
        r->n_cidrs++;
    }
    if (ports->n_items) {
        r->ports = calloc(ports->n_items, sizeof(*r->ports));
        if (!r->ports)
            return err_set(e, "out of memory"), -ENOMEM;
    }
    for (size_t i = 0; i < ports->n_items; i++) {
        if ((rc = parse_ports(ports->items[i], &r->ports[i], e)) < 0)
            return rc;
        r->n_ports++;
    }
    return 0;
}

static int parse_list(const struct node *map, const char *key, struct fw_list *l, struct err *e)
{
    int rc = 0;
    const struct node *seq = required(map, key, e, &rc);
    if (!seq)
        return rc;
    if ((rc = expect_seq(seq, e)) < 0)
        return rc;
    if (seq->n_items == 0)
        return 0;
    l->rules = calloc(seq->n_items, sizeof(*l->rules));
    if (!l->rules)
        return err_set(e, "out of memory"), -ENOMEM;
    for (size_t i = 0; i < seq->n_items; i++) {
        l->n++; /* counted first so args_free releases a half-parsed rule */
        if ((rc = parse_rule(seq->items[i], &l->rules[i], e)) < 0) {
            err_prefix(e, "%s[%zu]: ", key, i);
            return rc;
        }
    }
    return 0;
}

static int firewall_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct firewall_args *a = args;
    int rc = node_check_map(n, NULL, 0, e);
    if (rc < 0)
        return rc;
    if ((rc = parse_list(n, "on_read", &a->on_read, e)) < 0)
        return rc;
    return parse_list(n, "on_write", &a->on_write, e);
}

static void free_list(struct fw_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->rules[i].cidrs);
        free(l->rules[i].ports);
    }
    free(l->rules);
    l->rules = NULL;
    l->n = 0;
}

static void firewall_args_free(void *args)
{
    struct firewall_args *a = args;
    free_list(&a->on_read);
    free_list(&a->on_write);
}

/* ---- packet path ---------------------------------------------------------------------- */

static bool cidr_contains(const struct fw_cidr *c, const struct addr *a)
{
    if (c->family == AF_INET) {
        /* spec filters.md §7: an IPv4 CIDR also matches an IPv6 address embedding IPv4
         * (::ffff:a.b.c.d or ::a.b.c.d, so ::1 is 0.0.0.1 here, as in v0.7.0) */
        const uint8_t *v4;
        if (a->family == AF_INET) {
            v4 = a->ip;
        } else {
            static const uint8_t zero[10];
            if (memcmp(a->ip, zero, 10) != 0 ||
                !((a->ip[10] == 0 && a->ip[11] == 0) || (a->ip[10] == 0xff && a->ip[11] == 0xff)))
                return false;
            v4 = a->ip + 12;
        }
        uint64_t w =
            ((uint64_t)v4[0] << 24) | ((uint64_t)v4[1] << 16) | ((uint64_t)v4[2] << 8) | v4[3];
        return (w & c->mask[0]) == c->net[0];
    }
    if (a->family != AF_INET6) /* an IPv6 CIDR never matches an IPv4 address */
        return false;
    return (load_be64(a->ip) & c->mask[0]) == c->net[0] &&
           (load_be64(a->ip + 8) & c->mask[1]) == c->net[1];
}

static bool rule_matches(const struct fw_rule *r, const struct addr *a)
{
    bool port_ok = false;
    for (size_t i = 0; i < r->n_ports && !port_ok; i++)
        port_ok = a->port >= r->ports[i].lo && a->port < r->ports[i].hi;
    if (!port_ok)
        return false;
    for (size_t i = 0; i < r->n_cidrs; i++)
        if (cidr_contains(&r->cidrs[i], a))
            return true;
    return false;
}

/* First matching rule decides; no match (or no rules) denies. A linear scan over rules,
 * CIDRs and ranges: O(total entries), fine for the handful of rules a firewall usually
 * holds; a prefix trie would be the upgrade for thousands. */
static enum verdict evaluate(const struct fw_list *l, const struct addr *a, struct pkt_ctx *c)
{
    for (size_t i = 0; i < l->n; i++) {
        if (rule_matches(&l->rules[i], a)) {
            if (l->rules[i].action == FW_ALLOW)
                return VERDICT_PASS;
            break;
        }
    }
    c->drop_reason = "packet denied";
    return VERDICT_DROP;
}

static enum verdict firewall_read(const struct filter *f, struct pkt_ctx *c)
{
    const struct firewall_args *a = f->args;
    return evaluate(&a->on_read, &c->src, c); /* the client */
}

static enum verdict firewall_write(const struct filter *f, struct pkt_ctx *c)
{
    const struct firewall_args *a = f->args;
    return evaluate(&a->on_write, &c->src, c); /* the server (spec §7: context source) */
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char firewall_schema[] =
    "description: Allows or denies packets by address and port; the first matching rule decides, no match denies.\n"
    "type: object\n"
    "required: [on_read, on_write]\n"
    "properties:\n"
    "  on_read:\n"
    "    description: Rules for packets from clients (matched against the client address).\n"
    "    type: array\n"
    "    items:\n"
    "      $ref: '#/definitions/Rule'\n"
    "  on_write:\n"
    "    description: Rules for packets from servers (matched against the server address).\n"
    "    type: array\n"
    "    items:\n"
    "      $ref: '#/definitions/Rule'\n"
    "definitions:\n"
    "  Rule:\n"
    "    type: object\n"
    "    required: [action, sources, ports]\n"
    "    properties:\n"
    "      action:\n"
    "        enum: [ALLOW, DENY]\n"
    "      sources:\n"
    "        description: CIDR ranges such as 10.0.0.0/8 or 2001:db8::/32; a bare address is one host.\n"
    "        type: array\n"
    "        items:\n"
    "          type: string\n"
    "      ports:\n"
    "        description: Ports \"N\", or half-open ranges \"A-B\" (B excluded).\n"
    "        type: array\n"
    "        items:\n"
    "          $ref: '#/definitions/PortRange'\n"
    "  PortRange:\n"
    "    anyOf:\n"
    "      - type: integer\n"
    "        minimum: 0\n"
    "        maximum: 65534\n"
    "      - type: string\n"
    "        pattern: '^[+]?[0-9]+(-[+]?[0-9]+)?$'\n";

const struct filter_ops firewall_filter = {
    .name = "quilkin.filters.firewall.v1alpha1.Firewall",
    .args_size = sizeof(struct firewall_args),
    .need = CFG_REQUIRED,
    .schema = firewall_schema,
    .from_yaml = firewall_from_yaml,
    .args_free = firewall_args_free,
    .read = firewall_read,
    .write = firewall_write,
};
