/* sse.c — a call's server-sent-event stream: events are appended to the call's buffer as frames
 * arrive, and MHD pulls them through the content reader below. When the buffer is empty and the
 * stream is not over, the reader suspends the connection (no busy wait); routes_wake() resumes it. */
#include <stdlib.h>
#include <string.h>

#include "gw.h"

/* Appends n bytes to c->out. 0, or -1 if that would leave more than limit bytes unread. */
static int out_append(hcall *c, const char *s, size_t n, size_t limit) {
    if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len - c->out_off + n > limit) return -1;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off > 0) { /* slide the unread part to the front first */
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n) cap *= 2;
        if (cap != c->out_cap) {
            char *p = realloc(c->out, cap);
            if (!p) return -1;
            c->out = p;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}

int sse_event(gw *g, hcall *c, json_t *json) {
    if (c->gone) {
        json_decref(json);
        return -1;
    }
    size_t limit = (size_t)g->stream_buffer_bytes;
    if (!json) return out_append(c, "data: [DONE]\n\n", 14, limit + 64);
    char *s = json_dumps(json, JSON_COMPACT);
    json_decref(json);
    if (!s) return -1;
    int rc = out_append(c, "data: ", 6, limit);
    if (rc == 0) rc = out_append(c, s, strlen(s), limit);
    if (rc == 0) rc = out_append(c, "\n\n", 2, limit + 2);
    free(s);
    return rc;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    hcall *c = cls;
    if (c->gone) return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t avail = c->out_len - c->out_off;
    if (avail > 0) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, c->out + c->out_off, n);
        c->out_off += n;
        return (ssize_t)n;
    }
    if (c->finished) return MHD_CONTENT_READER_END_OF_STREAM;
    /* nothing yet: sleep until the broker sends something for this call */
    MHD_suspend_connection(c->conn);
    c->suspended = 1;
    routes_watch(c->g, c);
    return 0;
}

struct MHD_Response *sse_response(hcall *c) {
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, c, NULL);
    if (!r) return NULL;
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return r;
}
