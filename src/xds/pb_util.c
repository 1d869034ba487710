/* Protobuf-c helpers shared by the xDS codecs: the nesting guard in front of every unpack of
 * untrusted bytes, packing, and the encode-side allocation pool. Holds no state. */
#include "xds/pb_util.h"

#include "base/err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Protobuf-c unpacks nested messages recursively without a limit; inputs nested deeper than
 * this (Struct -> entry -> Value is 3 levels per metadata level) are rejected first, so a
 * hostile message cannot exhaust the stack. YAML metadata (64 levels) stays well below. */
#define MAX_NESTING 200

/* ---- wire guard --------------------------------------------------------------------------- */

static bool read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* False when some message field nests deeper than MAX_NESTING. Malformed input returns true:
 * the unpacker reports it. Linear in len: each submessage is walked once, then skipped. */
static bool nesting_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                       unsigned depth)
{
    if (depth > MAX_NESTING)
        return false;
    size_t i = 0;
    while (i < len) {
        uint64_t key, v;
        if (!read_varint(p, len, &i, &key))
            return true;
        switch (key & 7) {
        case 0:
            if (!read_varint(p, len, &i, &v))
                return true;
            break;
        case 1:
            if (len - i < 8)
                return true;
            i += 8;
            break;
        case 5:
            if (len - i < 4)
                return true;
            i += 4;
            break;
        case 2: {
            if (!read_varint(p, len, &i, &v) || v > len - i)
                return true;
            const ProtobufCFieldDescriptor *f =
                key >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3))
                    : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !nesting_ok(f->descriptor, p + i, (size_t)v, depth + 1))
                return false;
            i += (size_t)v;
            break;
        }
        default:
            return true;
        }
    }
    return true;
}

int pb_scan_bytes_field(const uint8_t *buf, size_t len, uint32_t field, size_t *count,
                        size_t *max_len)
{
    *count = *max_len = 0;
    size_t i = 0;
    while (i < len) {
        uint64_t key, v;
        if (!read_varint(buf, len, &i, &key))
            return -EINVAL;
        switch (key & 7) {
        case 0:
            if (!read_varint(buf, len, &i, &v))
                return -EINVAL;
            break;
        case 1:
        case 5: {
            size_t w = (key & 7) == 1 ? 8 : 4;
            if (len - i < w)
                return -EINVAL;
            i += w;
            break;
        }
        case 2:
            if (!read_varint(buf, len, &i, &v) || v > len - i)
                return -EINVAL;
            if (key >> 3 == field) {
                (*count)++;
                if ((size_t)v > *max_len)
                    *max_len = (size_t)v;
            }
            i += (size_t)v;
            break;
        default:
            return -EINVAL;
        }
    }
    return 0;
}

ProtobufCMessage *pb_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                            struct err *e)
{
    static const uint8_t empty[1];
    if (!buf)
        buf = empty, len = 0;
    if (!nesting_ok(d, buf, len, 0)) {
        err_set(e, "failed to decode %s message: nested too deeply", d->short_name);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, buf);
    if (!m)
        err_set(e, "failed to decode %s message", d->short_name);
    return m;
}

int pb_pack(const ProtobufCMessage *m, uint8_t **out, size_t *out_len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return -ENOMEM;
    *out_len = protobuf_c_message_pack(m, buf);
    *out = buf;
    return 0;
}

/* ---- encode-side allocations -------------------------------------------------------------- */

void *pb_pool_alloc(struct pb_pool *p, size_t size)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        void **np = realloc(p->ptrs, cap * sizeof(*np));
        if (!np)
            return NULL;
        p->ptrs = np;
        p->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (m)
        p->ptrs[p->n++] = m;
    return m;
}

ProtobufCMessage *pb_pool_msg(struct pb_pool *p, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = pb_pool_alloc(p, d->sizeof_message);
    if (m)
        protobuf_c_message_init(d, m);
    return m;
}

void pb_pool_free(struct pb_pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->ptrs[i]);
    free(p->ptrs);
    memset(p, 0, sizeof(*p));
}
