/* test_cli.c — the first hour with gpt2c, gpt2d and gpt2-tool (issue 10, "The CLI and batch files"),
 * each check against a real daemon or a real reference run:
 *   options anywhere and --opt=value; "did you mean" for flags and config keys; C escapes in --stop
 *   and the prompt; the default endpoint search and the no-daemon hint; a bare socket path;
 *   max_tokens_over_context up front; batch: strict lines (field named, error file), exact seeds in
 *   both batch tools, max_tokens bounded, --resume, the output kept until the broker answers, -o ==
 *   input refused, live progress, Ctrl-C; --version everywhere; --logprobs in text; stats' recent
 *   window; a newline at the end of streamed output on a terminal. */
#include <jansson.h>
#include <pty.h>
#include <sys/stat.h>

#include "check.h"
#include "tutil.h"

static char g_gpt2c[600], g_tool[600], g_gpt2d[600], g_worker[600];

/* Runs argv (stdout + stderr into one log), returns the exit status; *text gets the log. */
static int run_all(char *const argv[], char **text, int ms) {
    static int n;
    char log[700];
    snprintf(log, sizeof(log), "%s/run-%d.log", tu.tmp, n++);
    int rc = tu_run(argv, log, ms);
    FILE *f = fopen(log, "r");
    *text = NULL;
    size_t cap = 0;
    if (f) {
        ssize_t len = getdelim(text, &cap, 0, f);
        if (len < 0) {
            free(*text);
            *text = NULL;
        }
        fclose(f);
    }
    if (!*text) *text = strdup("");
    return rc;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    char *s = NULL;
    size_t cap = 0;
    if (getdelim(&s, &cap, 0, f) < 0) {
        free(s);
        s = strdup("");
    }
    fclose(f);
    return s;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* The first JSON line of out with "type" == type (stdout of --json), or NULL. */
static json_t *json_line_of(const char *out, const char *type) {
    const char *p = out;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        json_t *o = json_loadb(p, n, 0, NULL);
        json_t *t = json_object_get(o, "type");
        if (json_is_string(t) && strcmp(json_string_value(t), type) == 0) return o;
        json_decref(o);
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

/* ---- options anywhere, did you mean ------------------------------------------------------------- */

static void test_options_anywhere(const tu_daemon *d) {
    char *out;
    size_t n;
    char *a1[] = {g_gpt2c, "--connect", (char *)d->client_ep, "stats", NULL};
    int rc = tu_run_capture(a1, &out, &n, 10000);
    check(rc == 0 && strstr(out, "since start") && strstr(out, "local-0"), "gpt2c --connect EP stats: stats (rc %d)",
          rc);
    free(out);
    char ep[800];
    snprintf(ep, sizeof(ep), "--connect=%s", d->client_ep);
    char *a2[] = {g_gpt2c, "--json", "stats", ep, NULL};
    rc = tu_run_capture(a2, &out, &n, 10000);
    json_t *o = json_loads(out, 0, NULL);
    check(rc == 0 && json_object_get(o, "uptime_s"), "gpt2c --json stats --connect=EP: JSON stats (rc %d)", rc);
    json_decref(o);
    free(out);
    char in[700], res[700];
    snprintf(in, sizeof(in), "%s/any-in.jsonl", tu.tmp);
    snprintf(res, sizeof(res), "%s/any-out.jsonl", tu.tmp);
    write_file(in, "{\"id\":\"x\",\"prompt\":\"Hello\",\"max_tokens\":3}\n{\"id\":\"y\",\"prompt\":\"Hi\",\"max_tokens\":3}\n");
    char *a3[] = {g_gpt2c, "-c", "8", "-o", res, "batch", in, ep, NULL};
    rc = run_all(a3, &out, 20000);
    char *r = slurp(res);
    check(rc == 0 && count_lines(r) == 2 && strstr(r, "\"id\":\"x\""), "gpt2c -c 8 -o OUT batch IN: ran the batch (rc %d)",
          rc);
    free(r);
    free(out);
    char *a4[] = {g_gpt2c, "--temprature", "0.9", "x", NULL};
    rc = run_all(a4, &out, 5000);
    check(rc == 1 && strstr(out, "did you mean '--temperature'"), "a misspelt flag: did you mean (rc %d): %s", rc, out);
    free(out);
    /* gpt2d: a misspelt config key and flag */
    char conf[700];
    snprintf(conf, sizeof(conf), "%s/typo.conf", tu.tmp);
    write_file(conf, "workres = 2\n");
    char *a5[] = {g_gpt2d, "--config", conf, "--check-config", NULL};
    rc = run_all(a5, &out, 5000);
    check(rc != 0 && strstr(out, "did you mean 'workers'"), "a misspelt config key: did you mean (rc %d): %s", rc, out);
    free(out);
    char *a6[] = {g_gpt2d, "--max-queu", "5", "--check-config", NULL};
    rc = run_all(a6, &out, 5000);
    check(rc != 0 && strstr(out, "did you mean '--max-queue'"), "a misspelt gpt2d flag: did you mean: %s", out);
    free(out);
}

/* ---- escapes ----------------------------------------------------------------------------------------- */

static void test_escapes(const tu_daemon *d) {
    char *out;
    size_t n;
    /* the prompt: "a\nb" typed is the same request as a real newline (read from a file via stdin) */
    char *a1[] = {g_gpt2c, "--connect", (char *)d->client_ep, "--json", "-n", "8", "Dear team,\\nThe", NULL};
    int rc = tu_run_capture(a1, &out, &n, 10000);
    json_t *esc = json_line_of(out, "done");
    free(out);
    char *a2[] = {g_gpt2c, "--connect", (char *)d->client_ep, "--json", "--no-escape", "-n", "8", "Dear team,\\nThe", NULL};
    rc |= tu_run_capture(a2, &out, &n, 10000);
    json_t *lit = json_line_of(out, "done");
    free(out);
    char ref_prompt[700];
    snprintf(ref_prompt, sizeof(ref_prompt), "%s/prompt-nl.txt", tu.tmp);
    write_file(ref_prompt, "Dear team,\nThe");
    char cmd[2400];
    snprintf(cmd, sizeof(cmd), "%s --connect %s --json -n 8 - < %s", g_gpt2c, d->client_ep, ref_prompt);
    char *a3[] = {"/bin/sh", "-c", cmd, NULL};
    rc |= tu_run_capture(a3, &out, &n, 10000);
    json_t *ref = json_line_of(out, "done");
    free(out);
    json_t *pu = json_object_get(json_object_get(esc, "usage"), "prompt_tokens");
    json_t *ru = json_object_get(json_object_get(ref, "usage"), "prompt_tokens");
    json_t *lu = json_object_get(json_object_get(lit, "usage"), "prompt_tokens");
    check(rc == 0 && esc && ref && json_equal(pu, ru) && json_equal(json_object_get(esc, "tokens"), json_object_get(ref, "tokens")),
          "a prompt's \\n is a newline: same prompt tokens and output as a real newline");
    check(lit && !json_equal(lu, ru), "--no-escape keeps the backslash (prompt tokens differ)");
    json_decref(esc);
    json_decref(lit);
    json_decref(ref);

    /* --stop with \xHH escapes stops where the unescaped string first appears */
    char *a4[] = {g_gpt2c, "--connect", (char *)d->client_ep, "--json", "-n", "40", "Hello", NULL};
    tu_run_capture(a4, &out, &n, 10000);
    json_t *full = json_line_of(out, "done");
    free(out);
    const char *text = json_string_value(json_object_get(full, "text"));
    size_t tl = text ? strlen(text) : 0;
    /* a 3-byte printable piece from the middle of the text as the stop string */
    size_t at = tl / 2;
    while (at + 3 < tl && !(text[at] > 32 && text[at] < 127 && text[at + 1] > 32 && text[at + 1] < 127 &&
                            text[at + 2] > 32 && text[at + 2] < 127))
        at++;
    if (text && at + 3 <= tl) {
        char stop[32];
        snprintf(stop, sizeof(stop), "\\x%02x\\x%02x\\x%02x", (unsigned char)text[at], (unsigned char)text[at + 1],
                 (unsigned char)text[at + 2]);
        char *a5[] = {g_gpt2c, "--connect", (char *)d->client_ep, "--json", "-n", "40", "--stop", stop, "Hello", NULL};
        tu_run_capture(a5, &out, &n, 10000);
        json_t *stopped = json_line_of(out, "done");
        free(out);
        const char *st = json_string_value(json_object_get(stopped, "text"));
        char piece[4] = {text[at], text[at + 1], text[at + 2], 0};
        size_t first = (size_t)(strstr(text, piece) - text);
        check(stopped && strcmp(json_string_value(json_object_get(stopped, "finish_reason")), "stop") == 0 && st &&
                  strlen(st) == first && strncmp(st, text, first) == 0,
              "--stop '%s' (C escapes) matched: text cut at byte %zu", stop, first);
        json_decref(stopped);
    } else {
        check(0, "the reference text has a printable 3-byte piece (%s)", text ? text : "null");
    }
    json_decref(full);
}

/* ---- endpoint -------------------------------------------------------------------------------------- */

static void test_endpoint(void) {
    /* a daemon where the default search looks first: $XDG_RUNTIME_DIR/gpt2d/client.sock */
    char xdg[560], dir[600], ep[640], wep[640], log[700];
    snprintf(xdg, sizeof(xdg), "%s/xdg", tu.tmp);
    snprintf(dir, sizeof(dir), "%s/gpt2d", xdg);
    mkdir(xdg, 0700);
    mkdir(dir, 0700);
    snprintf(ep, sizeof(ep), "ipc://%s/client.sock", dir);
    snprintf(wep, sizeof(wep), "ipc://%s/worker.sock", dir);
    snprintf(log, sizeof(log), "%s/xdg-daemon.log", tu.tmp);
    unsetenv("GPT2D_ENDPOINT");
    unsetenv("GPT2D_RUNTIME_DIR");
    setenv("XDG_RUNTIME_DIR", xdg, 1);
    char *out;
    /* nothing there yet: an immediate failure naming where it looked and how to start one */
    char *a1[] = {g_gpt2c, "Hello", NULL};
    double t0 = proto_clock_ms();
    int rc = run_all(a1, &out, 10000);
    double took = proto_clock_ms() - t0;
    check(rc == 4 && took < 1500 && strstr(out, dir) && strstr(out, "/run/gpt2d/client.sock") &&
              strstr(out, "make run") && strstr(out, "systemctl start gpt2d"),
          "no daemon: exit 4 at once (%.0f ms) with the paths tried and a hint: %s", took, out);
    free(out);
    char *a2[] = {g_gpt2c, "--connect", "/nonexistent/dir/x.sock", "stats", NULL};
    rc = run_all(a2, &out, 10000);
    check(rc == 4 && strstr(out, "no socket at /nonexistent/dir/x.sock") && !strstr(out, "Invalid argument"),
          "--connect PATH without ipc:// names the path (rc %d): %s", rc, out);
    free(out);
    char *dargv[] = {g_gpt2d, "--model", tu.model, "--workers", "1", "--slots", "2", "--listen", ep, "--worker-listen",
                     wep, "--worker-bin", g_worker, "--threads", "1", NULL};
    pid_t pid = tu_spawn(dargv, log);
    tu_daemon d = {.pid = pid};
    snprintf(d.client_ep, sizeof(d.client_ep), "%s", ep);
    check(tu_wait_workers(&d, 1, 60000), "a daemon on $XDG_RUNTIME_DIR/gpt2d starts");
    char *a3[] = {g_gpt2c, "stats", NULL};
    rc = run_all(a3, &out, 10000);
    check(rc == 0 && strstr(out, "local-0"), "gpt2c with no flags finds it (rc %d)", rc);
    free(out);
    char bare[800];
    snprintf(bare, sizeof(bare), "%s/client.sock", dir);
    char *a4[] = {g_gpt2c, "--connect", bare, "-n", "2", "Hi", NULL};
    rc = run_all(a4, &out, 10000);
    check(rc == 0, "--connect /path.sock (no ipc://) works (rc %d): %s", rc, out);
    free(out);
    /* $GPT2D_RUNTIME_DIR, when set, is the only place looked at */
    setenv("GPT2D_RUNTIME_DIR", tu.tmp, 1);
    rc = run_all(a3, &out, 10000);
    check(rc == 4 && strstr(out, tu.tmp), "$GPT2D_RUNTIME_DIR overrides the search (rc %d)", rc);
    free(out);
    unsetenv("GPT2D_RUNTIME_DIR");
    unsetenv("XDG_RUNTIME_DIR");
    tu_daemon_stop(&d);
}

/* ---- max_tokens over the context --------------------------------------------------------------------- */

static void test_over_context(const tu_daemon *d) {
    char *out;
    /* the model's context is 256; this prompt is ~20 tokens, so 250 new tokens cannot fit */
    char *a1[] = {g_gpt2c, "--connect", (char *)d->client_ep, "-n", "250",
                  "The quick brown fox jumps over the lazy dog, and then the dog sleeps all day long.", NULL};
    int rc = run_all(a1, &out, 20000);
    check(rc == 2 && strstr(out, "max_tokens_over_context") && strstr(out, "250") && strstr(out, "256"),
          "prompt + max_tokens over the context: refused up front with both numbers (rc %d): %s", rc, out);
    free(out);
    char *a2[] = {g_gpt2c, "--connect", (char *)d->client_ep, "-n", "255", "Hello", NULL};
    rc = run_all(a2, &out, 20000);
    check(rc == 0, "a 1-token prompt + 255 fits a 256 context (the last token needs no position) (rc %d)", rc);
    free(out);
}

/* ---- batch --------------------------------------------------------------------------------------------- */

/* tokens of the done frame of a single gpt2c run with this seed */
static json_t *single_tokens(const tu_daemon *d, const char *seed) {
    char *out;
    size_t n;
    char *a[] = {g_gpt2c, "--connect", (char *)d->client_ep, "--json", "-n", "12", "-t", "1.0", "--seed", (char *)seed,
                 "Seeds", NULL};
    tu_run_capture(a, &out, &n, 10000);
    json_t *done = json_line_of(out, "done");
    free(out);
    json_t *t = json_incref(json_object_get(done, "tokens"));
    json_decref(done);
    return t;
}

/* id -> tokens of a result file */
static json_t *result_tokens(const char *path, const char *id) {
    char *s = slurp(path), *p = s;
    json_t *found = NULL;
    while (p && *p && !found) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        json_t *o = json_loads(p, 0, NULL);
        if (json_is_string(json_object_get(o, "id")) && strcmp(json_string_value(json_object_get(o, "id")), id) == 0)
            found = json_incref(json_object_get(o, "tokens"));
        json_decref(o);
        p = e ? e + 1 : NULL;
    }
    free(s);
    return found;
}

static void test_batch(const tu_daemon *d) {
    char in[700], res[700], errf[700], res2[700], *out;
    snprintf(in, sizeof(in), "%s/b-in.jsonl", tu.tmp);
    snprintf(res, sizeof(res), "%s/b-out.jsonl", tu.tmp);
    snprintf(errf, sizeof(errf), "%s/b-out.jsonl.errors", tu.tmp);
    snprintf(res2, sizeof(res2), "%s/b-tool.jsonl", tu.tmp);
    write_file(in, "{\"id\":\"ok1\",\"prompt\":\"Seeds\",\"max_tokens\":12,\"temperature\":1.0,\"seed\":9007199254740993}\n"
                   "{\"id\":\"typo\",\"prompt\":\"Hi\",\"temprature\":0.9}\n"
                   "{\"id\":\"ok2\",\"prompt\":\"Seeds\",\"max_tokens\":12,\"temperature\":1.0,\"seed\":9007199254740992}\n");
    char *a1[] = {g_gpt2c, "batch", in, "--connect", (char *)d->client_ep, "-o", res, NULL};
    int rc = run_all(a1, &out, 30000);
    char *r = slurp(res), *e = slurp(errf);
    check(rc == 2 && strstr(out, "b-in.jsonl:2") && strstr(out, "temprature"),
          "an unknown field is an error naming the line and the field (rc %d): %s", rc, out);
    json_t *el = json_loads(e, 0, NULL);
    check(el && json_integer_value(json_object_get(el, "line")) == 2 &&
              strcmp(json_string_value(json_object_get(el, "field")), "temprature") == 0 &&
              strstr(json_string_value(json_object_get(el, "input")), "\"temprature\":0.9"),
          "the failed line goes to the error file with its line, field and input: %s", e);
    json_decref(el);
    check(count_lines(r) == 2 && strstr(r, "ok1") && strstr(r, "ok2") && !strstr(r, "typo"),
          "the valid lines still ran: %s", r);
    free(r);
    free(e);
    free(out);
    /* seeds >= 2^53 exact in both batch tools: each line equals a single run with that seed */
    json_t *s3 = single_tokens(d, "9007199254740993"), *s2 = single_tokens(d, "9007199254740992");
    check(s3 && s2 && !json_equal(s3, s2), "seeds 2^53 and 2^53+1 give different samples (the test can tell)");
    json_t *b3 = result_tokens(res, "ok1"), *b2 = result_tokens(res, "ok2");
    check(json_equal(b3, s3) && json_equal(b2, s2), "gpt2c batch: seed 2^53+1 exact");
    json_decref(b3);
    json_decref(b2);
    char tool_in[700];
    snprintf(tool_in, sizeof(tool_in), "%s/b-tool-in.jsonl", tu.tmp);
    write_file(tool_in, "{\"id\":\"ok1\",\"prompt\":\"Seeds\",\"max_tokens\":12,\"temperature\":1.0,\"seed\":9007199254740993}\n"
                        "{\"id\":\"ok2\",\"prompt\":\"Seeds\",\"max_tokens\":12,\"temperature\":1.0,\"seed\":9007199254740992}\n");
    char *a2[] = {g_tool, "batch", "--model", tu.model, "--input", tool_in, "--output", res2, "--threads", "1", NULL};
    rc = run_all(a2, &out, 30000);
    free(out);
    b3 = result_tokens(res2, "ok1");
    b2 = result_tokens(res2, "ok2");
    check(rc == 0 && json_equal(b3, s3) && json_equal(b2, s2), "gpt2-tool batch: seed 2^53+1 exact (rc %d)", rc);
    json_decref(b3);
    json_decref(b2);
    json_decref(s3);
    json_decref(s2);
    /* gpt2-tool batch: the same strictness, max_tokens bounded before any allocation */
    write_file(tool_in, "{\"id\":\"big\",\"prompt\":\"x\",\"max_tokens\":2000000000}\n");
    rc = run_all(a2, &out, 30000);
    check(rc != 0 && strstr(out, "max_tokens") && strstr(out, "line 1"), "gpt2-tool batch: max_tokens 2e9 refused: %s", out);
    free(out);
    write_file(tool_in, "{\"id\":\"t\",\"prompt\":\"x\",\"temprature\":0.9}\n");
    rc = run_all(a2, &out, 30000);
    check(rc != 0 && strstr(out, "temprature"), "gpt2-tool batch: unknown field refused: %s", out);
    free(out);

    /* -o equal to the input: refused, the input intact */
    char *before = slurp(in);
    char *a3[] = {g_gpt2c, "batch", in, "--connect", (char *)d->client_ep, "-o", in, NULL};
    rc = run_all(a3, &out, 10000);
    char *after = slurp(in);
    check(rc == 1 && strcmp(before, after) == 0 && strstr(out, "is the input"), "-o equal to the input refused");
    free(out);
    free(before);
    free(after);
    before = slurp(in);
    char *a3b[] = {g_tool, "batch", "--model", tu.model, "--input", in, "--output", in, "--threads", "1", NULL};
    rc = run_all(a3b, &out, 10000);
    after = slurp(in);
    check(rc != 0 && strcmp(before, after) == 0, "gpt2-tool batch: --output equal to --input refused, input intact");
    free(out);
    free(before);
    free(after);

    /* the output is not truncated when no broker answers */
    write_file(res, "{\"id\":\"keep\"}\n");
    char nowhere[800];
    snprintf(nowhere, sizeof(nowhere), "ipc://%s/nobody.sock", tu.tmp);
    char *a4[] = {g_gpt2c, "batch", in, "--connect", nowhere, "-o", res, NULL};
    rc = run_all(a4, &out, 10000);
    r = slurp(res);
    check(rc == 4 && strcmp(r, "{\"id\":\"keep\"}\n") == 0, "no broker: the output file is left as it was (rc %d)", rc);
    free(r);
    free(out);

    /* --resume: ids already in the output are skipped, the rest appended */
    write_file(res, "{\"id\":\"ok1\",\"text\":\"earlier\"}\n");
    char *a5[] = {g_gpt2c, "batch", in, "--resume", "--connect", (char *)d->client_ep, "-o", res, NULL};
    rc = run_all(a5, &out, 30000);
    r = slurp(res);
    check(count_lines(r) == 2 && strstr(r, "earlier") && strstr(r, "\"id\":\"ok2\"") && strstr(out, "1 skipped"),
          "--resume kept ok1, ran only ok2 (rc %d): %s", rc, r);
    free(r);
    free(out);
}

/* A long batch: the progress bar counts streamed tokens live; Ctrl-C writes what finished and
 * lists what did not; --resume finishes it. */
static void test_batch_progress_and_interrupt(const tu_daemon *slow) {
    char in[700], res[700], log[700];
    snprintf(in, sizeof(in), "%s/long-in.jsonl", tu.tmp);
    snprintf(res, sizeof(res), "%s/long-out.jsonl", tu.tmp);
    snprintf(log, sizeof(log), "%s/long.log", tu.tmp);
    FILE *f = fopen(in, "w");
    for (int i = 0; i < 6; i++) fprintf(f, "{\"id\":\"L%d\",\"prompt\":\"Long %d\",\"max_tokens\":%d}\n", i, i, i < 2 ? 4 : 200);
    fclose(f);
    char *a[] = {g_gpt2c, "batch", in, "-c", "1", "--progress", "--connect", (char *)slow->client_ep, "-o", res, NULL};
    pid_t p = tu_spawn(a, log);
    /* wait until the third request is streaming, then Ctrl-C */
    double deadline = proto_clock_ms() + 20000;
    int live = 0;
    while (!live && proto_clock_ms() < deadline) {
        tu_sleep_ms(100);
        char *s = slurp(log);
        /* a progress line with 2 done and tokens beyond the first two requests' 8: counted live */
        const char *q = s;
        while ((q = strstr(q, "2/6  ")) != NULL) { /* "2/6  N tok  R tok/s" */
            unsigned long tok = 0;
            double rate;
            if (sscanf(q, "2/6  %lu tok %lf tok/s", &tok, &rate) == 2 && tok > 8 + 5) live = 1;
            q++;
        }
        free(s);
    }
    check(live, "the progress bar counts tokens while a request streams");
    kill(p, SIGINT);
    int status = tu_reap(p, 10000);
    char *s = slurp(log), *r = slurp(res);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 130, "Ctrl-C: exit 130 (status %d)", status);
    check(count_lines(r) == 2 && strstr(r, "\"L0\"") && strstr(r, "\"L1\""), "Ctrl-C: the finished results written: %s",
          r);
    check(strstr(s, "did not finish") && strstr(s, "\"L2\"") && strstr(s, "\"L5\"") && strstr(s, "--resume"),
          "Ctrl-C: what did not finish is listed: %s", s);
    free(s);
    free(r);
    char *b[] = {g_gpt2c, "batch", in, "-c", "4", "--resume", "--connect", (char *)slow->client_ep, "-o", res, NULL};
    char *out;
    int rc = run_all(b, &out, 60000);
    r = slurp(res);
    int all = count_lines(r) == 6;
    for (int i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof(id), "\"L%d\"", i);
        all &= strstr(r, id) != NULL;
    }
    check(rc == 0 && all, "--resume finished the rest (rc %d, %d lines)", rc, count_lines(r));
    free(r);
    free(out);
}

