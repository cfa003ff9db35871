/* fuzz_proto.c — libFuzzer target for the protocol decoder.
 *
 * Any input must decode to a message or a specific error, without a crash, a leak or a read out of
 * bounds (ASan/UBSan), and within the decoder's memory bound (run with -malloc_limit_mb). Whatever
 * is accepted must encode again, and that encoding must decode to the same type: the decoder never
 * accepts what our own encoder would refuse to send.
 *   make fuzz              (bounded run; corpus in fuzz-corpus/, seeds from fuzz/seeds/) */
#include <stdint.h>
#include <stdlib.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    proto_msg m, again;
    char err[256];
    int rc = proto_decode(&m, data, size, err, sizeof(err));
    if (rc == PROTO_OK) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        if (proto_encode(&m, &sb, err, sizeof(err)) < 0) abort();
        if (proto_decode(&again, sb.data, sb.size, err, sizeof(err)) != PROTO_OK) abort();
        if (again.type != m.type) abort();
        proto_msg_destroy(&again);
        msgpack_sbuffer_destroy(&sb);
    } else if (rc > 0 || err[0] == 0) {
        abort(); /* failures are negative and always explained */
    }
    proto_msg_destroy(&m);
    return 0;
}
