/* Fuzz target: the QCMP parser must classify any bytes without reading out of bounds, and
 * whatever it accepts must re-encode to the same bytes. */
#include "qcmp/codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qcmp_packet p;
    if (qcmp_parse(data, size, &p, NULL) == QCMP_OK) {
        uint8_t out[QCMP_REPLY_LEN];
        size_t n = qcmp_encode(&p, out);
        if (n != size || memcmp(out, data, n) != 0)
            abort();
    }
    return 0;
}
