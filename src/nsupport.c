/* nsupport.c: does an upstream accept n > 1? Remembered per upstream base URL (tenants may
 * have their own), in a small fixed table under a lock. A refusal is re-probed after
 * NSUPPORT_REPROBE_S, so an upstream that was upgraded, or a refusal read wrongly, does not
 * cost parallel single calls until the next restart. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define NSUPPORT_SLOTS 64

struct nslot {
    uint64_t hash; /* FNV-1a of the base URL; 0 = free */
    int v;         /* 0 refuses n, 1 accepts */
    long long at_us;
};

static pthread_mutex_t ns_mu = PTHREAD_MUTEX_INITIALIZER; /* guards ns_slots */
static struct nslot ns_slots[NSUPPORT_SLOTS];

static uint64_t url_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

int nsupport_get(const char *base_url, long long now_us)
{
    uint64_t h = url_hash(base_url);
    int v = -1;

    pthread_mutex_lock(&ns_mu);
    for (size_t i = 0; i < NSUPPORT_SLOTS; i++) {
        if (ns_slots[i].hash != h)
            continue;
        v = ns_slots[i].v;
        if (v == 0 && now_us - ns_slots[i].at_us >= NSUPPORT_REPROBE_S * 1000000LL)
            v = -1; /* ask again */
        break;
    }
    pthread_mutex_unlock(&ns_mu);
    return v;
}

void nsupport_set(const char *base_url, int v, long long now_us)
{
    uint64_t h = url_hash(base_url);
    size_t slot = NSUPPORT_SLOTS, victim = 0;

    pthread_mutex_lock(&ns_mu);
    for (size_t i = 0; i < NSUPPORT_SLOTS; i++) {
        if (ns_slots[i].hash == h) {
            slot = i;
            break;
        }
        /* a free slot, else the least recently set one */
        if (ns_slots[victim].hash != 0 &&
            (ns_slots[i].hash == 0 || ns_slots[i].at_us < ns_slots[victim].at_us))
            victim = i;
    }
    if (slot == NSUPPORT_SLOTS)
        slot = victim;
    ns_slots[slot].hash = h;
    ns_slots[slot].v = v;
    ns_slots[slot].at_us = now_us;
    pthread_mutex_unlock(&ns_mu);
}

void nsupport_reset(void)
{
    pthread_mutex_lock(&ns_mu);
    memset(ns_slots, 0, sizeof(ns_slots));
    pthread_mutex_unlock(&ns_mu);
}
