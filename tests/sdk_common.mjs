// sdk_common.mjs: what the SDK suites (tests/sdk/sdk_test.mjs, tests/sdk_doors/doors_test.mjs)
// share: the tiny runner (test, summary), child processes (startChild, waitLine, stopChild, ...)
// and the guards that kill every child and print "N passed, M failed" however the run ends.
// Only node: built-ins are imported, so each suite imports it by relative path.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..');
export const BUILD = path.resolve(ROOT, process.env.PX_BUILD || 'build');

// ---- tiny runner ------------------------------------------------------------------------------

// run.failed may be raised by a suite (a failed set-up); run.finished is set by summary().
export const run = { passed: 0, failed: 0, finished: false, abortsTolerated: 0 };

// The openai SDK, after it raised a stream's error event from the iterator, aborts its own
// request; when the body is still open, that abort rejects a promise nobody awaits (an
// AbortError that depends on timing, not on the proxy). A test that checks such an error
// wraps itself in this; nothing else is tolerated.
export async function toleratingSdkAbort(fn) {
    run.abortsTolerated++;
    try {
        return await fn();
    } finally {
        await new Promise((r) => setTimeout(r, 100)); // the SDK's abort settles in this window
        run.abortsTolerated--;
    }
}

export async function test(name, fn) {
    const t0 = Date.now();
    try {
        await fn();
        run.passed++;
        console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
        run.failed++;
        console.log(`FAIL ${name} (${Date.now() - t0} ms)`);
        const text = e && e.stack ? e.stack : String(e);
        for (const line of text.split('\n').slice(0, 12)) console.log(`     ${line}`);
    }
}

export function summary(extraFailures = 0) {
    run.finished = true;
    console.log(`${run.passed} passed, ${run.failed + extraFailures} failed`);
}

// ---- child processes --------------------------------------------------------------------------

export const children = []; // {name, proc, log: string[], exited: Promise<{code, signal}>}

export function startChild(name, file, args, env) {
    const proc = spawn(file, args, {
        cwd: ROOT,
        env: { PATH: '/usr/bin:/bin', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    const child = { name, proc, log: [], lineWaiters: [], code: undefined, signal: undefined };
    child.exited = new Promise((resolve) => {
        const gone = (code, signal, why) => {
            if (child.code !== undefined) return;
            child.code = code;
            child.signal = signal;
            resolve({ code, signal });
            for (const w of child.lineWaiters) w.fail(new Error(`${name} ${why}`));
            child.lineWaiters = [];
        };
        proc.on('exit', (code, signal) => gone(code, signal, `exited (code ${code}, signal ${signal})`));
        // A failed spawn (e.g. ENOENT) emits only 'error'.
        proc.on('error', (e) => gone(-1, null, `could not be started: ${e.message}`));
    });
    // Always drain both pipes: the proxy logs one line per request on stderr.
    for (const stream of [proc.stdout, proc.stderr]) {
        let pending = '';
        stream.setEncoding('utf8');
        stream.on('data', (d) => {
            pending += d;
            let nl;
            while ((nl = pending.indexOf('\n')) >= 0) {
                const line = pending.slice(0, nl);
                pending = pending.slice(nl + 1);
                child.log.push(line);
                if (child.log.length > 400) child.log.shift();
                for (const w of [...child.lineWaiters]) {
                    const m = w.re.exec(line);
                    if (m) {
                        child.lineWaiters.splice(child.lineWaiters.indexOf(w), 1);
                        w.ok(m);
                    }
                }
            }
        });
    }
    children.push(child);
    return child;
}

export function waitLine(child, re, ms = 10_000) {
    for (const line of child.log) {
        const m = re.exec(line);
        if (m) return Promise.resolve(m);
    }
    if (child.code !== undefined) return Promise.reject(new Error(`${child.name} is not running`));
    return new Promise((ok, fail) => {
        const t = setTimeout(() => fail(new Error(`${child.name}: no line matching ${re} in ${ms} ms`)), ms);
        child.lineWaiters.push({
            re,
            ok: (m) => (clearTimeout(t), ok(m)),
            fail: (e) => (clearTimeout(t), fail(e)),
        });
    });
}

export function alive(child) {
    return child.code === undefined;
}

// SIGTERM, then SIGKILL after graceMs. Returns {code, signal}.
export async function stopChild(child, graceMs = 5000) {
    if (!alive(child)) return { code: child.code, signal: child.signal };
    child.proc.kill('SIGTERM');
    let t;
    const r = await Promise.race([
        child.exited,
        new Promise((ok) => (t = setTimeout(() => ok(null), graceMs))),
    ]);
    clearTimeout(t);
    if (r) return r;
    child.proc.kill('SIGKILL');
    await child.exited;
    return { code: null, signal: 'SIGKILL', timedOut: true };
}

const onKill = [];

// Kills every child at once, then runs the suites' own clean-ups (installGuards' onKill).
export function killAllNow() {
    for (const c of children) if (alive(c)) c.proc.kill('SIGKILL');
    for (const f of onKill) f();
}

export function dumpLogs() {
    for (const c of children) {
        if (!c.log.length) continue;
        console.log(`---- last lines of ${c.name} (pid ${c.proc.pid}, port ${c.port}) ----`);
        for (const line of c.log.slice(-25)) console.log(`  ${line}`);
    }
}

// Kills the children and prints the summary line on exit, a signal, an uncaught error or when
// the whole run takes longer than timeoutMs; onKill runs after the children are killed.
// Returns the global timer: clearTimeout it when the suite is done.
export function installGuards(timeoutMs, onKillFn) {
    if (onKillFn) onKill.push(onKillFn);
    process.on('exit', killAllNow);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
        process.on(sig, () => {
            killAllNow();
            if (!run.finished) {
                console.log(`interrupted by ${sig}`);
                summary(1);
            }
            process.exit(1);
        });
    }
    process.on('uncaughtException', (e) => {
        killAllNow();
        console.log(`uncaught exception: ${e && e.stack ? e.stack : e}`);
        if (!run.finished) summary(1);
        process.exit(1);
    });
    process.on('unhandledRejection', (e) => {
        if (run.abortsTolerated > 0 && e && e.name === 'AbortError') {
            console.log('note: the SDK\'s own abort after a stream error event (tolerated here)');
            return;
        }
        killAllNow();
        console.log(`unhandled rejection: ${e && e.stack ? e.stack : e}`);
        if (!run.finished) summary(1);
        process.exit(1);
    });
    return setTimeout(() => {
        console.log(`global timeout: the test did not finish within ${timeoutMs / 1000} s`);
        dumpLogs();
        killAllNow();
        summary(1);
        process.exit(1);
    }, timeoutMs);
}

// mockGet(path) -> the mock's JSON at path (asserting 200), mockReset(): for the mock upstream
// listening on port() (a function: the suites start their mock later).
export function mockHelpers(port) {
    async function mockGet(p) {
        const r = await fetch(`http://127.0.0.1:${port()}${p}`);
        assert.equal(r.status, 200, `mock ${p}`);
        return r.json();
    }
    async function mockReset() {
        const r = await fetch(`http://127.0.0.1:${port()}/mock/reset`, { method: 'POST' });
        assert.equal(r.status, 200);
        await r.arrayBuffer();
    }
    return { mockGet, mockReset };
}
