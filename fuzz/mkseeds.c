/* mkseeds.c — writes one valid encoding of each message type into the directory argv[1], as the
 * fuzzer's starting corpus. Built and run by `make fuzz`. */
#include <stdio.h>
#include <string.h>

#include "proto.h"

static void put(const char *dir, const char *name, const proto_msg *m) {
    msgpack_sbuffer sb;
    char path[512], err[256];
    msgpack_sbuffer_init(&sb);
    if (proto_encode(m, &sb, err, sizeof(err)) == 0) {
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(sb.data, 1, sb.size, f);
            fclose(f);
        }
    } else {
        fprintf(stderr, "mkseeds: %s: %s\n", name, err);
    }
    msgpack_sbuffer_destroy(&sb);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: mkseeds DIR\n");
        return 2;
    }
    static const int32_t ids[3] = {15496, 11, 995};
    static const proto_bias bias[1] = {{50256, -100}};
    static const proto_worker_info wl[1] = {{{"w0", 2}, 42, 64, 60, 4, 1, 1000}};
    proto_msg m;
    for (int t = PROTO_T_NONE + 1; t < PROTO_T_COUNT; t++) {
        proto_msg_init(&m, (proto_type)t);
        m.id = (proto_cid){1, 0, {"req-1", 5}};
        m.rid = 7;
        m.prompt = (proto_str){"Hello, world", 12};
        m.prompt_ids = ids;
        m.n_prompt_ids = 3;
        m.tokens = ids;
        m.n_tokens = 3;
        m.text = (proto_str){" piece", 6};
        m.stop[0] = (proto_str){"\n\n", 2};
        m.n_stop = 1;
        m.logit_bias = bias;
        m.n_logit_bias = 1;
        m.code = PROTO_CODE_OVERLOADED;
        m.message = (proto_str){"queue full", 10};
        m.slots = 64;
        m.credit = 1;
        m.worker_list = wl;
        m.n_worker_list = 1;
        switch (t) {
        case PROTO_T_SUBMIT: m.has = PROTO_HAS(PF_PROMPT); break;
        case PROTO_T_REQUEST: m.has = PROTO_HAS(PF_PROMPT_IDS) | PROTO_HAS(PF_RESUME_IDS); m.resume_ids = ids; m.n_resume_ids = 1; break;
        case PROTO_T_CANCEL: case PROTO_T_DONE: m.has = PROTO_HAS(PF_ID); break;
        case PROTO_T_TOKEN: m.has = PROTO_HAS(PF_RID) | PROTO_HAS(PF_LOGPROB); m.logprob = -0.5f; break;
        case PROTO_T_ERROR: m.has = PROTO_HAS(PF_ID); break;
        default: m.has = 0;
        }
        put(argv[1], proto_type_name((proto_type)t), &m);
    }
    return 0;
}
