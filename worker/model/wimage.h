/* wimage.h — packed weight image files: the on-disk cache that lets every worker on a machine map
 * one copy of the packed weights (weights.h decides what goes in them; this module only stores,
 * checks and maps bytes).
 *
 * File <dir>/gpt2-<checkpoint hash>-p<packing>-<dtype>.img:
 *   [0, 4096)              wimage_header, then zeros
 *   [WIMAGE_DATA_OFF, +n)  the image (n = data_bytes), 2 MB-aligned in the file so that a mapping
 *                          at a 2 MB-aligned address can use 2 MB pages
 * The header names its key (checkpoint hash, packing version, dtype, shape) and carries XXH3-64
 * checksums of itself and of the image. wimage_map() checks all of it, the image checksum included
 * (reading the image once also faults it in): a truncated, corrupt or foreign file is refused with
 * the reason, never mapped. wimage_write() writes <path>.tmp.<pid> and renames it into place, so a
 * reader sees the old file, no file, or the whole new one; a process that has the old one mapped
 * keeps it. Builders serialize on <path>.lock (flock) so N workers starting at once build once. */
#ifndef GPT2D_WIMAGE_H
#define GPT2D_WIMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

#define WIMAGE_DATA_OFF ((size_t)2 << 20)

typedef struct {
    uint8_t ckpt_hash[16];   /* the checkpoint's content hash */
    uint32_t packing;        /* GPT2_PACKING_VERSION */
    uint32_t dtype;          /* mm_dtype of the panels */
    gpt2_config cfg;         /* the shape */
    uint32_t tied;           /* lm_head tied to wte (decides the layout); wimage_map fills it */
    uint64_t data_bytes;     /* image size; wimage_map fills it */
} wimage_key;

typedef struct {
    void *map;               /* the whole file's mapping */
    size_t map_len;
    const void *data;        /* the image (map + WIMAGE_DATA_OFF) */
    size_t data_bytes;
} wimage_mapping;

/* <dir>/gpt2-<hash hex>-p<packing>-<dtype name>.img into buf. 0, or -1 if it does not fit. */
int wimage_path(char *buf, size_t cap, const char *dir, const wimage_key *k, const char *dtype_name);

/* Maps path read-only (MAP_SHARED) at a 2 MB-aligned address, huge pages advised unless no_huge.
 * Returns 0 (k->tied and k->data_bytes filled from the file), 1 if there is no such file, or -1 if
 * the file exists but is unusable (why says what failed: a short or corrupt header, another key, a
 * size or checksum mismatch). */
int wimage_map(const char *path, wimage_key *k, int no_huge, wimage_mapping *out, char *why, size_t whylen);
void wimage_unmap(wimage_mapping *m); /* safe on a zeroed or unmapped one */

/* Writes data (k->data_bytes) as the image file at path, atomically (tmp + rename).
 * 0, or -1 with err (nothing left behind). */
int wimage_write(const char *path, const wimage_key *k, const void *data, char *err, size_t errlen);

/* Takes <path>.lock exclusively (creating dir if needed, mode 0700): the fd, or -1 with err. */
int wimage_lock(const char *dir, const char *path, char *err, size_t errlen);
void wimage_unlock(int fd);

/* Bytes of the mapping that starts at addr mapped with PMD (2 MB) pages, from /proc/self/smaps (0 if
 * unknown). */
size_t wimage_huge_bytes(const void *addr);

/* XXH3-128 of config.json and model.safetensors in dir (the checkpoint's identity). 0 or -1 with err. */
int wimage_hash_checkpoint(const char *dir, uint8_t out[16], char *err, size_t errlen);

#endif
