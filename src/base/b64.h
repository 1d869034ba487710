/* Standard base64 (RFC 4648 §4 alphabet, '=' padding required). Pure functions. */
#ifndef QK_BASE_B64_H
#define QK_BASE_B64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes needed to decode `len` characters (an upper bound). */
static inline size_t b64_decoded_cap(size_t len)
{
    return len / 4 * 3 + 3;
}

/* Length of the encoding of n bytes, excluding the terminating NUL. */
static inline size_t b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Strict decode: length a multiple of 4, padding only at the end, non-canonical trailing
 * bits rejected, no whitespace. Writes at most b64_decoded_cap(len) bytes to out.
 * Returns 0 and sets *out_len, or -EINVAL. */
int b64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len);

/* Encodes n bytes into out (b64_encoded_len(n) + 1 bytes, NUL-terminated). */
void b64_encode(const uint8_t *in, size_t n, char *out);

#endif
