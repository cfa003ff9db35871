/* proto_scan.h — checks the structure of untrusted msgpack bytes without allocating, so that
 * msgpack-c's unpacker (which allocates from declared counts) only ever sees bounded input.
 * See proto_scan.c for the rules. */
#ifndef GPT2D_PROTO_SCAN_H
#define GPT2D_PROTO_SCAN_H

#include <stddef.h>

#define PROTO_SCAN_MAX_DEPTH 16

enum {
    PROTO_SCAN_OK = 0,
    PROTO_SCAN_TRUNCATED = -1, /* ends early, invalid header, or a count larger than the bytes left */
    PROTO_SCAN_TRAILING = -2,  /* bytes after the one top-level object */
    PROTO_SCAN_TOO_DEEP = -3,  /* nesting beyond max_depth (top-level container = depth 1) */
    PROTO_SCAN_TOO_MANY = -4,  /* more than max_objects objects */
};

/* Returns PROTO_SCAN_OK if buf holds exactly one well-formed msgpack object within the bounds,
 * else the first problem found. Never reads beyond len, never allocates. */
int proto_scan(const void *buf, size_t len, int max_depth, size_t max_objects);

#endif
