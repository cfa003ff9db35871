/* routes.c — the HTTP side: one MHD access handler that routes by method and path, gathers request
 * bodies (413 past GW_MAX_BODY_BYTES), checks API keys, suspends a connection while its answer is
 * being generated and answers when woken; the completion callback frees the call (cancelling what
 * is still open at the broker). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "gw.h"
#include "status_html.h"

/* ============================================================================================== */
/* errors                                                                                          */
/* ============================================================================================== */

void gw_error_set(gw_error *e, int status, const char *code, const char *param, const char *fmt, ...) {
    e->status = status;
    snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

const char *gw_error_type(int status) {
    if (status == 401) return "authentication_error";
    if (status == 429) return "rate_limit_error";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

char *routes_error_json(const gw_error *e) {
    json_t *j = json_pack("{s:{s:s,s:s,s:o,s:s}}", "error", "message", e->message, "type", gw_error_type(e->status),
                          "param", e->param[0] ? json_string(e->param) : json_null(), "code", e->code);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* ============================================================================================== */
/* answering                                                                                       */
/* ============================================================================================== */

/* Queues body (malloc'd, taken; NULL: empty) with status. MHD_YES/MHD_NO as MHD wants. */
static enum MHD_Result respond(hcall *c, int status, const char *type, char *body, const char *allow) {
    gw *g = c->g;
    size_t len = body ? strlen(body) : 0;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body ? body : (void *)"",
                                                            body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (type) MHD_add_response_header(r, "Content-Type", type);
    if (status == 429) MHD_add_response_header(r, "Retry-After", GW_RETRY_AFTER_S);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (allow) MHD_add_response_header(r, "Allow", allow);
    if (g->draining) MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result rc = MHD_queue_response(c->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    c->answered = 1;
    g->http_requests++;
    if (status > 0 && status < 600) g->http_status_counts[status]++;
    return rc;
}

static enum MHD_Result respond_error(hcall *c, const gw_error *e, const char *allow) {
    if (e->status >= 400 && e->status != 404 && e->status != 405)
        proto_log(&c->g->log, PROTO_LOG_DEBUG, "answer %d %s: %s", e->status, e->code, e->message);
    return respond(c, e->status, "application/json", routes_error_json(e), allow);
}

static enum MHD_Result respond_json(hcall *c, int status, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return respond(c, status, "application/json", s, NULL);
}

void routes_watch(gw *g, hcall *c) {
    if (c->watched || c->fd < 0 || g->watch_ep < 0) return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(g->watch_ep, EPOLL_CTL_ADD, c->fd, &ev) == 0) c->watched = 1;
}

static void unwatch(gw *g, hcall *c) {
    if (c->watched) epoll_ctl(g->watch_ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->watched = 0;
}

static void suspend(hcall *c) {
    if (c->suspended) return;
    MHD_suspend_connection(c->conn);
    c->suspended = 1;
    routes_watch(c->g, c);
}

void routes_wake(gw *g, hcall *c) {
    (void)g;
    if (!c->suspended) return;
    c->suspended = 0;
    MHD_resume_connection(c->conn);
}

/* ============================================================================================== */
/* routes                                                                                          */
/* ============================================================================================== */

typedef enum { R_NONE, R_COMPLETIONS, R_CHAT, R_MODELS, R_MODEL, R_HEALTH, R_READY, R_METRICS, R_STATS, R_PAGE } route;

static route route_of(const gw *g, const char *url, const char **allow) {
    static const struct {
        const char *path;
        route r;
        const char *allow;
    } table[] = {
        {"/v1/completions", R_COMPLETIONS, "POST"}, {"/v1/chat/completions", R_CHAT, "POST"},
        {"/v1/models", R_MODELS, "GET"},           {"/health", R_HEALTH, "GET"},
        {"/ready", R_READY, "GET"},                {"/metrics", R_METRICS, "GET"},
        {"/v1/stats", R_STATS, "GET"},             {"/", R_PAGE, "GET"},
        {"/index.html", R_PAGE, "GET"},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(url, table[i].path) == 0) {
            *allow = table[i].allow;
            return table[i].r;
        }
    if (strncmp(url, "/v1/models/", 11) == 0 && strcmp(url + 11, g->cfg->model_name) == 0) {
        *allow = "GET";
        return R_MODEL;
    }
    return R_NONE;
}

static json_t *model_json(const gw *g) {
    return json_pack("{s:s,s:s,s:I,s:s}", "id", g->cfg->model_name, "object", "model", "created", (json_int_t)0,
                     "owned_by", "gpt2d");
}

/* The first call for a request (headers complete). */
static enum MHD_Result routes_begin(gw *g, hcall *c, const char *url, const char *method) {
    const char *allow = NULL;
    route r = route_of(g, url, &allow);
    gw_error e;
    if (r == R_NONE) {
        gw_error_set(&e, 404, "not_found", "", "no route %s %s", method, url);
        return respond_error(c, &e, NULL);
    }
    if (strcmp(method, allow) != 0 && !(strcmp(method, "HEAD") == 0 && strcmp(allow, "GET") == 0)) {
        gw_error_set(&e, 405, "method_not_allowed", "", "%s %s: use %s", method, url, allow);
        return respond_error(c, &e, allow);
    }
    if (g->draining && (r == R_COMPLETIONS || r == R_CHAT || r == R_READY)) {
        gw_error_set(&e, 503, "shutting_down", "", "the gateway is shutting down");
        return respond_error(c, &e, NULL);
    }
    int needs_key = r == R_COMPLETIONS || r == R_CHAT || r == R_MODELS || r == R_MODEL;
    if (needs_key && g->keys &&
        !apikeys_check(g->keys, MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))) {
        gw_error_set(&e, 401, "invalid_api_key", "", "a valid API key is required (Authorization: Bearer KEY)");
        return respond_error(c, &e, NULL);
    }
    switch (r) {
    case R_HEALTH: return respond_json(c, 200, json_pack("{s:s}", "status", "ok"));
    case R_MODELS: return respond_json(c, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", model_json(g)));
    case R_MODEL: return respond_json(c, 200, model_json(g));
    case R_PAGE: {
        struct MHD_Response *resp = MHD_create_response_from_buffer(status_html_len, (void *)status_html,
                                                                    MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/html; charset=utf-8");
        enum MHD_Result rc = MHD_queue_response(c->conn, 200, resp);
        MHD_destroy_response(resp);
        c->answered = 1;
        g->http_requests++;
        g->http_status_counts[200]++;
        return rc;
    }
    case R_READY:
    case R_METRICS:
    case R_STATS:
        c->kind = CALL_STATS;
        c->stats_for = r == R_READY ? STATS_FOR_READY : r == R_METRICS ? STATS_FOR_METRICS : STATS_FOR_JSON;
        c->stats_wait = 1;
        link_stats(g);
        suspend(c);
        return MHD_YES;
    default: break;
    }
    c->kind = r == R_CHAT ? CALL_CHAT : CALL_COMPLETIONS;
    const char *cl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > GW_MAX_BODY_BYTES) {
        gw_error_set(&e, 413, "too_large", "", "the request body is larger than %u bytes", GW_MAX_BODY_BYTES);
        return respond_error(c, &e, NULL);
    }
    return MHD_YES; /* the body follows */
}

static enum MHD_Result routes_stats_answer(gw *g, hcall *c) {
    gw_error e;
    if (c->stats_for == STATS_FOR_READY) {
        if (!stats_ready(g, &e)) return respond_error(c, &e, NULL);
        return respond_json(c, 200, json_pack("{s:s,s:i}", "status", "ready", "workers", g->stats.n_workers));
    }
    if (!g->stats.valid) {
        gw_error_set(&e, 503, "broker_unreachable", "", "the broker did not answer a stats request within %d ms",
                     GW_STATS_TIMEOUT_MS);
        return respond_error(c, &e, NULL);
    }
    if (c->stats_for == STATS_FOR_METRICS)
        return respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", stats_render_prometheus(g), NULL);
    return respond(c, 200, "application/json", stats_render_json(g), NULL);
}

/* Appends an upload chunk to the body (413 once past the limit: the rest is read and dropped). */
static void body_append(hcall *c, const char *data, size_t n) {
    if (c->too_large || c->body_len + n > GW_MAX_BODY_BYTES) {
        c->too_large = 1;
        return;
    }
    if (c->body_len + n + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + n + 1) cap *= 2;
        char *p = realloc(c->body, cap);
        if (!p) {
            c->too_large = 1;
            return;
        }
        c->body = p;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, data, n);
    c->body_len += n;
    c->body[c->body_len] = 0;
}

/* A generation call after its body: start it, or (woken) answer when there is something to say. */
static enum MHD_Result routes_generate(gw *g, hcall *c) {
    gw_error e;
    if (!c->submitted) {
        if (c->too_large) {
            gw_error_set(&e, 413, "too_large", "", "the request body is larger than %u bytes", GW_MAX_BODY_BYTES);
            return respond_error(c, &e, NULL);
        }
        if (oa_start(g, c, &e) < 0) return respond_error(c, &e, NULL);
        suspend(c);
        return MHD_YES;
    }
    const gw_error *err = oa_first_error(c);
    if (err) return respond_error(c, err, NULL);
    if (!c->stream) {
        if (c->n_open > 0) {
            suspend(c);
            return MHD_YES;
        }
        char *s = oa_render_final(g, c);
        if (!s) {
            gw_error_set(&e, 500, "internal", "", "out of memory");
            return respond_error(c, &e, NULL);
        }
        return respond(c, 200, "application/json", s, NULL);
    }
    int all_started = 1;
    for (int k = 0; k < c->n_choices; k++) all_started &= c->ch[k].started;
    if (!all_started && c->n_open > 0) {
        suspend(c);
        return MHD_YES;
    }
    struct MHD_Response *r = sse_response(c);
    if (!r) return MHD_NO;
    if (g->draining) MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result rc = MHD_queue_response(c->conn, 200, r);
    MHD_destroy_response(r);
    c->answered = 1;
    c->streaming = 1;
    g->http_requests++;
    g->http_status_counts[200]++;
    return rc;
}

enum MHD_Result routes_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
    (void)version;
    gw *g = cls;
    hcall *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c) return MHD_NO;
        c->g = g;
        c->conn = conn;
        c->kind = CALL_OTHER;
        c->t_start = proto_clock_ms();
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->next = g->calls;
        if (g->calls) g->calls->prev = c;
        g->calls = c;
        g->n_calls++;
        *con_cls = c;
        return routes_begin(g, c, url, method);
    }
    if (c->gone) return MHD_NO;
    if (c->answered) {
        *upload_data_size = 0; /* an early answer (401, 413): the rest of the body is dropped */
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        body_append(c, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->kind == CALL_STATS) {
        if (c->stats_wait) {
            suspend(c);
            return MHD_YES;
        }
        return routes_stats_answer(g, c);
    }
    if (c->kind == CALL_COMPLETIONS || c->kind == CALL_CHAT) return routes_generate(g, c);
    return MHD_NO;
}

static void call_free(gw *g, hcall *c) {
    if (c->prev) c->prev->next = c->next;
    else g->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    g->n_calls--;
    for (int k = 0; k < c->n_choices; k++) {
        gw_choice *ch = &c->ch[k];
        free(ch->text);
        for (int t = 0; t < ch->n_toks; t++)
            for (int i = 0; i < ch->toks[t].n; i++) free(ch->toks[t].bytes[i]);
        free(ch->toks);
    }
    for (int p = 0; p < c->n_prompts && c->prompt_text; p++) free(c->prompt_text[p]);
    free(c->prompt_text);
    free(c->ch);
    free(c->body);
    free(c->out);
    free(c);
}

void routes_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)conn;
    gw *g = cls;
    hcall *c = *con_cls;
    if (!c) return;
    if (c->n_open > 0)
        proto_log(&g->log, PROTO_LOG_INFO, "%s: connection ended (%s) with %d request(s) open: cancelled",
                  c->cid[0] ? c->cid : "call",
                  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok"
                  : toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "timeout"
                  : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ? "client gone"
                                                               : "error",
                  c->n_open);
    unwatch(g, c);
    link_forget(g, c);
    call_free(g, c);
    *con_cls = NULL;
}

void routes_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe) {
    (void)conn;
    (void)socket_context;
    gw *g = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) g->connections++;
    else g->connections--;
}
