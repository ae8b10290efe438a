// sdk_test.mjs: compatibility test of the proxy with the official `openai` npm SDK.
//
// Starts build/mock_upstream and build/optillm (build dir from $PX_BUILD, default "build",
// relative to the repository root two levels up), points `new OpenAI({baseURL})` at the proxy
// and checks what a user of the SDK would see: plain and streamed completions, every approach
// and combination, the optillm_approach body field, n, models.list, the SDK's error classes,
// client timeouts and aborts. Only 127.0.0.1 is used. The last line printed is always
// "N passed, M failed"; the exit code is non-zero when anything failed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import OpenAI from 'openai';
import {
    alive, BUILD, children, dumpLogs, installGuards, mockHelpers, run, startChild, stopChild, summary, test, waitLine,
} from '../sdk_common.mjs';

const GLOBAL_TIMEOUT_MS = 120_000;
const QUESTION = [{ role: 'user', content: 'What is 6 * 7?' }];
const KEY = 'sk-sdk-test';
const GATE_KEY = 'gate-xyz';
const UPSTREAM_KEY = 'sk-upstream-sdk-test';

// In a&b the second approach gets the first one's answer ("... The answer is 42.") as its user
// message, which holds no arithmetic; this key tells the noisy mock that its truth is 42.
let keyDir;
function removeKeyDir() {
    if (keyDir) fs.rmSync(keyDir, { recursive: true, force: true });
    keyDir = undefined;
}
async function startMock() {
    keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'optillm-sdk-'));
    const key = path.join(keyDir, 'key.jsonl');
    fs.writeFileSync(key, JSON.stringify({ question: 'The answer is 42', answer: 42 }) + '\n');
    const c = startChild('mock_upstream', path.join(BUILD, 'mock_upstream'), ['--port', '0', '--noisy-key', key], {});
    c.port = Number((await waitLine(c, /^PORT (\d+)/))[1]);
    return c;
}

async function startProxy(mockPort, extraArgs = [], env = {}) {
    // --retries 0: the error cases check how the SDK maps statuses, at once; the proxy's own
    // retries are covered by the C integration tests.
    const args = ['--port', '0', '--base-url', `http://127.0.0.1:${mockPort}/v1`, '--sse-keepalive', '0.5',
        '--retries', '0'];
    const c = startChild('optillm', path.join(BUILD, 'optillm'), [...args, ...extraArgs], env);
    c.port = Number((await waitLine(c, /listening on http:\/\/127\.0\.0\.1:(\d+)\/v1/))[1]);
    return c;
}

const deadline = installGuards(GLOBAL_TIMEOUT_MS, removeKeyDir);

// ---- helpers ----------------------------------------------------------------------------------

let mock;

const { mockGet, mockReset } = mockHelpers(() => mock.port);

// A fetch that keeps a copy of every SSE body exactly as it came over the wire, so the stream
// can be checked beyond what the SDK tolerates (it normalises chunks and skips comments).
const rawStreams = [];
async function recordingFetch(url, init) {
    const res = await fetch(url, init);
    if ((res.headers.get('content-type') || '').includes('text/event-stream')) {
        rawStreams.push({
            status: res.status,
            text: res.clone().text().catch((e) => `<<read error: ${e}>>`),
        });
    }
    return res;
}

function makeClient(port, opts = {}) {
    return new OpenAI({
        baseURL: `http://127.0.0.1:${port}/v1`,
        apiKey: KEY,
        fetch: recordingFetch,
        ...opts,
    });
}

