/* pool.c: admission of approach requests: at most --workers run at once, each as a coroutine
 * (src/sched.c); the rest wait in a bounded queue (nginx max_queue), and a full queue answers
 * 503 at once. A finishing request starts the next queued one. */
#include <stdlib.h>

#include "internal.h"
#include "log.h"

struct job {
    void (*fn)(void *);
    void *arg;
    struct job *next;
};

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by pool_mu: */
static pthread_cond_t pool_idle_cv = PTHREAD_COND_INITIALIZER; /* running dropped to 0 */
static struct job *head, *tail;
static unsigned queued, running, max_running, max_queue;
static bool stopping;

static void job_main(void *arg);

/* Starts j on a coroutine; on failure the slot is given back. */
static int start(struct job *j)
{
    if (sched_spawn(job_main, j, NULL, SCHED_REQUEST) == 0)
        return 0;
    pthread_mutex_lock(&pool_mu);
    if (--running == 0)
        pthread_cond_broadcast(&pool_idle_cv);
    pthread_mutex_unlock(&pool_mu);
    return -1;
}

static void job_main(void *arg)
{
    struct job *j = arg;

    for (;;) {
        j->fn(j->arg);
        free(j);
        /* The slot passes to the next queued request, on this coroutine. */
        pthread_mutex_lock(&pool_mu);
        j = head;
        if (j) {
            head = j->next;
            if (!head)
                tail = NULL;
            queued--;
        } else if (--running == 0) {
            pthread_cond_broadcast(&pool_idle_cv);
        }
        pthread_mutex_unlock(&pool_mu);
        if (!j)
            return;
    }
}

int pool_start(unsigned max_r, unsigned max_q)
{
    pthread_mutex_lock(&pool_mu);
    max_running = max_r;
    max_queue = max_q;
    stopping = false;
    pthread_mutex_unlock(&pool_mu);
    return 0;
}

int pool_submit(void (*fn)(void *), void *arg)
{
    struct job *j = xmalloc(sizeof(*j));

    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&pool_mu);
    if (stopping) {
        pthread_mutex_unlock(&pool_mu);
        free(j);
        return PX_EBUSY;
    }
    if (running < max_running) {
        running++;
        pthread_mutex_unlock(&pool_mu);
        if (start(j) < 0) {
            free(j);
            log_error("cannot start a coroutine for an approach request");
            return PX_EBUSY;
        }
        return PX_OK;
    }
    if (queued >= max_queue) {
        pthread_mutex_unlock(&pool_mu);
        free(j);
        return PX_EBUSY;
    }
    if (tail)
        tail->next = j;
    else
        head = j;
    tail = j;
    queued++;
    pthread_mutex_unlock(&pool_mu);
    return PX_OK;
}

void pool_stop(void)
{
    pthread_mutex_lock(&pool_mu);
    stopping = true;
    while (running > 0) /* running requests also take the queued ones */
        pthread_cond_wait(&pool_idle_cv, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
}

void pool_stats(unsigned *q, unsigned *r, unsigned *w)
{
    struct sched_stats st;
    unsigned admitted;

    sched_stats(&st);
    pthread_mutex_lock(&pool_mu);
    *q = queued;
    admitted = running;
    pthread_mutex_unlock(&pool_mu);
    *w = st.requests_parked > 0 ? (unsigned)st.requests_parked : 0;
    if (*w > admitted)
        *w = admitted;
    *r = admitted - *w;
}
