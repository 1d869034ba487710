/* Base64 codec with the strict rules Quilkin's tokens use (spec config.md §4.2). */
#include "base/b64.h"

#include <errno.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int b64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len)
{
    if (len % 4 != 0)
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int pad = 0;
        if (last) {
            if (in[i + 3] == '=')
                pad = in[i + 2] == '=' ? 2 : 1;
        }
        int v[4];
        for (int k = 0; k < 4 - pad; k++) {
            v[k] = val(in[i + k]);
            if (v[k] < 0)
                return -EINVAL;
        }
        if (pad == 2) {
            if (v[1] & 0x0f) /* non-canonical trailing bits */
                return -EINVAL;
            out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
        } else if (pad == 1) {
            if (v[2] & 0x03)
                return -EINVAL;
            out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
            out[o++] = (uint8_t)(v[1] << 4 | v[2] >> 2);
        } else {
            out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
            out[o++] = (uint8_t)(v[1] << 4 | v[2] >> 2);
            out[o++] = (uint8_t)(v[2] << 6 | v[3]);
        }
    }
    *out_len = o;
    return 0;
}

void b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[w >> 18 & 63];
        out[o++] = alphabet[w >> 12 & 63];
        out[o++] = alphabet[w >> 6 & 63];
        out[o++] = alphabet[w & 63];
    }
    if (n - i == 1) {
        uint32_t w = (uint32_t)in[i] << 16;
        out[o++] = alphabet[w >> 18 & 63];
        out[o++] = alphabet[w >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[w >> 18 & 63];
        out[o++] = alphabet[w >> 12 & 63];
        out[o++] = alphabet[w >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}
