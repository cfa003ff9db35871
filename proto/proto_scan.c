/* proto_scan.c — an allocation-free structural check of a msgpack byte string, run before msgpack-c.
 *
 * msgpack-c allocates an array's or map's element storage from the count in its header, before it
 * has seen the elements: a 5-byte input can ask for gigabytes. proto_scan() walks the encoding
 * with an explicit stack and refuses input that is truncated, has trailing bytes, nests deeper than
 * max_depth, declares more elements than the remaining bytes could hold, or holds more than
 * max_objects objects. What passes makes msgpack-c allocate O(len) bytes at most. */
#include "proto_scan.h"

#include <stdint.h>

typedef struct {
    const uint8_t *p;
    size_t n;   /* bytes left */
} scan_cur;

static int scan_take(scan_cur *c, size_t k, uint64_t *val) {
    if (c->n < k) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < k; i++) v = (v << 8) | c->p[i];
    c->p += k;
    c->n -= k;
    if (val) *val = v;
    return 0;
}

static int scan_skip(scan_cur *c, uint64_t k) {
    if (c->n < k) return -1;
    c->p += k;
    c->n -= k;
    return 0;
}

/* Reads one object header. *children receives the number of objects it contains (2n for a map).
 * 0, or -1 if the bytes end or the header is invalid (0xc1). */
static int scan_header(scan_cur *c, uint64_t *children) {
    uint64_t len = 0, b;
    *children = 0;
    if (scan_take(c, 1, &b) < 0) return -1;
    if (b <= 0x7f || b >= 0xe0) return 0;               /* fixint */
    if (b >= 0x80 && b <= 0x8f) { *children = 2 * (b & 0x0f); return 0; }
    if (b >= 0x90 && b <= 0x9f) { *children = b & 0x0f; return 0; }
    if (b >= 0xa0 && b <= 0xbf) return scan_skip(c, b & 0x1f);
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3: return 0;          /* nil, false, true */
    case 0xc4: case 0xd9: return scan_take(c, 1, &len) < 0 ? -1 : scan_skip(c, len);
    case 0xc5: case 0xda: return scan_take(c, 2, &len) < 0 ? -1 : scan_skip(c, len);
    case 0xc6: case 0xdb: return scan_take(c, 4, &len) < 0 ? -1 : scan_skip(c, len);
    case 0xc7: return scan_take(c, 1, &len) < 0 ? -1 : scan_skip(c, len + 1);
    case 0xc8: return scan_take(c, 2, &len) < 0 ? -1 : scan_skip(c, len + 1);
    case 0xc9: return scan_take(c, 4, &len) < 0 ? -1 : scan_skip(c, len + 1);
    case 0xca: return scan_skip(c, 4);
    case 0xcb: return scan_skip(c, 8);
    case 0xcc: case 0xd0: return scan_skip(c, 1);
    case 0xcd: case 0xd1: return scan_skip(c, 2);
    case 0xce: case 0xd2: return scan_skip(c, 4);
    case 0xcf: case 0xd3: return scan_skip(c, 8);
    case 0xd4: return scan_skip(c, 2);
    case 0xd5: return scan_skip(c, 3);
    case 0xd6: return scan_skip(c, 5);
    case 0xd7: return scan_skip(c, 9);
    case 0xd8: return scan_skip(c, 17);
    case 0xdc: if (scan_take(c, 2, &len) < 0) return -1; *children = len; return 0;
    case 0xdd: if (scan_take(c, 4, &len) < 0) return -1; *children = len; return 0;
    case 0xde: if (scan_take(c, 2, &len) < 0) return -1; *children = 2 * len; return 0;
    case 0xdf: if (scan_take(c, 4, &len) < 0) return -1; *children = 2 * len; return 0;
    default: return -1;                                  /* 0xc1: never used */
    }
}

int proto_scan(const void *buf, size_t len, int max_depth, size_t max_objects) {
    scan_cur c = {buf, len};
    uint64_t left[PROTO_SCAN_MAX_DEPTH + 1]; /* objects still to read at each open level */
    int depth = 0;
    size_t objects = 0;
    if (max_depth > PROTO_SCAN_MAX_DEPTH) max_depth = PROTO_SCAN_MAX_DEPTH;
    left[0] = 1;
    while (depth >= 0) {
        if (left[depth] == 0) { depth--; continue; }
        left[depth]--;
        uint64_t children;
        if (scan_header(&c, &children) < 0) return PROTO_SCAN_TRUNCATED;
        if (++objects > max_objects) return PROTO_SCAN_TOO_MANY;
        if (children == 0) {
            /* an empty container is a leaf too; only non-empty ones open a level */
            continue;
        }
        if (children > c.n) return PROTO_SCAN_TRUNCATED; /* each child needs at least one byte */
        if (depth + 1 > max_depth) return PROTO_SCAN_TOO_DEEP;
        left[++depth] = children;
    }
    return c.n == 0 ? PROTO_SCAN_OK : PROTO_SCAN_TRAILING;
}