// Checks the last recorded SSE body: only data lines and comments, every data payload JSON
// except the final [DONE], every choice with index, delta and an explicit finish_reason.
async function checkRawSse() {
    assert.ok(rawStreams.length > 0, 'no SSE body was recorded');
    const rec = rawStreams[rawStreams.length - 1];
    const text = await rec.text;
    assert.equal(rec.status, 200);
    const lines = text.split(/\r?\n/);
    const data = [];
    let comments = 0;
    for (const line of lines) {
        if (line === '') continue;
        if (line.startsWith(':')) {
            comments++;
            continue;
        }
        assert.ok(line.startsWith('data: '), `unexpected SSE line: ${JSON.stringify(line.slice(0, 200))}`);
        data.push(line.slice(6));
    }
    assert.ok(data.length >= 2, 'too few data lines');
    assert.equal(data[data.length - 1], '[DONE]', 'the stream does not end with data: [DONE]');
    for (const d of data.slice(0, -1)) {
        let j;
        assert.doesNotThrow(() => (j = JSON.parse(d)), `data line is not JSON: ${d.slice(0, 200)}`);
        assert.ok(!('error' in j), `error in stream: ${d.slice(0, 300)}`);
        assert.ok(Array.isArray(j.choices), `chunk without choices: ${d.slice(0, 200)}`);
        for (const c of j.choices) {
            assert.equal(typeof c.index, 'number', `choice without index: ${d.slice(0, 200)}`);
            assert.equal(typeof c.delta, 'object', `choice without delta: ${d.slice(0, 200)}`);
            assert.ok('finish_reason' in c, `choice without finish_reason: ${d.slice(0, 200)}`);
        }
    }
    return { comments, dataLines: data.length };
}

function checkUsage(u, what = 'usage') {
    assert.ok(u, `${what} missing`);
    for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens'])
        assert.ok(Number.isInteger(u[k]) && u[k] >= 0, `${what}.${k} = ${u[k]}`);
    assert.ok(u.total_tokens > 0, `${what}.total_tokens = 0`);
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, `${what}: total != prompt + completion`);
}

// Non-stream completion as an approach returns it.
function checkCompletion(r, model, nChoices, { answer = '42', noTags = false } = {}) {
    assert.equal(typeof r.id, 'string');
    assert.ok(r.id.length > 0, 'empty id');
    assert.equal(r.object, 'chat.completion');
    assert.ok(Number.isInteger(r.created), 'created');
    assert.equal(r.model, model, 'model differs from the one sent');
    assert.equal(r.choices.length, nChoices, 'number of choices');
    r.choices.forEach((c, i) => {
        assert.equal(c.index, i, 'choice index');
        assert.equal(c.message.role, 'assistant');
        assert.equal(typeof c.message.content, 'string');
        assert.ok(c.message.content.length > 0, 'empty content');
        if (answer) assert.ok(c.message.content.includes(answer), `choice ${i}: no "${answer}" in ${JSON.stringify(c.message.content)}`);
        if (noTags)
            assert.ok(!/<thinking>|<output>/.test(c.message.content), `tags in ${JSON.stringify(c.message.content)}`);
        assert.equal(c.finish_reason, 'stop', `choice ${i}: finish_reason`);
    });
    checkUsage(r.usage);
}

async function collect(stream) {
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
}

// Streamed completion: per-choice text, one finish per choice, one final usage chunk.
function checkChunks(chunks, model, nChoices, { answer = '42', noTags = false, usage = true } = {}) {
    assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
    const id = chunks[0].id;
    assert.ok(typeof id === 'string' && id.length > 0, 'chunk id');
    const text = new Map();
    const finishes = new Map();
    const usageAt = [];
    chunks.forEach((ch, k) => {
        assert.equal(ch.object, 'chat.completion.chunk', `chunk ${k} object`);
        assert.equal(ch.id, id, `chunk ${k} has another id`);
        assert.equal(ch.model, model, `chunk ${k} model`);
        if (ch.usage) usageAt.push(k);
        for (const c of ch.choices) {
            if (!text.has(c.index)) text.set(c.index, '');
            if (typeof c.delta?.content === 'string') text.set(c.index, text.get(c.index) + c.delta.content);
            if (c.finish_reason != null) finishes.set(c.index, [...(finishes.get(c.index) || []), c.finish_reason]);
        }
    });
    assert.deepEqual([...text.keys()].sort(), [...Array(nChoices).keys()], 'choice indexes');
    for (const [i, t] of text) {
        assert.ok(t.length > 0, `choice ${i}: empty text`);
        if (answer) assert.ok(t.includes(answer), `choice ${i}: no "${answer}" in ${JSON.stringify(t)}`);
        if (noTags) assert.ok(!/<thinking>|<output>/.test(t), `choice ${i}: tags in ${JSON.stringify(t)}`);
        assert.deepEqual(finishes.get(i), ['stop'], `choice ${i}: finish reasons`);
    }
    if (usage) {
        assert.deepEqual(usageAt, [chunks.length - 1], 'usage must be in exactly one chunk, the last');
        const last = chunks[chunks.length - 1];
        assert.deepEqual(last.choices, [], 'usage chunk choices');
        checkUsage(last.usage, 'stream usage');
    } else {
        assert.deepEqual(usageAt, [], 'usage sent without include_usage');
    }
    return text;
}

