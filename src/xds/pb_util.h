/* Protobuf-c helpers private to src/xds: the depth-checked unpack every decoder of untrusted
 * bytes goes through, packing into a malloc'd buffer, and the pool that owns the pieces of a
 * message tree being built for packing. Knows no xDS message; does no I/O. The prefix is pb_
 * (not pb_util_): every name here is about protobuf-c, so the shorter prefix reads better. */
#ifndef QK_XDS_PB_UTIL_H
#define QK_XDS_PB_UTIL_H

#include <protobuf-c/protobuf-c.h>

#include <stddef.h>
#include <stdint.h>

struct err;

/* Unpacks buf[0..len) as a d message. Borrows buf (NULL is read as empty). Rejects input in
 * which a message field nests more than 200 levels deep before protobuf-c sees it (its
 * recursion is unbounded, so hostile input could exhaust the stack); O(len). Returns the
 * message, which the caller frees with protobuf_c_message_free_unpacked(m, NULL), or NULL with
 * e set to "failed to decode NAME message" (": nested too deeply" appended for the depth
 * check). Any thread. */
ProtobufCMessage *pb_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                            struct err *e);

/* Counts the top-level length-delimited occurrences of field in buf[0..len) (a repeated
 * string, say) and the longest, without unpacking anything: O(len), no allocation. 0, or
 * -EINVAL when the bytes are not a well-formed message. */
int pb_scan_bytes_field(const uint8_t *buf, size_t len, uint32_t field, size_t *count,
                        size_t *max_len);

/* Packs m into a malloc'd buffer (at least one byte, so never NULL on success) that the caller
 * frees: *out, *out_len bytes. 0 or -ENOMEM. Any thread. */
int pb_pack(const ProtobufCMessage *m, uint8_t **out, size_t *out_len);

/* The allocations of one message tree under construction (encode side), freed in one go by
 * pb_pool_free however far the build got. Embedded by the caller, zero-initialised; one thread
 * at a time. */
struct pb_pool {
    void **ptrs; /* owned, each owned */
    size_t n, cap;
};

/* A zeroed block of size bytes (at least one), owned by p. NULL on OOM. */
void *pb_pool_alloc(struct pb_pool *p, size_t size);

/* A d message with its defaults set (like the generated __init), owned by p. NULL on OOM. */
ProtobufCMessage *pb_pool_msg(struct pb_pool *p, const ProtobufCMessageDescriptor *d);

/* Frees everything p owns, and zeroes p so it can be reused. */
void pb_pool_free(struct pb_pool *p);

/* Protobuf-c gives "" for absent proto3 strings, but a pointer is never trusted: NULL -> "". */
static inline const char *pb_str(const char *s)
{
    return s ? s : "";
}

#endif
