/* bpe.h — GPT-2's byte-level BPE tokenizer, exact (matches OpenAI's encoder.py).
 *
 * Encoding: the pre-tokenizer regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (PCRE2, UTF mode, JIT; \s means Unicode White_Space as in Python's `regex`, so U+0085 is space
 * and U+FEFF is not) splits text into words; each word's bytes are mapped through GPT-2's
 * byte<->unicode table and merged by rank; results are cached per word. `<|endoftext|>` in text is
 * ordinary text unless the caller allows special tokens. Invalid UTF-8 input is refused (-1).
 * Decoding: ids -> exact bytes. For streaming, bpe_stream holds back bytes of a UTF-8 character
 * split across tokens until the character completes, so no piece it emits is broken UTF-8.
 * A bpe_tokenizer is read-only after bpe_load() except for its word cache, so one instance
 * must not be used from two threads at once. */
#ifndef GPT2D_BPE_H
#define GPT2D_BPE_H

#include <stddef.h>

#define BPE_EOT 50256 /* <|endoftext|> */

typedef struct bpe_tokenizer bpe_tokenizer;

/* Loads dir/vocab.json + dir/merges.txt, or else dir/encoder.json + dir/vocab.bpe.
 * Returns NULL with a message naming the file and the problem in err. */
bpe_tokenizer *bpe_load(const char *dir, char *err, size_t errlen);
void bpe_free(bpe_tokenizer *t); /* NULL-safe */

int bpe_vocab_size(const bpe_tokenizer *t); /* 50257 for GPT-2 */

/* Encodes len bytes of text into ids (capacity cap). allow_special: `<|endoftext|>` becomes
 * id 50256 (the text is encoded in pieces around it).
 * Returns the number of ids (may exceed cap: then only cap were written and the caller retries
 * with more room; there are never more ids than bytes), or -1 if text is not valid UTF-8 (or,
 * in practice never, out of memory). */
long bpe_encode(bpe_tokenizer *t, const char *text, size_t len, int allow_special,
                int *ids, long cap);

/* The bytes of one token (not NUL-terminated), or NULL for an id out of range. */
const char *bpe_token_bytes(const bpe_tokenizer *t, int id, size_t *len);

/* Decodes n ids into out (capacity cap). Returns the byte length (may exceed cap: then the output
 * is truncated), or -1 if an id is out of range. Raw bytes: may end mid-character. */
long bpe_decode(const bpe_tokenizer *t, const int *ids, long n, char *out, long cap);

/* Streaming decode: feed tokens one at a time; each call appends to out only complete UTF-8
 * (bytes of an unfinished character are held). Invalid sequences are emitted as U+FFFD once proven
 * invalid, one per maximal invalid subpart (as Python's errors="replace"). bpe_stream_flush()
 * emits what is held at the end (U+FFFD for an unfinished character). */
typedef struct {
    unsigned char held[8]; /* bytes of an incomplete character */
    int n_held;
} bpe_stream;

void bpe_stream_init(bpe_stream *s);
/* Appends the newly complete text for token id to out (capacity cap); returns bytes written, or
 * -1 for an id out of range or if the text does not fit (then nothing is consumed). The text is
 * at most 3 * token length + 3 bytes (invalid bytes become 3-byte U+FFFD); valid UTF-8 needs at
 * most token length + 3. */
int bpe_stream_push(bpe_stream *s, const bpe_tokenizer *t, int id, char *out, size_t cap);
/* Emits U+FFFD if a character is held and resets s. Returns bytes written (0 or 3), or -1 if
 * cap < 3 while a character is held (then s is unchanged). */
int bpe_stream_flush(bpe_stream *s, char *out, size_t cap);

#endif