async function expectError(promise, cls, check) {
    let err;
    let got;
    try {
        const r = await promise;
        got = r;
        if (r && typeof r[Symbol.asyncIterator] === 'function') got = await collect(r);
    } catch (e) {
        err = e;
    }
    assert.ok(err, `expected ${cls.name}, but the request succeeded: ${JSON.stringify(got)?.slice(0, 400)}`);
    assert.ok(
        err instanceof cls,
        `expected ${cls.name}, got ${err?.constructor?.name} (status ${err?.status}): ${err?.message}`,
    );
    if (check) check(err);
    return err;
}

// ---- the cases --------------------------------------------------------------------------------

async function main() {
    const t0 = Date.now();
    mock = await startMock();
    const proxy = await startProxy(mock.port);
    const client = makeClient(proxy.port);
    const noRetry = makeClient(proxy.port, { maxRetries: 0 });

    // 1. passthrough
    await test('passthrough: chat.completions.create', async () => {
        await mockReset();
        const r = await client.chat.completions.create({
            model: 'mock',
            messages: [
                { role: 'system', content: 'You are terse.' },
                { role: 'user', content: 'Say hello to the SDK' },
            ],
        });
        checkCompletion(r, 'mock', 1, { answer: 'mock reply 0:' });
        // The client's key reached the upstream (no server key configured).
        const reqs = await mockGet('/mock/requests');
        assert.equal(reqs.length, 1);
        assert.equal(reqs[0].auth, `Bearer ${KEY}`);
        assert.equal(reqs[0].body.model, 'mock');
    });

    // 2. passthrough stream
    await test('passthrough: stream with include_usage', async () => {
        const s = await client.chat.completions.create({
            model: 'mock',
            messages: [{ role: 'user', content: 'Say hello to the SDK' }],
            stream: true,
            stream_options: { include_usage: true },
        });
        const chunks = await collect(s);
        checkChunks(chunks, 'mock', 1, { answer: 'mock reply 0:' });
        await checkRawSse();
    });

    await test('passthrough: stream without include_usage has no usage chunk', async () => {
        const s = await client.chat.completions.create({
            model: 'mock',
            messages: [{ role: 'user', content: 'Say hello' }],
            stream: true,
        });
        checkChunks(await collect(s), 'mock', 1, { answer: 'mock reply 0:', usage: false });
        await checkRawSse();
    });

    // 3. every approach, combinations and aliases
    const slugs = [
        'bon',
        'moa',
        'self_consistency',
        'majority_voting',
        're2',
        'cot_reflection',
        'bon&moa',
        're2|bon',
        'self-consistency',
        'mixture-of-agents',
        'router',
        'spl',
    ];
    for (const slug of slugs) {
        const model = `${slug}-mock@noisy=1,p=1`;
        const n = slug === 're2|bon' ? 2 : 1;
        const noTags = slug === 'cot_reflection';
        await test(`approach ${slug}: non-stream`, async () => {
            await mockReset();
            const r = await client.chat.completions.create({ model, messages: QUESTION });
            checkCompletion(r, model, n, { noTags });
            if (slug === 'bon&moa') {
                // The pipeline: moa's drafts answer bon's answer, not the original question.
                const reqs = await mockGet('/mock/requests');
                const users = reqs.map((q) => q.body.messages.filter((m) => m.role === 'user').pop()?.content);
                assert.ok(users.includes('What is 6 * 7?'), 'bon never saw the question');
                assert.ok(
                    users.some((u) => typeof u === 'string' && u.startsWith('Let me work it out') && u.includes('42')),
                    `moa never got bon's answer: ${JSON.stringify(users.map((u) => String(u).slice(0, 60)))}`,
                );
            }
        });
        await test(`approach ${slug}: stream`, async () => {
            const s = await client.chat.completions.create({
                model,
                messages: QUESTION,
                stream: true,
                stream_options: { include_usage: true },
            });
            checkChunks(await collect(s), model, n, { noTags });
            await checkRawSse();
        });
    }

    await test('approach stream with keep-alive comments before the answer', async () => {
        const model = 're2-mock@noisy=1,p=1,latency=1300';
        const s = await client.chat.completions.create({
            model,
            messages: QUESTION,
            stream: true,
            stream_options: { include_usage: true },
        });
        checkChunks(await collect(s), model, 1);
        const raw = await checkRawSse();
        assert.ok(raw.comments >= 1, `no ': keep-alive' comment in the stream (${raw.comments})`);
    });

    // 4. optillm_approach as an extra body field (the SDK sends unknown params as-is)
    await test('optillm_approach: moa as an extra create() param', async () => {
        await mockReset();
        const model = 'mock@noisy=1,p=1';
        const r = await client.chat.completions.create({ model, messages: QUESTION, optillm_approach: 'moa' });
        checkCompletion(r, model, 1);
        assert.ok(r.choices[0].message.content.startsWith('Combining the candidates'), r.choices[0].message.content);
        const stats = await mockGet('/mock/stats');
        assert.equal(stats.calls, 3, 'moa makes 3 upstream calls');
        const reqs = await mockGet('/mock/requests');
        assert.ok(!JSON.stringify(reqs).includes('optillm_approach'), 'optillm_approach reached the upstream');
    });

    await test('optillm_approach: bon as an extra param, streamed', async () => {
        await mockReset();
        const model = 'mock@noisy=1,p=1';
        const s = await client.chat.completions.create({
            model,
            messages: QUESTION,
            optillm_approach: 'bon',
            stream: true,
            stream_options: { include_usage: true },
        });
        checkChunks(await collect(s), model, 1);
        assert.equal((await mockGet('/mock/stats')).calls, 4, 'bon makes 4 upstream calls');
    });

    // 4b. plugins (itest_plugins1 has the details): what an SDK user sees
    await test('privacy: no PII upstream, the originals back in a stream split inside placeholders', async () => {
        await mockReset();
        const email = 'jane.doe@example.com';
        const card = '5235-9276-8877-8661';
        const s = await client.chat.completions.create({
            model: 'privacy-mock@piece_bytes=3',
            messages: [{ role: 'user', content: `mail ${email} card ${card}` }],
            stream: true,
        });
        let text = '';
        for await (const ch of s) text += ch.choices[0]?.delta?.content ?? '';
        assert.ok(text.includes(email) && text.includes(card), text);
        assert.ok(!text.includes('[EMAIL_1]'), text);
        const sent = JSON.stringify(await mockGet('/mock/requests'));
        assert.ok(!sent.includes(email) && !sent.includes(card), 'PII reached the upstream');
        assert.ok(sent.includes('[EMAIL_1]') && sent.includes('[CARD_1]'), 'no placeholders upstream');
    });

    await test('json: a json_schema answer the upstream got wrong once is re-asked and valid', async () => {
        await mockReset();
        const r = await client.chat.completions.create({
            model: 'json-mock@json_bad=1',
            messages: QUESTION,
            response_format: {
                type: 'json_schema',
                json_schema: {
                    name: 'a',
                    strict: true,
                    schema: {
                        type: 'object',
                        properties: { answer: { type: 'string' } },
                        required: ['answer'],
                        additionalProperties: false,
                    },
                },
            },
        });
        const j = JSON.parse(r.choices[0].message.content);
        assert.equal(typeof j.answer, 'string');
        assert.equal((await mockGet('/mock/stats')).calls, 2, 'one re-ask');
    });

    await test('json: an upstream that never complies -> InternalServerError 502', async () => {
        await mockReset();
        await assert.rejects(
            client.chat.completions.create({
                model: 'json-mock@json_bad=100',
                messages: QUESTION,
                response_format: {
                    type: 'json_schema',
                    json_schema: { name: 'a', schema: { type: 'object', required: ['answer'] } },
                },
                optillm_json_max_retries: 1,
            }),
            (e) => e instanceof OpenAI.InternalServerError && e.status === 502 && e.code === 'invalid_structured_output',
        );
    });

    // 5. n
    await test('n=2 with re2-mock: 2 choices', async () => {
        const r = await client.chat.completions.create({ model: 're2-mock', messages: QUESTION, n: 2 });
        checkCompletion(r, 're2-mock', 2, { answer: 'mock reply' });
    });

    await test('n=2 with re2-mock, streamed: 2 choices', async () => {
        const s = await client.chat.completions.create({
            model: 're2-mock',
            messages: QUESTION,
            n: 2,
            stream: true,
            stream_options: { include_usage: true },
        });
        checkChunks(await collect(s), 're2-mock', 2, { answer: 'mock reply' });
        await checkRawSse();
    });

    // 5b. tools through an approach: the agent loop as an SDK user writes it
    const TOOLS = [
        {
            type: 'function',
            function: {
                name: 'get_weather',
                description: 'Weather of a city',
                parameters: { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] },
            },
        },
    ];
    const WEATHER_Q = [{ role: 'user', content: 'Weather in Paris?' }];
    await test('tools through bon: tool_calls, then the tool result gets a text answer', async () => {
        const r = await client.chat.completions.create({ model: 'bon-mock', messages: WEATHER_Q, tools: TOOLS });
        const c = r.choices[0];
        assert.equal(c.finish_reason, 'tool_calls');
        assert.equal(c.message.content, null);
        assert.equal(c.message.tool_calls.length, 1);
        const call = c.message.tool_calls[0];
        assert.equal(call.type, 'function');
        assert.equal(call.function.name, 'get_weather');
        assert.equal(JSON.parse(call.function.arguments).q, 'Weather in Paris?');
        checkUsage(r.usage);
        await mockReset();
        const r2 = await client.chat.completions.create({
            model: 'bon-mock',
            tools: TOOLS,
            messages: [...WEATHER_Q, c.message, { role: 'tool', tool_call_id: call.id, content: '18 C, sunny' }],
        });
        assert.equal(r2.choices[0].finish_reason, 'stop');
        assert.equal(typeof r2.choices[0].message.content, 'string');
        // The samples carry the history (the ratings have their own prompt).
        const reqs = await mockGet('/mock/requests');
        assert.ok(
            reqs.some((q) => q.body.messages.some((m) => m.role === 'tool' && m.tool_call_id === call.id)),
            'the tool result never went upstream',
        );
    });

    await test('tools through moa, streamed: delta.tool_calls accumulate to one call', async () => {
        const s = await client.chat.completions.create({
            model: 'moa-mock',
            messages: WEATHER_Q,
            tools: TOOLS,
            stream: true,
            stream_options: { include_usage: true },
        });
        const calls = new Map();
        let finish = null;
        for await (const ch of s) {
            for (const c of ch.choices) {
                for (const tc of c.delta?.tool_calls || []) {
                    const cur = calls.get(tc.index) || { id: '', name: '', args: '' };
                    if (tc.id) cur.id = tc.id;
                    if (tc.function?.name) cur.name = tc.function.name;
                    if (tc.function?.arguments) cur.args += tc.function.arguments;
                    calls.set(tc.index, cur);
                }
                if (c.finish_reason) finish = c.finish_reason;
            }
        }
        assert.equal(finish, 'tool_calls');
        assert.equal(calls.size, 1);
        const call = calls.get(0);
        assert.equal(call.name, 'get_weather');
        assert.ok(call.id.length > 0, 'no tool call id');
        assert.equal(typeof JSON.parse(call.args), 'object');
        await checkRawSse();
    });

    await test('tools on an approach that cannot carry them -> BadRequestError with param "tools"', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'mcts-mock', messages: WEATHER_Q, tools: TOOLS }),
            OpenAI.BadRequestError,
            (e) => {
                assert.equal(e.param, 'tools');
                assert.ok(/bon/.test(e.message), e.message);
            },
        );
    });

    await test('response_format json_object through self_consistency: the answer parses', async () => {
        const r = await client.chat.completions.create({
            model: 'self_consistency-mock',
            messages: QUESTION,
            response_format: { type: 'json_object' },
        });
        assert.equal(typeof JSON.parse(r.choices[0].message.content), 'object');
    });

    // 6. models
    await test('models.list: .data and async iteration', async () => {
        const page = await client.models.list();
        assert.deepEqual(page.data.map((m) => m.id).sort(), ['mock-model', 'mock-model-2']);
        for (const m of page.data) assert.equal(m.object, 'model');
        const ids = [];
        for await (const m of client.models.list()) ids.push(m.id);
        assert.deepEqual(ids.sort(), ['mock-model', 'mock-model-2']);
    });

    // 7. errors
    const msg = (content = 'x') => [{ role: 'user', content }];
    await test('error: upstream 429 -> RateLimitError, not retried with maxRetries 0', async () => {
        await mockReset();
        await expectError(noRetry.chat.completions.create({ model: 'mock@status=429', messages: msg() }), OpenAI.RateLimitError, (e) => {
            assert.equal(e.status, 429);
            assert.ok(e instanceof OpenAI.APIError);
            assert.ok(e.message.includes('mock error 429'), e.message);
        });
        assert.equal((await mockGet('/mock/stats')).calls, 1);
    });
    await test('error: upstream 400 -> BadRequestError', async () => {
        await expectError(noRetry.chat.completions.create({ model: 'mock@status=400', messages: msg() }), OpenAI.BadRequestError, (e) =>
            assert.equal(e.status, 400),
        );
    });
    await test('error: upstream 500 -> InternalServerError', async () => {
        await expectError(noRetry.chat.completions.create({ model: 'mock@status=500', messages: msg() }), OpenAI.InternalServerError, (e) =>
            assert.equal(e.status, 500),
        );
    });
    // Upstream error bodies that are not OpenAI-shaped reach the SDK as OpenAI errors.
    await test('error: upstream 500 {"error":"TypeError","message":...} -> InternalServerError with its text', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'mock@status=500,errbody=typeerror', messages: msg() }),
            OpenAI.InternalServerError,
            (e) => {
                assert.equal(e.status, 500);
                assert.ok(e.message.includes('TypeError: mock 500: cannot read properties of undefined'), e.message);
                assert.equal(e.code, 'upstream_error');
            },
        );
    });
    await test('error: upstream 400 plain text on a stream request -> BadRequestError with its text', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'mock@status=400,errbody=plain', messages: msg(), stream: true }),
            OpenAI.BadRequestError,
            (e) => {
                assert.equal(e.status, 400);
                assert.ok(e.message.includes('upstream exploded: mock 400'), e.message);
            },
        );
    });
    await test('error: gateway HTML 502 inside an approach -> InternalServerError with readable text', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'moa-mock@status=502,errbody=html', messages: msg() }),
            OpenAI.InternalServerError,
            (e) => {
                assert.equal(e.status, 502);
                assert.ok(e.message.includes('502 Bad Gateway') && !e.message.includes('<'), e.message);
            },
        );
    });
    await test('error: upstream 429 inside an approach -> RateLimitError', async () => {
        await expectError(noRetry.chat.completions.create({ model: 'bon-mock@status=429', messages: msg() }), OpenAI.RateLimitError, (e) =>
            assert.equal(e.status, 429),
        );
    });
    await test('error: upstream 429 inside a streamed approach, before any byte -> RateLimitError', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'moa-mock@status=429', messages: msg(), stream: true }),
            OpenAI.RateLimitError,
            (e) => assert.equal(e.status, 429),
        );
    });
    await test('error: upstream 429 in a streamed approach after keep-alives -> APIError while iterating', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'bon-mock@status=429,latency=1200', messages: msg(), stream: true }),
            OpenAI.APIError,
            (e) => assert.ok(String(e.message).includes('mock error 429'), e.message),
        );
    });
    await test('error: messages: [] -> BadRequestError with param "messages"', async () => {
        await expectError(noRetry.chat.completions.create({ model: 'mock', messages: [] }), OpenAI.BadRequestError, (e) => {
            assert.equal(e.status, 400);
            assert.equal(e.param, 'messages');
        });
    });
    await test('error: model "moa&nosuch-mock" -> BadRequestError (param model)', async () => {
        await expectError(noRetry.chat.completions.create({ model: 'moa&nosuch-mock', messages: msg() }), OpenAI.BadRequestError, (e) => {
            assert.equal(e.status, 400);
            assert.equal(e.param, 'model');
        });
    });
    await test('error: model "nosuch&moa-mock" -> BadRequestError', async () => {
        await mockReset();
        try {
            await expectError(noRetry.chat.completions.create({ model: 'nosuch&moa-mock', messages: msg() }), OpenAI.BadRequestError, (e) =>
                assert.equal(e.status, 400),
            );
        } catch (e) {
            const reqs = await mockGet('/mock/requests');
            throw new assert.AssertionError({
                message: `${e.message}; the upstream received ${reqs.length} call(s) with model(s) ${JSON.stringify(reqs.map((r) => r.body?.model))}`,
            });
        }
    });
    await test('error: optillm_approach "nosuch" -> BadRequestError (param optillm_approach)', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'mock', messages: msg(), optillm_approach: 'nosuch' }),
            OpenAI.BadRequestError,
            (e) => assert.equal(e.param, 'optillm_approach'),
        );
    });

    // gate key on a second proxy (it needs a server key for the upstream then)
    const gated = await startProxy(mock.port, ['--optillm-api-key', GATE_KEY], { OPENAI_API_KEY: UPSTREAM_KEY });
    await test('gate: wrong key -> AuthenticationError (401)', async () => {
        const bad = makeClient(gated.port, { apiKey: 'wrong-key', maxRetries: 0 });
        await expectError(bad.chat.completions.create({ model: 'mock', messages: msg() }), OpenAI.AuthenticationError, (e) =>
            assert.equal(e.status, 401),
        );
        await expectError(bad.models.list(), OpenAI.AuthenticationError, (e) => assert.equal(e.status, 401));
    });
    await test('gate: right key works; the gate key never reaches the upstream', async () => {
        await mockReset();
        const good = makeClient(gated.port, { apiKey: GATE_KEY, maxRetries: 0 });
        const r = await good.chat.completions.create({ model: 'moa-mock@noisy=1,p=1', messages: QUESTION });
        checkCompletion(r, 'moa-mock@noisy=1,p=1', 1);
        const s = await good.chat.completions.create({
            model: 'mock',
            messages: msg('hi'),
            stream: true,
            stream_options: { include_usage: true },
        });
        checkChunks(await collect(s), 'mock', 1, { answer: 'mock reply 0:' });
        const stats = await mockGet('/mock/stats');
        assert.deepEqual(stats.keys, [`Bearer ${UPSTREAM_KEY}`]);
        assert.ok(!JSON.stringify(await mockGet('/mock/requests')).includes(GATE_KEY), 'gate key forwarded');
    });

    // The server's key refused upstream: a 502 for the operator that the SDK does not retry
    // (x-should-retry: false), not a 401 that would blame the client's key (issue 10, item 12).
    await test('server key rejected upstream -> InternalServerError 502, not retried', async () => {
        await mockReset();
        const good = makeClient(gated.port, { apiKey: GATE_KEY, maxRetries: 2 });
        await expectError(good.chat.completions.create({ model: 'mock@status=401', messages: msg() }), OpenAI.InternalServerError, (e) => {
            assert.equal(e.status, 502);
            assert.equal(e.code, 'upstream_key_rejected');
        });
        assert.equal((await mockGet('/mock/stats')).calls, 1);
    });

    // 8. client-side timeouts and aborts; the proxy must survive them
    await test('timeout: 500 ms against latency=3000 -> APIConnectionTimeoutError; proxy still answers', async () => {
        const t = Date.now();
        await expectError(
            noRetry.chat.completions.create({ model: 'mock@latency=3000', messages: msg() }, { timeout: 500 }),
            OpenAI.APIConnectionTimeoutError,
        );
        assert.ok(Date.now() - t < 2500, `timeout took ${Date.now() - t} ms`);
        const r = await noRetry.chat.completions.create({ model: 'mock', messages: msg('again') }, { timeout: 5000 });
        checkCompletion(r, 'mock', 1, { answer: 'mock reply 0:' });
        assert.ok(alive(proxy), 'proxy exited');
    });
    await test('timeout during an approach (moa, latency=3000) -> APIConnectionTimeoutError; proxy still answers', async () => {
        await expectError(
            noRetry.chat.completions.create({ model: 'moa-mock@latency=3000', messages: msg() }, { timeout: 500 }),
            OpenAI.APIConnectionTimeoutError,
        );
        const r = await noRetry.chat.completions.create({ model: 're2-mock@noisy=1,p=1', messages: QUESTION }, { timeout: 5000 });
        checkCompletion(r, 're2-mock@noisy=1,p=1', 1);
        assert.ok(alive(proxy), 'proxy exited');
    });
    await test('abort of a streamed approach while it waits upstream: ends at once; proxy still answers', async () => {
        // The SDK ends the iteration quietly when the signal aborts the body read (its Stream
        // treats a transport AbortError as the end); before the response it throws
        // APIUserAbortError. Either way it must end at the abort, not when the answer is ready.
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(), 800);
        const t = Date.now();
        const chunks = [];
        try {
            const s = await noRetry.chat.completions.create(
                { model: 'bon-mock@noisy=1,latency=2500', messages: QUESTION, stream: true },
                { signal: ac.signal },
            );
            for await (const c of s) chunks.push(c);
        } catch (e) {
            assert.ok(e instanceof OpenAI.APIUserAbortError, `${e?.constructor?.name}: ${e?.message}`);
        } finally {
            clearTimeout(timer);
        }
        const ms = Date.now() - t;
        assert.ok(ms >= 700 && ms < 1800, `the stream ended after ${ms} ms, not at the abort (800 ms)`);
        assert.ok(!chunks.some((c) => c.choices.some((ch) => ch.finish_reason)), 'a finished answer arrived');
        const s = await noRetry.chat.completions.create(
            { model: 'cot_reflection-mock@noisy=1,p=1', messages: QUESTION, stream: true },
            { timeout: 5000 },
        );
        checkChunks(await collect(s), 'cot_reflection-mock@noisy=1,p=1', 1, { noTags: true, usage: false });
        assert.ok(alive(proxy), 'proxy exited');
    });

    // Orderly shutdown: every child still running and exiting 0 on SIGTERM.
    await test('shutdown: proxies and mock exit 0 on SIGTERM', async () => {
        for (const c of [proxy, gated, mock]) {
            assert.ok(alive(c), `${c.name} (port ${c.port}) died during the test: code ${c.code}, signal ${c.signal}`);
            const r = await stopChild(c);
            assert.deepEqual(r, { code: 0, signal: null }, `${c.name} (port ${c.port}) exit`);
        }
    });

    console.log(`elapsed ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

try {
    await main();
} catch (e) {
    run.failed++;
    console.log(`FAIL setup: ${e && e.stack ? e.stack : e}`);
} finally {
    if (run.failed) dumpLogs();
    await Promise.all(children.map((c) => stopChild(c, 2000)));
    removeKeyDir();
    clearTimeout(deadline);
    summary();
    process.exitCode = run.failed ? 1 : 0;
}
