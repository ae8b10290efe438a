/* spl_store.c: the spl approach's strategy store in SQLite (include/spl_store.h). One
 * connection per operation (cheap next to an LLM call, and no connection is shared between
 * threads); a file store is in WAL mode with a busy timeout, so proxies on one host can share
 * it; updates are single statements or IMMEDIATE transactions, so concurrent learners lose no
 * count. The in-memory store is a shared-cache memory database kept alive by one held
 * connection. */
#include "spl_store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "arena.h"
#include "log.h"
#include "scheduler.h"

#define MEMORY_URI "file:optillm-spl?mode=memory&cache=shared"
#define BUSY_MS    5000

static char *db_path; /* NULL: memory; set before requests run */
static bool opened;
/* The memory database, created on first use (an instance that never runs spl pays nothing)
 * and kept alive by this connection; guarded by holder_mu. */
static pthread_mutex_t holder_mu = PTHREAD_MUTEX_INITIALIZER;
static sqlite3 *holder;

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS strategies ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " tenant TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " text TEXT NOT NULL,"
    " example TEXT NOT NULL DEFAULT '',"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " successes INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL,"
    " last_used INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS strategies_tenant_type ON strategies (tenant, type);";

/* The ranking: 0.7 success rate (0.5 before any attempt) + 0.3 recency over 30 days. */
#define SCORE                                                                                      \
    "(0.7 * (CASE WHEN attempts > 0 THEN CAST(successes AS REAL) / attempts ELSE 0.5 END) + "      \
    "0.3 * MAX(0.0, 1.0 - (?9 - last_used) / 2592000.0))"

static sqlite3 *raw_conn(void)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc;

    rc = db_path ? sqlite3_open_v2(db_path, &db, flags, NULL)
                 : sqlite3_open_v2(MEMORY_URI, &db, flags | SQLITE_OPEN_URI, NULL);
    if (rc != SQLITE_OK) {
        log_warn("spl: cannot open the strategy store: %s", db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_MS);
    return db;
}

static sqlite3 *conn(void)
{
    if (!opened)
        return NULL;
    if (!db_path) {
        bool ok;

        pthread_mutex_lock(&holder_mu);
        if (!holder && (holder = raw_conn()) != NULL &&
            sqlite3_exec(holder, schema, NULL, NULL, NULL) != SQLITE_OK) {
            log_warn("spl: cannot create the in-memory strategy store: %s", sqlite3_errmsg(holder));
            sqlite3_close(holder);
            holder = NULL;
        }
        ok = holder != NULL;
        pthread_mutex_unlock(&holder_mu);
        if (!ok)
            return NULL;
    }
    return raw_conn();
}

static int fail(sqlite3 *db, const char *what)
{
    log_warn("spl: strategy store: %s: %s", what, sqlite3_errmsg(db));
    return -1;
}

int spl_store_open(const char *path, char *why, size_t wl)
{
    sqlite3 *db;
    char *err = NULL;

    spl_store_close();
    if (path) { /* the problems kept as examples are the users': readable by us only (the
                   -wal and -shm files take the file's mode) */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

        if (fd < 0) {
            snprintf(why, wl, "--spl-db %s: %s", path, strerror(errno));
            return -1;
        }
        close(fd);
    }
    db_path = path ? strdup(path) : NULL;
    opened = true;
    if (!db_path)
        return 0; /* created on first use */
    db = conn();
    if (!db || (db_path && sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, &err)) ||
        sqlite3_exec(db, schema, NULL, NULL, &err) != SQLITE_OK) {
        snprintf(why, wl, "--spl-db %s: %s", path ? path : "(memory)",
                 err  ? err
                 : db ? sqlite3_errmsg(db)
                      : "cannot open it");
        sqlite3_free(err);
        sqlite3_close(db);
        spl_store_close();
        return -1;
    }
    sqlite3_close(db);
    return 0;
}

