/* safetensors.h — the safetensors container: parse and validate a file image, build a header.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of JSON, then the data area.
 * The JSON maps tensor names to {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}
 * (offsets relative to the data area); the optional "__metadata__" entry is ignored.
 * st_parse() validates everything a reader relies on before anything is dereferenced: the header
 * length (>= 2, <= ST_MAX_HEADER, inside the file), the JSON (an object, no duplicate keys), every
 * entry (a known dtype, a shape of non-negative integers whose element count does not overflow,
 * 0 <= begin <= end <= data size, end - begin == numel * dtype size), no two tensors overlapping, and
 * the data area ending exactly where the last tensor does (a shorter file is reported as truncated).
 * Dtypes outside F32/F16/BF16 are parsed (so unused buffers of other types do not stop a load) and
 * left to the caller to refuse. Error messages name the tensor and the problem but not the file:
 * callers prefix the file name. The parsed st_file points into the caller's bytes (no copy).
 * st_header_build() makes the header of a file to write, HF style (padded with spaces to 8 bytes). */
#ifndef GPT2D_SAFETENSORS_H
#define GPT2D_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_HEADER (100u << 20) /* bytes of header JSON we accept */
#define ST_MAX_DIMS 8              /* rank of a tensor */

typedef enum {
    ST_F32, ST_F16, ST_BF16,                 /* the dtypes a GPT-2 loader can use */
    ST_F64, ST_I64, ST_U64, ST_I32, ST_U32,  /* valid safetensors dtypes it cannot */
    ST_I16, ST_U16, ST_I8, ST_U8, ST_BOOL, ST_F8_E4M3, ST_F8_E5M2,
    ST_NDTYPES
} st_dtype;

typedef struct {
    const char *name;        /* points into st_file's parsed JSON; valid until st_destroy() */
    st_dtype dtype;
    int ndim;                /* 0..ST_MAX_DIMS (0: a scalar, numel 1) */
    uint64_t shape[ST_MAX_DIMS];
    uint64_t numel;          /* product of shape */
    const uint8_t *data;     /* numel * st_dtype_size(dtype) bytes inside the file image */
    size_t nbytes;
} st_tensor;

typedef struct {
    st_tensor *tensors;      /* [n_tensors], sorted by name */
    int n_tensors;
    void *json;              /* (private) the parsed header; owns the names */
} st_file;

/* Bytes per element of dtype; its safetensors spelling ("F32", ...). */
size_t st_dtype_size(st_dtype dtype);
const char *st_dtype_name(st_dtype dtype);

/* Parses and validates the file image bytes[0..len) into f (zeroed first). f points into bytes,
 * which must outlive it. 0, or -1 with a message in err (f left empty). Release with st_destroy(). */
int st_parse(st_file *f, const void *bytes, size_t len, char *err, size_t errlen);

/* Releases what st_parse() took; safe on a zeroed or already destroyed f. */
void st_destroy(st_file *f);

/* The tensor called name, or NULL. O(log n). */
const st_tensor *st_find(const st_file *f, const char *name);

/* One tensor to write: st_header_build() assigns offsets in the order given, back to back. */
typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
} st_entry;

/* Builds the first bytes of a safetensors file for entries[0..n): the 8-byte length and the
 * JSON header ({"__metadata__":{"format":"pt"}, then the entries in order}) padded with spaces so
 * the data area starts at a multiple of 8. Returns a malloc'd buffer of *len bytes (the caller
 * frees it; the tensors' data follows it back to back in entry order), or NULL on a bad entry or
 * out of memory. *data_len receives the size of the data area. */
uint8_t *st_header_build(const st_entry *entries, int n, size_t *len, uint64_t *data_len);

#endif
