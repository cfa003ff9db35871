/* squeue.h — the order in which the broker hands waiting requests to workers.
 *
 * Three classes, each served only when the ones before it have nothing a worker can take:
 *   SQ_REPLAY       requests moved off a lost worker (their clients' streams are under way),
 *                      first in first out;
 *   SQ_INTERACTIVE  priority "interactive" (the default);
 *   SQ_BULK         priority "bulk".
 * Within the interactive and bulk classes the clients take turns: one request of each client that
 * has some waiting in the class, round robin, each client's own in arrival order. A client that
 * floods the queue therefore gets one dispatch in N (N = clients waiting), and a single request of
 * another client goes out within N dispatches of its arrival, whatever the flood's size.
 * Intrusive and allocation-free: a sq_item lives in each request, a sq_flow in each client
 * (zeroed = empty); the caller owns both and unlinks an item (sq_remove) before freeing it.
 * A flow must be empty in every class before it is freed. */
#ifndef GPT2D_SQ_H
#define GPT2D_SQ_H

enum { SQ_REPLAY = 0, SQ_INTERACTIVE, SQ_BULK, SQ_CLASSES };

typedef struct sq_flow sq_flow;

typedef struct sq_item {
    struct sq_item *prev, *next; /* in its flow's list of its class */
    sq_flow *flow;               /* NULL while not queued */
    int cls;
} sq_item;

struct sq_flow {
    sq_item *head[SQ_CLASSES], *tail[SQ_CLASSES];
    sq_flow *rprev[SQ_CLASSES], *rnext[SQ_CLASSES]; /* the class's ring (when non-empty) */
};

typedef struct {
    sq_flow *turn[SQ_CLASSES]; /* the flow served next in each class's ring, NULL: none waiting */
    sq_flow replay;               /* the replay class is one flow: plain FIFO */
    int n[SQ_CLASSES];            /* items queued per class */
} squeue;

/* Queues it in class cls for flow f (ignored for SQ_REPLAY, which has its own flow): at the end
 * of f's requests of that class, or at their front (a request put back after a failed send).
 * A flow that had nothing waiting in cls joins the ring last in turn (it is served after every
 * flow already waiting there has had its turn). */
void sq_push(squeue *s, sq_flow *f, sq_item *it, int cls, int front);

/* Unlinks it (queued anywhere); a no-op if it is not queued. */
void sq_remove(squeue *s, sq_item *it);

/* The item whose turn it is in class cls (the oldest of the flow whose turn it is), or NULL. */
sq_item *sq_next(const squeue *s, int cls);

/* Removes it (sq_next's answer, now dispatched) and passes the class's turn to the next flow. */
void sq_take(squeue *s, sq_item *it);

#endif
