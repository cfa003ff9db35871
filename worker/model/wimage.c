/* wimage.c — see wimage.h. */
#include "wimage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define WIMAGE_MAGIC "GPT2DWI1"
#define WIMAGE_HEADER_BYTES 4096
#define WIMAGE_HUGE ((size_t)2 << 20)
#define WIMAGE_CHUNK ((size_t)2 << 20) /* write size: whole large folios in the page cache */

typedef struct {
    char magic[8];
    uint32_t header_bytes;   /* sizeof(wimage_header) */
    uint32_t packing, dtype, tied;
    int32_t n_layer, n_embd, n_head, n_ctx, n_vocab;
    float ln_eps;
    uint8_t ckpt_hash[16];
    uint64_t data_off, data_bytes;
    uint64_t data_hash;      /* XXH3-64 of the image */
    uint64_t header_hash;    /* XXH3-64 of this struct with header_hash = 0 */
} wimage_header;

static uint64_t header_hash(wimage_header h) {
    h.header_hash = 0;
    return XXH3_64bits(&h, sizeof h);
}

int wimage_path(char *buf, size_t cap, const char *dir, const wimage_key *k, const char *dtype_name) {
    char hex[33];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", k->ckpt_hash[i]);
    int n = snprintf(buf, cap, "%s/gpt2-%s-p%u-%s.img", dir, hex, k->packing, dtype_name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int why_fail(char *why, size_t len, const char *fmt, const char *path, const char *detail) {
    snprintf(why, len, fmt, path, detail);
    return -1;
}

/* The header of fd checked against k. 0, or -1 with why. */
static int header_check(int fd, const char *path, const wimage_key *k, wimage_header *h, char *why, size_t whylen) {
    struct stat st;
    if (fstat(fd, &st) != 0) return why_fail(why, whylen, "%s: %s", path, strerror(errno));
    if (pread(fd, h, sizeof *h, 0) != (ssize_t)sizeof *h)
        return why_fail(why, whylen, "%s: %s", path, "shorter than its header");
    if (memcmp(h->magic, WIMAGE_MAGIC, 8) != 0 || h->header_bytes != sizeof *h)
        return why_fail(why, whylen, "%s: %s", path, "not a gpt2d weight image (bad magic)");
    if (header_hash(*h) != h->header_hash)
        return why_fail(why, whylen, "%s: %s", path, "header checksum mismatch");
    if (memcmp(h->ckpt_hash, k->ckpt_hash, 16) != 0 || h->packing != k->packing || h->dtype != k->dtype ||
        h->n_layer != k->cfg.n_layer || h->n_embd != k->cfg.n_embd || h->n_head != k->cfg.n_head ||
        h->n_ctx != k->cfg.n_ctx || h->n_vocab != k->cfg.n_vocab || h->ln_eps != k->cfg.ln_eps)
        return why_fail(why, whylen, "%s: %s", path, "made for another checkpoint, shape or packing");
    if (h->data_off != WIMAGE_DATA_OFF || h->data_bytes == 0 ||
        (uint64_t)st.st_size != h->data_off + h->data_bytes)
        return why_fail(why, whylen, "%s: %s", path, "size does not match its header (truncated?)");
    return 0;
}

int wimage_map(const char *path, wimage_key *k, int no_huge, wimage_mapping *out, char *why, size_t whylen) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        return why_fail(why, whylen, "%s: %s", path, strerror(errno));
    }
    wimage_header h;
    if (header_check(fd, path, k, &h, why, whylen) != 0) {
        close(fd);
        return -1;
    }
    size_t len = h.data_off + h.data_bytes;
    /* reserve len + 2 MB, then put the file at the first 2 MB boundary inside */
    char *res = mmap(NULL, len + WIMAGE_HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (res == MAP_FAILED) {
        close(fd);
        return why_fail(why, whylen, "%s: cannot map: %s", path, strerror(errno));
    }
    char *base = (char *)(((uintptr_t)res + WIMAGE_HUGE - 1) & ~(uintptr_t)(WIMAGE_HUGE - 1));
    if (base > res) munmap(res, (size_t)(base - res));
    munmap(base + len, (size_t)(res + len + WIMAGE_HUGE - (base + len)));
    void *m = mmap(base, len, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        munmap(base, len);
        return why_fail(why, whylen, "%s: cannot map: %s", path, strerror(errno));
    }
    madvise(base + h.data_off, h.data_bytes, no_huge ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
    out->map = m;
    out->map_len = len;
    out->data = base + h.data_off;
    out->data_bytes = h.data_bytes;
    if (XXH3_64bits(out->data, out->data_bytes) != h.data_hash) {
        wimage_unmap(out);
        return why_fail(why, whylen, "%s: %s", path, "image checksum mismatch (corrupt)");
    }
    k->tied = h.tied;
    k->data_bytes = h.data_bytes;
    return 0;
}

void wimage_unmap(wimage_mapping *m) {
    if (m->map) munmap(m->map, m->map_len);
    memset(m, 0, sizeof *m);
}

static int write_all(int fd, const void *p, size_t n, off_t off) {
    const char *c = p;
    while (n > 0) {
        size_t part = n < WIMAGE_CHUNK ? n : WIMAGE_CHUNK;
        ssize_t w = pwrite(fd, c, part, off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        off += w;
        n -= (size_t)w;
    }
    return 0;
}

int wimage_write(const char *path, const wimage_key *k, const void *data, char *err, size_t errlen) {
    wimage_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, WIMAGE_MAGIC, 8);
    h.header_bytes = sizeof h;
    h.packing = k->packing;
    h.dtype = k->dtype;
    h.tied = k->tied;
    h.n_layer = k->cfg.n_layer;
    h.n_embd = k->cfg.n_embd;
    h.n_head = k->cfg.n_head;
    h.n_ctx = k->cfg.n_ctx;
    h.n_vocab = k->cfg.n_vocab;
    h.ln_eps = k->cfg.ln_eps;
    memcpy(h.ckpt_hash, k->ckpt_hash, 16);
    h.data_off = WIMAGE_DATA_OFF;
    h.data_bytes = k->data_bytes;
    h.data_hash = XXH3_64bits(data, k->data_bytes);
    h.header_hash = header_hash(h);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = write_all(fd, &h, sizeof h, 0) == 0 && write_all(fd, data, k->data_bytes, (off_t)WIMAGE_DATA_OFF) == 0;
    int saved = errno;
    if (close(fd) != 0 && ok) ok = 0, saved = errno;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) saved = errno;
        snprintf(err, errlen, "%s: %s", ok ? path : tmp, strerror(saved));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int wimage_lock(const char *dir, const char *path, char *err, size_t errlen) {
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    char lock[4200];
    snprintf(lock, sizeof lock, "%s.lock", path);
    int fd = open(lock, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", lock, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        snprintf(err, errlen, "%s: flock: %s", lock, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void wimage_unlock(int fd) {
    if (fd >= 0) close(fd); /* releases the flock */
}

size_t wimage_huge_bytes(const void *addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    char line[512], want[32];
    snprintf(want, sizeof want, "%lx-", (unsigned long)(uintptr_t)addr);
    size_t kb = 0, v;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        size_t hex = strspn(line, "0123456789abcdef"); /* a VMA line: "start-end perms ..." */
        int is_vma = hex > 0 && line[hex] == '-';
        if (is_vma) {
            if (in) break;
            in = strncmp(line, want, strlen(want)) == 0;
        } else if (in && (sscanf(line, "FilePmdMapped: %zu kB", &v) == 1 ||
                          sscanf(line, "ShmemPmdMapped: %zu kB", &v) == 1 ||
                          sscanf(line, "AnonHugePages: %zu kB", &v) == 1)) {
            kb += v;
        }
    }
    fclose(f);
    return kb << 10;
}

/* Feeds the file dir/name into st. 0 or -1 with err. */
static int hash_file(XXH3_state_t *st, const char *dir, const char *name, char *err, size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    uint64_t len = (uint64_t)sb.st_size;
    XXH3_128bits_update(st, &len, sizeof len); /* the length first: no two files concatenate alike */
    if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        madvise(m, (size_t)sb.st_size, MADV_SEQUENTIAL);
        XXH3_128bits_update(st, m, (size_t)sb.st_size);
        munmap(m, (size_t)sb.st_size);
    }
    close(fd);
    return 0;
}

int wimage_hash_checkpoint(const char *dir, uint8_t out[16], char *err, size_t errlen) {
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_128bits_reset(&st);
    if (hash_file(&st, dir, "config.json", err, errlen) != 0 ||
        hash_file(&st, dir, "model.safetensors", err, errlen) != 0)
        return -1;
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
    memcpy(out, c.digest, 16);
    return 0;
}
