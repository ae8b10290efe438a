/* pool.c: the approach threads: a bounded queue (nginx max_queue) and threads that start on
 * demand up to a maximum, with small stacks, and exit after a while idle. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"
#include "log.h"

#define POOL_STACK     (256u << 10)
#define POOL_IDLE_SECS 30
#define POOL_KEEP      2

struct job {
    void (*fn)(void *);
    void *arg;
    struct job *next;
};

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by pool_mu: */
static pthread_cond_t pool_cv; /* work or stop; CLOCK_MONOTONIC (cv_init) */
static pthread_cond_t pool_exit_cv = PTHREAD_COND_INITIALIZER; /* a thread exited */
static struct job *head, *tail;
static unsigned queued, threads, idle, busy, max_threads, max_queue;
static bool stopping;

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        while (!head && !stopping) {
            struct timespec ts;
            int rc;

            clock_gettime(CLOCK_MONOTONIC, &ts); /* pool_cv uses it: see pool_start */
            ts.tv_sec += POOL_IDLE_SECS;
            idle++;
            rc = pthread_cond_timedwait(&pool_cv, &pool_mu, &ts);
            idle--;
            if (rc == ETIMEDOUT && !head && threads > POOL_KEEP)
                goto out;
        }
        if (!head)
            break; /* stopping and nothing left */
        struct job *j = head;
        head = j->next;
        if (!head)
            tail = NULL;
        queued--;
        busy++;
        pthread_mutex_unlock(&pool_mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&pool_mu);
        busy--;
    }
out:
    threads--;
    pthread_cond_broadcast(&pool_exit_cv);
    pthread_mutex_unlock(&pool_mu);
    return NULL;
}

/* Caller holds pool_mu. */
static int spawn(void)
{
    pthread_attr_t attr;
    pthread_t t;
    int rc;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, POOL_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, worker, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return -1;
    threads++;
    return 0;
}

/* Timed waits measure CLOCK_MONOTONIC, so that a wall-clock step (NTP, an operator) does not
 * stretch or cut them short. */
static pthread_once_t cv_once = PTHREAD_ONCE_INIT;

static void cv_init(void)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pool_cv, &ca);
    pthread_condattr_destroy(&ca);
}

int pool_start(unsigned max_t, unsigned max_q)
{
    pthread_once(&cv_once, cv_init);
    pthread_mutex_lock(&pool_mu);
    max_threads = max_t;
    max_queue = max_q;
    stopping = false;
    pthread_mutex_unlock(&pool_mu);
    return 0;
}

int pool_submit(void (*fn)(void *), void *arg)
{
    struct job *j;

    pthread_mutex_lock(&pool_mu);
    if (stopping || queued >= max_queue) {
        pthread_mutex_unlock(&pool_mu);
        return PX_EBUSY;
    }
    j = xmalloc(sizeof(*j));
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    if (tail)
        tail->next = j;
    else
        head = j;
    tail = j;
    queued++;
    if (queued > idle && threads < max_threads && spawn() < 0 && threads == 0) {
        /* No thread at all can run it: undo. */
        head = tail = NULL;
        queued--;
        free(j);
        pthread_mutex_unlock(&pool_mu);
        log_error("cannot start an approach thread");
        return PX_EBUSY;
    }
    pthread_cond_signal(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    return PX_OK;
}

void pool_stop(void)
{
    pthread_mutex_lock(&pool_mu);
    stopping = true;
    pthread_cond_broadcast(&pool_cv);
    while (threads > 0)
        pthread_cond_wait(&pool_exit_cv, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
}

void pool_stats(unsigned *q, unsigned *t, unsigned *b)
{
    pthread_mutex_lock(&pool_mu);
    *q = queued;
    *t = threads;
    *b = busy;
    pthread_mutex_unlock(&pool_mu);
}