/* ---- --version, --logprobs, stats, help, terminal newline -------------------------------------------- */

static void test_misc(const tu_daemon *d) {
    char *bins[] = {g_gpt2c, g_gpt2d, g_worker, g_tool};
    for (int i = 0; i < 4; i++) {
        char *a[] = {bins[i], "--version", NULL}, *out;
        size_t n;
        int rc = tu_run_capture(a, &out, &n, 5000);
        check(rc == 0 && strstr(out, "0.1.0 (git ") && strstr(out, "protocol 1") && strstr(out, "kernels: "),
              "%s --version: version, git revision, protocol, kernels (rc %d): %s", bins[i], rc, out);
        free(out);
    }
    char *out;
    size_t n;
    char *a1[] = {g_gpt2c, "--connect", (char *)d->client_ep, "--logprobs", "-n", "4", "Hello", NULL};
    int rc = tu_run_capture(a1, &out, &n, 10000);
    int lines = 0, ok = 1;
    for (char *p = out; p && *p;) {
        int idx, tok;
        double lp;
        ok &= sscanf(p, "%d %d %lf", &idx, &tok, &lp) == 3 && idx == lines && lp <= 0;
        lines++;
        p = strchr(p, '\n');
        if (p) p++;
    }
    check(rc == 0 && lines == 4 && ok, "--logprobs without --json prints index, token, logprob per token: %s", out);
    free(out);
    char *a2[] = {g_gpt2c, "stats", "--json", "--connect", (char *)d->client_ep, NULL};
    rc = tu_run_capture(a2, &out, &n, 10000);
    json_t *o = json_loads(out, 0, NULL), *rec = json_object_get(o, "recent");
    check(rc == 0 && rec && json_real_value(json_object_get(rec, "window_s")) > 0 &&
              json_integer_value(json_object_get(rec, "tokens")) >= 4 &&
              json_integer_value(json_object_get(rec, "tokens")) <= json_integer_value(json_object_get(o, "tokens_total")),
          "stats: a recent window beside the totals: %s", out);
    json_decref(o);
    free(out);
    char *a3[] = {g_gpt2c, "stats", "--connect", (char *)d->client_ep, NULL};
    rc = tu_run_capture(a3, &out, &n, 10000);
    check(rc == 0 && strstr(out, "last ") && strstr(out, "since start"), "stats text: both columns");
    free(out);
    char *a4[] = {g_gpt2c, "--help", NULL};
    rc = tu_run_capture(a4, &out, &n, 5000);
    check(rc == 0 && strstr(out, "batch input (JSONL") && strstr(out, "batch output (JSONL") && strstr(out, "--resume"),
          "--help documents the JSONL format");
    free(out);
    char man[700];
    snprintf(man, sizeof(man), "%s/docs/gpt2c.1", getenv("GPT2D_ROOT") ? getenv("GPT2D_ROOT") : ".");
    char *m = slurp(man);
    check(strstr(m, "BATCH FILES") && strstr(m, "prompt_ids") && strstr(m, "\\-\\-resume") && strstr(m, "escape"),
          "the man page documents the JSONL format, --resume and escapes");
    free(m);

    /* on a terminal, streamed output ends with a newline */
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    if (pid == 0) {
        char *a[] = {g_gpt2c, "--connect", (char *)d->client_ep, "-n", "5", "Hello", NULL};
        execv(a[0], a);
        _exit(127);
    }
    char buf[4096];
    size_t got = 0;
    double deadline = proto_clock_ms() + 10000;
    while (pid > 0 && got < sizeof(buf) - 1 && proto_clock_ms() < deadline) {
        ssize_t k = read(master, buf + got, sizeof(buf) - 1 - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    buf[got] = 0;
    int status = -1;
    if (pid > 0) waitpid(pid, &status, 0);
    close(master);
    check(got > 2 && buf[got - 1] == '\n' && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "on a terminal the output ends with a newline (%zu bytes)", got);
}

int main(void) {
    check(tu_init("cli", 400) == 0, "gpt2-tool mkmodel makes the small model");
    snprintf(g_gpt2c, sizeof(g_gpt2c), "%s/gpt2c", tu.build);
    snprintf(g_gpt2d, sizeof(g_gpt2d), "%s/gpt2d", tu.build);
    snprintf(g_worker, sizeof(g_worker), "%s/gpt2d-worker", tu.build);
    snprintf(g_tool, sizeof(g_tool), "%s/gpt2-tool", tu.build);
    unsetenv("GPT2D_ENDPOINT");
    tu_daemon d;
    int up = tu_daemon_start(&d, "cli", 1, 4, NULL);
    check(up, "gpt2d starts");
    if (up) {
        test_options_anywhere(&d);
        test_escapes(&d);
        test_over_context(&d);
        test_batch(&d);
        test_misc(&d);
        check(tu_daemon_stop(&d), "gpt2d stops");
    }
    tu_daemon slow;
    char *extra[] = {"--debug-step-delay-ms", "5", NULL};
    up = tu_daemon_start(&slow, "slow", 1, 2, extra);
    check(up, "a slowed gpt2d starts");
    if (up) {
        test_batch_progress_and_interrupt(&slow);
        tu_daemon_stop(&slow);
    }
    test_endpoint();
    static const char *const logs[] = {"cli.log", "slow.log", "xdg-daemon.log"};
    for (int i = 0; i < 3; i++) {
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", tu.tmp, logs[i]);
        check(!tu_log_contains(path, "Sanitizer") && !tu_log_contains(path, "runtime error:"), "%s: no sanitizer report",
              logs[i]);
    }
    tu_kill_all();
    zmq_ctx_term(tu.ctx);
    return check_done("test_cli");
}
