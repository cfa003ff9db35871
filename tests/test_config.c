/* test_config.c — gpt2d's settings (daemon/config.c) and the engine option table they share with
 * gpt2d-worker and gpt2-tool (proto/eopt.h).
 *
 * Defaults, flags, a configuration file and their precedence land in the right fields (engine
 * settings in cfg.engine); bad values are refused; the commented file lists every engine setting;
 * and the command line gpt2d builds for a worker (eopt_argv) parses back, with the worker's parser
 * (eopt_parse_arg), into exactly the values gpt2d holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../daemon/config.h"
#include "eopt.h"

static int parse(config *cfg, char **argv) {
    int argc = 0;
    while (argv[argc]) argc++;
    return config_parse(cfg, argc, argv);
}

/* eopt_argv(v) parsed back with eopt_parse_arg equals v, option by option. */
static int round_trip(const eopt_values *v) {
    char *argv[64] = {"gpt2d-worker"};
    int n = 1, ok = eopt_argv(v, argv, &n, 63) == 0;
    eopt_values back;
    eopt_defaults(&back);
    char err[256];
    for (int i = 1; ok && i < n; i++) ok = eopt_parse_arg(&back, n, argv, &i, err, sizeof err) == 1;
    for (size_t k = 0; ok && k < EOPT_COUNT; k++) {
        char a[32], b[32];
        ok = strcmp(eopt_format(v, &eopt_table[k], a, sizeof a), eopt_format(&back, &eopt_table[k], b, sizeof b)) == 0;
    }
    for (int i = 1; i < n; i++) free(argv[i]);
    return ok;
}

int main(void) {
    const char *tmp = getenv("GPT2D_TMP") ? getenv("GPT2D_TMP") : "/tmp";
    config cfg;
    char *none[] = {"gpt2d", "--workers", "0", NULL};
    check(parse(&cfg, none) == 0 && cfg.engine.slots == 0 && cfg.engine.blas == 0 && cfg.engine.weights_cache == NULL &&
              cfg.engine.isa == NULL && cfg.max_queue == 256 &&
              cfg.engine.weights && strcmp(cfg.engine.weights, "fp32") == 0,
          "defaults (weights fp32)");
    config_destroy(&cfg);

    char *flags[] = {"gpt2d", "--model", "/m", "--workers", "2", "--slots", "7", "--blas", "--weights-cache=/c",
                     "--isa", "scalar", "--threads", "3", "--debug-step-delay-ms", "5", "--weights", "int8", NULL};
    check(parse(&cfg, flags) == 0 && cfg.workers == 2 && cfg.engine.slots == 7 && cfg.engine.blas == 1 &&
              cfg.engine.threads == 3 && cfg.engine.step_delay_ms == 5 && strcmp(cfg.engine.weights_cache, "/c") == 0 &&
              strcmp(cfg.engine.isa, "scalar") == 0 && strcmp(cfg.engine.weights, "int8") == 0,
          "engine flags land in cfg.engine");
    check(round_trip(&cfg.engine), "the worker command line parses back to gpt2d's engine settings (--weights too)");
    config_destroy(&cfg);

    char path[1024];
    snprintf(path, sizeof path, "%s/test-config.conf", tmp);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "# engine settings in the file\nslots = 3\nisa = \"avx2\"\nweights-cache = off\nctx = 128\n");
        fclose(f);
    }
    char *file[] = {"gpt2d", "--workers", "0", "--config", path, "--ctx", "64", NULL};
    check(parse(&cfg, file) == 0 && cfg.engine.slots == 3 && strcmp(cfg.engine.isa, "avx2") == 0 &&
              strcmp(cfg.engine.weights_cache, "off") == 0 && cfg.engine.ctx == 64,
          "file keys set engine settings; a flag wins over the file (ctx %d)", cfg.engine.ctx);
    check(round_trip(&cfg.engine), "... and round-trip through the worker command line");
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    config_write(&cfg, mem);
    fclose(mem);
    int listed = 1;
    for (size_t k = 0; k < EOPT_COUNT; k++) {
        char key[64];
        snprintf(key, sizeof key, "\n%s =", eopt_table[k].name);
        char key2[64];
        snprintf(key2, sizeof key2, "\n#%s =", eopt_table[k].name);
        listed &= strstr(out, key) != NULL || strstr(out, key2) != NULL;
    }
    check(listed, "the commented file lists every engine setting");
    check(strstr(out, "\nslots = 3\n") && strstr(out, "\nisa = avx2\n") && strstr(out, "\n#blas = false\n"),
          "settings that differ are written active, the others commented");
    free(out);
    config_destroy(&cfg);

    char *bad1[] = {"gpt2d", "--workers", "0", "--slots", "99999", NULL};
    char *bad2[] = {"gpt2d", "--workers", "0", "--blas=maybe", NULL};
    char *bad3[] = {"gpt2d", "--workers", "0", "--isa", NULL};
    check(parse(&cfg, bad1) == -1, "slots out of range refused");
    config_destroy(&cfg);
    check(parse(&cfg, bad2) == -1, "a bad boolean refused");
    config_destroy(&cfg);
    check(parse(&cfg, bad3) == -1, "a flag without its value refused");
    config_destroy(&cfg);
    char *bad4[] = {"gpt2d", "--workers", "0", "--weights", "int4", NULL}, *bad5[] = {"gpt2d", "--workers", "0", "--weights=fp", NULL};
    check(parse(&cfg, bad4) == -1, "an unknown weight format refused");
    config_destroy(&cfg);
    check(parse(&cfg, bad5) == -1, "a prefix of a format is not a format");
    config_destroy(&cfg);

    eopt_values v;
    eopt_defaults(&v);
    char err[256];
    char *w1[] = {"w", "--slots", "abc"}, *w2[] = {"w", "--model", "x"};
    int i = 1;
    check(eopt_parse_arg(&v, 3, w1, &i, err, sizeof err) == -1 && strstr(err, "slots"), "worker side: %s", err);
    i = 1;
    check(eopt_parse_arg(&v, 3, w2, &i, err, sizeof err) == 0 && i == 1, "a non-engine flag is left to the caller");
    check(round_trip(&v), "defaults round-trip (no words at all)");
    char *w3[] = {"w", "--kv-dtype", "fp8"}, *w4[] = {"w", "--kv-dtype=bf16", "--max-running", "300", "--prefix-cache=off"};
    i = 1;
    check(eopt_parse_arg(&v, 3, w3, &i, err, sizeof err) == -1 && strstr(err, "fp32|fp16|bf16"),
          "kv-dtype outside its choices refused: %s", err);
    int ok = 1;
    for (i = 1; i < 5; i++) ok &= eopt_parse_arg(&v, 5, w4, &i, err, sizeof err) == 1;
    check(ok && v.kv_dtype && strcmp(v.kv_dtype, "bf16") == 0 && v.max_running == 300 && v.prefix_cache == 0 &&
              round_trip(&v),
          "kv-dtype, max-running and prefix-cache parse and round-trip");
    return check_done("test_config");
}
