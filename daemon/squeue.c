/* squeue.c — see squeue.h. Each class keeps a circular ring of the flows that have items in it;
 * turn[cls] points at the flow served next. */
#include "squeue.h"

#include <stddef.h>

static void ring_join(squeue *s, sq_flow *f, int c) {
    sq_flow *t = s->turn[c];
    if (!t) {
        f->rprev[c] = f->rnext[c] = f;
        s->turn[c] = f;
        return;
    }
    /* just before the flow whose turn it is: last in this round */
    f->rnext[c] = t;
    f->rprev[c] = t->rprev[c];
    t->rprev[c]->rnext[c] = f;
    t->rprev[c] = f;
}

static void ring_leave(squeue *s, sq_flow *f, int c) {
    if (f->rnext[c] == f) {
        s->turn[c] = NULL;
    } else {
        f->rprev[c]->rnext[c] = f->rnext[c];
        f->rnext[c]->rprev[c] = f->rprev[c];
        if (s->turn[c] == f) s->turn[c] = f->rnext[c];
    }
    f->rprev[c] = f->rnext[c] = NULL;
}

void sq_push(squeue *s, sq_flow *f, sq_item *it, int cls, int front) {
    if (cls < 0 || cls >= SQ_CLASSES) cls = SQ_INTERACTIVE;
    if (cls == SQ_REPLAY) f = &s->replay;
    int was_empty = f->head[cls] == NULL;
    it->flow = f;
    it->cls = cls;
    if (front) {
        it->prev = NULL;
        it->next = f->head[cls];
        if (f->head[cls]) f->head[cls]->prev = it;
        else f->tail[cls] = it;
        f->head[cls] = it;
    } else {
        it->next = NULL;
        it->prev = f->tail[cls];
        if (f->tail[cls]) f->tail[cls]->next = it;
        else f->head[cls] = it;
        f->tail[cls] = it;
    }
    s->n[cls]++;
    if (was_empty) ring_join(s, f, cls);
}

void sq_remove(squeue *s, sq_item *it) {
    sq_flow *f = it->flow;
    if (!f) return;
    int c = it->cls;
    if (it->prev) it->prev->next = it->next;
    else f->head[c] = it->next;
    if (it->next) it->next->prev = it->prev;
    else f->tail[c] = it->prev;
    it->prev = it->next = NULL;
    it->flow = NULL;
    s->n[c]--;
    if (!f->head[c]) ring_leave(s, f, c);
}

sq_item *sq_next(const squeue *s, int cls) {
    if (cls < 0 || cls >= SQ_CLASSES || !s->turn[cls]) return NULL;
    return s->turn[cls]->head[cls];
}

void sq_take(squeue *s, sq_item *it) {
    sq_flow *f = it->flow;
    if (!f) return;
    int c = it->cls;
    /* the turn passes to the next flow whether or not f keeps items in this class */
    if (s->turn[c] == f) s->turn[c] = f->rnext[c];
    sq_remove(s, it);
}
