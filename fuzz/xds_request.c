/* Fuzz target: DiscoveryRequest decoding (what `manage` reads from any client), the
 * resource_names pre-check in front of it (which must agree with the decoder on every input
 * the decoder accepts), and a re-encode/decode round trip of whatever decodes. */
#include "base/err.h"
#include "xds/resources.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct xds_request rq;
    struct err e = {{0}};
    memset(&rq, 0, sizeof(rq));
    int checked = xds_request_check_names(data, size, SIZE_MAX, SIZE_MAX, &e);
    if (xds_request_decode(data, size, &rq, &e) == 0) {
        if (checked != 0)
            abort(); /* the pre-check refused a request the decoder takes */
        size_t n = rq.n_resource_names;
        if (n && xds_request_check_names(data, size, n - 1, SIZE_MAX, &e) != -E2BIG)
            abort(); /* it miscounted the names */
        if (xds_request_check_names(data, size, n, SIZE_MAX, &e) != 0)
            abort();
        uint8_t *buf = NULL;
        size_t len = 0;
        if (xds_request_encode(&rq, &buf, &len) == 0) {
            struct xds_request again;
            memset(&again, 0, sizeof(again));
            if (xds_request_decode(buf, len, &again, &e) != 0)
                abort(); /* what we encode must decode */
            xds_request_free(&again);
            free(buf);
        }
    }
    xds_request_free(&rq);
    return 0;
}