void spl_store_close(void)
{
    pthread_mutex_lock(&holder_mu);
    sqlite3_close(holder);
    holder = NULL;
    pthread_mutex_unlock(&holder_mu);
    free(db_path);
    db_path = NULL;
    opened = false;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static int do_select(struct arena *a, const char *tenant, const char *type, bool learning,
                     struct spl_strategy *out, int max)
{
    static const char sql[] =
        "SELECT id, text, example, attempts, successes FROM strategies"
        " WHERE tenant = ?1 AND type = ?2 AND (?3 OR (attempts >= 5 AND successes >= 0.4 * "
        "attempts))"
        " ORDER BY " SCORE " DESC, id LIMIT ?4";
    sqlite3 *db = conn();
    sqlite3_stmt *st = NULL;
    int n = 0, rc;

    if (!db)
        return -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        n = fail(db, "select");
        goto out;
    }
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, learning);
    sqlite3_bind_int(st, 4, max);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)time(NULL));
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        out[n].id = sqlite3_column_int64(st, 0);
        out[n].text = arena_strdup(a, (const char *)sqlite3_column_text(st, 1));
        out[n].example = arena_strdup(a, (const char *)sqlite3_column_text(st, 2));
        out[n].attempts = (long)sqlite3_column_int64(st, 3);
        out[n].successes = (long)sqlite3_column_int64(st, 4);
        n++;
    }
    if (n < max && rc != SQLITE_DONE)
        n = fail(db, "select");
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static int insert(sqlite3 *db, const char *tenant, const char *type, const char *text)
{
    sqlite3_stmt *st = NULL;
    long long now = (long long)time(NULL);
    int rc;

    if (sqlite3_prepare_v2(db,
                           "INSERT INTO strategies (tenant, type, text, created, last_used)"
                           " VALUES (?1, ?2, ?3, ?4, ?4)",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* A count of (tenant, type) strategies, or -1. */
static long count_type(sqlite3 *db, const char *tenant, const char *type)
{
    sqlite3_stmt *st = NULL;
    long n = -1;

    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM strategies WHERE tenant = ?1 AND type = ?2",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static int do_add_first(const char *tenant, const char *type, const char *text)
{
    sqlite3 *db = conn();
    long n;
    int rc = -1;

    if (!db)
        return -1;
    if (exec(db, "BEGIN IMMEDIATE") != 0) {
        rc = fail(db, "begin");
        goto out;
    }
    n = count_type(db, tenant, type);
    if (n < 0 || (n == 0 && insert(db, tenant, type, text) != 0) || exec(db, "COMMIT") != 0) {
        rc = fail(db, "add");
        exec(db, "ROLLBACK");
        goto out;
    }
    rc = n == 0;
out:
    sqlite3_close(db);
    return rc;
}

static int do_add(const char *tenant, const char *type, const char *text)
{
    static const char prune[] =
        "DELETE FROM strategies WHERE id IN (SELECT id FROM strategies"
        " WHERE tenant = ?1 AND type = ?2 ORDER BY " SCORE " DESC, id DESC LIMIT -1 OFFSET ?3)";
    sqlite3 *db = conn();
    sqlite3_stmt *st = NULL;
    int rc = -1;

    if (!db)
        return -1;
    if (exec(db, "BEGIN IMMEDIATE") != 0 || insert(db, tenant, type, text) != 0 ||
        sqlite3_prepare_v2(db, prune, -1, &st, NULL) != SQLITE_OK) {
        rc = fail(db, "add");
        exec(db, "ROLLBACK");
        goto out;
    }
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, SPL_MAX_PER_TYPE);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)time(NULL));
    if (sqlite3_step(st) != SQLITE_DONE || exec(db, "COMMIT") != 0) {
        rc = fail(db, "add");
        exec(db, "ROLLBACK");
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static int do_record(long long id, bool success, const char *example)
{
    sqlite3 *db = conn();
    sqlite3_stmt *up = NULL, *del = NULL;
    int rc = -1;

    if (!db)
        return -1;
    if (exec(db, "BEGIN IMMEDIATE") != 0 ||
        sqlite3_prepare_v2(db,
                           "UPDATE strategies SET attempts = attempts + 1,"
                           " successes = successes + ?2, last_used = ?3,"
                           " example = COALESCE(?4, example) WHERE id = ?1",
                           -1, &up, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "DELETE FROM strategies WHERE id = ?1 AND attempts >= 5"
                           " AND successes < 0.3 * attempts",
                           -1, &del, NULL) != SQLITE_OK) {
        rc = fail(db, "record");
        exec(db, "ROLLBACK");
        goto out;
    }
    sqlite3_bind_int64(up, 1, id);
    sqlite3_bind_int(up, 2, success);
    sqlite3_bind_int64(up, 3, (sqlite3_int64)time(NULL));
    if (example)
        sqlite3_bind_text(up, 4, example, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(up, 4);
    sqlite3_bind_int64(del, 1, id);
    if (sqlite3_step(up) != SQLITE_DONE || sqlite3_step(del) != SQLITE_DONE ||
        exec(db, "COMMIT") != 0) {
        rc = fail(db, "record");
        exec(db, "ROLLBACK");
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(up);
    sqlite3_finalize(del);
    sqlite3_close(db);
    return rc;
}

static long do_count(const char *tenant)
{
    sqlite3 *db = conn();
    sqlite3_stmt *st = NULL;
    long n = -1;

    if (!db)
        return -1;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM strategies WHERE tenant = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            n = (long)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* ---- the public calls: on a helper thread when called from a coroutine ------------------ */

/* SQLite's calls block (disk, locks held by another proxy) and go deep: they run through
 * sched_offload, so the spl approach itself stays on a coroutine while it waits for the
 * model. */
enum op_kind { OP_SELECT, OP_ADD_FIRST, OP_ADD, OP_RECORD, OP_COUNT };

struct op {
    enum op_kind kind;
    struct arena *a;
    const char *tenant, *type, *text;
    bool flag;
    struct spl_strategy *out;
    int max;
    long long id;
    long result;
};

static void op_main(void *arg)
{
    struct op *o = arg;

    switch (o->kind) {
    case OP_SELECT:
        o->result = do_select(o->a, o->tenant, o->type, o->flag, o->out, o->max);
        break;
    case OP_ADD_FIRST:
        o->result = do_add_first(o->tenant, o->type, o->text);
        break;
    case OP_ADD:
        o->result = do_add(o->tenant, o->type, o->text);
        break;
    case OP_RECORD:
        o->result = do_record(o->id, o->flag, o->text);
        break;
    case OP_COUNT:
        o->result = do_count(o->tenant);
        break;
    }
}

static long run_op(struct op *o)
{
    sched_offload(op_main, o); /* runs inline when no helper thread can start */
    return o->result;
}

int spl_select(struct arena *a, const char *tenant, const char *type, bool learning,
               struct spl_strategy *out, int max)
{
    struct op o = {.kind = OP_SELECT,
                   .a = a,
                   .tenant = tenant,
                   .type = type,
                   .flag = learning,
                   .out = out,
                   .max = max};

    return (int)run_op(&o);
}

int spl_add_first(const char *tenant, const char *type, const char *text)
{
    struct op o = {.kind = OP_ADD_FIRST, .tenant = tenant, .type = type, .text = text};

    return (int)run_op(&o);
}

int spl_add(const char *tenant, const char *type, const char *text)
{
    struct op o = {.kind = OP_ADD, .tenant = tenant, .type = type, .text = text};

    return (int)run_op(&o);
}

int spl_record(long long id, bool success, const char *example)
{
    struct op o = {.kind = OP_RECORD, .id = id, .flag = success, .text = example};

    return (int)run_op(&o);
}

long spl_count(const char *tenant)
{
    struct op o = {.kind = OP_COUNT, .tenant = tenant};

    return run_op(&o);
}
