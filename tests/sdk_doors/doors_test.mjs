// doors_test.mjs: the front doors against the official SDKs: `@anthropic-ai/sdk` (Messages API:
// messages.create, messages.stream, countTokens, models.list) and `openai` (Responses API:
// responses.create, streamed with stream: true and with responses.stream()).
//
// Starts build/mock_upstream and build/optillm (build dir from $PX_BUILD, default "build",
// relative to the repository root two levels up) on 127.0.0.1 and checks passthrough, two
// approaches (moa, bon), tools (passthrough; the mock's tool=NAME option answers with a tool
// call), upstream errors (400/401/429 -> the SDK's error classes), in-band stream errors, keys
// (x-api-key under the client-key rules and the gate) and previous_response_id (a clear 400).
// The last line printed is always "N passed, M failed"; the exit code is non-zero on failure.
import assert from 'node:assert/strict';
import path from 'node:path';

import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import {
    BUILD, children, dumpLogs, installGuards, mockHelpers, run, startChild, stopChild, summary, test, toleratingSdkAbort, waitLine,
} from '../sdk_common.mjs';

const GLOBAL_TIMEOUT_MS = 120_000;
const KEY = 'sk-doors-test';
const SERVER_KEY = 'sk-server-doors';
const GATE_KEY = 'gate-doors';

async function startMock() {
    const c = startChild('mock_upstream', path.join(BUILD, 'mock_upstream'), ['--port', '0'], {});
    c.port = Number((await waitLine(c, /^PORT (\d+)/))[1]);
    return c;
}

async function startProxy(mockPort, extraArgs = [], env = {}) {
    const args = ['--port', '0', '--base-url', `http://127.0.0.1:${mockPort}/v1`, '--sse-keepalive', '0.2',
        '--retries', '0'];
    const c = startChild('optillm', path.join(BUILD, 'optillm'), [...args, ...extraArgs], env);
    c.port = Number((await waitLine(c, /listening on http:\/\/127\.0\.0\.1:(\d+)\/v1/))[1]);
    return c;
}

const deadline = installGuards(GLOBAL_TIMEOUT_MS);

// ---- helpers ----------------------------------------------------------------------------------

let mock;

const { mockGet, mockReset } = mockHelpers(() => mock.port);

async function lastRequest() {
    const reqs = await mockGet('/mock/requests');
    assert.ok(reqs.length > 0, 'the mock saw no request');
    return reqs[reqs.length - 1];
}

// A fetch that keeps every SSE body as it came over the wire (event names, pings).
const rawStreams = [];
async function recordingFetch(url, init) {
    const res = await fetch(url, init);
    if ((res.headers.get('content-type') || '').includes('text/event-stream'))
        rawStreams.push(res.clone().text());
    return res;
}

async function lastEventNames() {
    const text = await rawStreams[rawStreams.length - 1];
    return text.split('\n').filter((l) => l.startsWith('event: ')).map((l) => l.slice(7));
}

function anthropic(port, opts = {}) {
    return new Anthropic({ baseURL: `http://127.0.0.1:${port}`, apiKey: KEY, maxRetries: 0, fetch: recordingFetch, ...opts });
}

function openai(port, opts = {}) {
    return new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: KEY, maxRetries: 0, fetch: recordingFetch, ...opts });
}

async function expectError(promise, cls, check) {
    let err;
    try {
        const r = await promise;
        if (r && typeof r[Symbol.asyncIterator] === 'function') for await (const _ of r);
    } catch (e) {
        err = e;
    }
    assert.ok(err, `expected ${cls.name}, got no error`);
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err && err.constructor && err.constructor.name}: ${err && err.message}`);
    if (check) check(err);
    return err;
}

const WEATHER_ANTHROPIC = {
    name: 'get_weather',
    description: 'Weather of a city',
    input_schema: { type: 'object', properties: { location: { type: 'string' }, unit: { type: 'string' } }, required: ['location'] },
};
const WEATHER_RESPONSES = {
    type: 'function',
    name: 'get_weather',
    description: 'Weather of a city',
    parameters: { type: 'object', properties: { location: { type: 'string' }, unit: { type: 'string' } }, required: ['location'] },
};
const PARIS = { location: 'Paris', unit: 'celsius' };

// ---- the tests --------------------------------------------------------------------------------

async function anthropicTests(proxy) {
    const client = anthropic(proxy.port);

    await test('messages.create passthrough: text, stop_reason, usage, the request upstream', async () => {
        await mockReset();
        const m = await client.messages.create({
            model: 'mock-model',
            max_tokens: 200,
            system: 'Be brief.',
            stop_sequences: ['END'],
            temperature: 0.3,
            metadata: { user_id: 'u-1' },
            messages: [{ role: 'user', content: 'tell me about Paris' }],
        });
        assert.equal(m.type, 'message');
        assert.equal(m.role, 'assistant');
        assert.match(m.id, /^msg_/);
        assert.equal(m.content[0].type, 'text');
        assert.equal(m.content[0].text, 'mock reply 0: tell me about Paris tell me about Paris');
        assert.equal(m.stop_reason, 'end_turn');
        assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0, JSON.stringify(m.usage));
        const body = (await lastRequest()).body;
        assert.equal(body.model, 'mock-model');
        assert.deepEqual(body.messages[0], { role: 'system', content: 'Be brief.' });
        assert.deepEqual(body.messages[1], { role: 'user', content: 'tell me about Paris' });
        assert.equal(body.max_tokens, 200);
        assert.deepEqual(body.stop, ['END']);
        assert.equal(body.temperature, 0.3);
        assert.equal(body.user, 'u-1');
    });

    await test('messages.create: max_tokens reached -> stop_reason max_tokens', async () => {
        const m = await client.messages.create({ model: 'mock-model', max_tokens: 2, messages: [{ role: 'user', content: 'a b c d e f g h' }] });
        assert.equal(m.stop_reason, 'max_tokens');
    });

    await test('messages.stream passthrough: events, finalMessage, usage from include_usage', async () => {
        await mockReset();
        const stream = client.messages.stream({ model: 'mock-model', max_tokens: 200, messages: [{ role: 'user', content: [{ type: 'text', text: 'stream me' }] }] });
        let text = '';
        stream.on('text', (t) => (text += t));
        const m = await stream.finalMessage();
        assert.equal(m.content[0].text, 'mock reply 0: stream me stream me stream me stream me');
        assert.equal(text, m.content[0].text);
        assert.equal(m.stop_reason, 'end_turn');
        assert.ok(m.usage.output_tokens > 0 && m.usage.input_tokens > 0, JSON.stringify(m.usage));
        const names = await lastEventNames();
        assert.equal(names[0], 'message_start');
        assert.deepEqual(names.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
        assert.ok(names.includes('content_block_start') && names.includes('content_block_delta'));
        const body = (await lastRequest()).body;
        assert.equal(body.stream, true);
        assert.deepEqual(body.stream_options, { include_usage: true });
    });

    await test('approach moa through /v1/messages (create)', async () => {
        await mockReset();
        const m = await client.messages.create({ model: 'moa-mock-model', max_tokens: 300, messages: [{ role: 'user', content: 'What is 6 * 7?' }] });
        assert.equal(m.model, 'moa-mock-model');
        assert.equal(m.content[0].type, 'text');
        assert.ok(m.content[0].text.length > 0);
        const st = await mockGet('/mock/stats');
        assert.ok(st.calls >= 3, `moa made ${st.calls} upstream calls`); // n=3 samples, critique, final
        assert.ok(m.usage.input_tokens >= st.prompt_tokens && st.prompt_tokens > 0, 'usage sums every call');
    });

    await test('approach bon through /v1/messages (stream, pings while waiting)', async () => {
        await mockReset();
        const stream = client.messages.stream({
            model: 'bon-mock-model@latency=300',
            max_tokens: 300,
            messages: [{ role: 'user', content: 'What is 6 * 7?' }],
        });
        const m = await stream.finalMessage();
        assert.ok(m.content[0].text.length > 0);
        assert.equal(m.stop_reason, 'end_turn');
        const st = await mockGet('/mock/stats');
        assert.ok(st.calls >= 2, `bon made ${st.calls} upstream calls`);
        assert.equal(m.usage.output_tokens >= 1, true);
        const names = await lastEventNames();
        assert.ok(names.includes('ping'), `no ping among ${names.join(',')}`);
        assert.equal(names[names.length - 1], 'message_stop');
    });

    await test('tools passthrough (create): tool_use block, stop_reason tool_use, tools upstream', async () => {
        await mockReset();
        const m = await client.messages.create({
            model: 'mock-model@tool=get_weather',
            max_tokens: 200,
            tools: [WEATHER_ANTHROPIC],
            tool_choice: { type: 'any' },
            messages: [{ role: 'user', content: 'Weather in Paris?' }],
        });
        assert.equal(m.stop_reason, 'tool_use');
        const tu = m.content.find((b) => b.type === 'tool_use');
        assert.ok(tu, JSON.stringify(m.content));
        assert.equal(tu.name, 'get_weather');
        assert.equal(tu.id, 'call_mock_1');
        assert.deepEqual(tu.input, PARIS);
        const body = (await lastRequest()).body;
        assert.equal(body.tools[0].type, 'function');
        assert.equal(body.tools[0].function.name, 'get_weather');
        assert.deepEqual(body.tools[0].function.parameters, WEATHER_ANTHROPIC.input_schema);
        assert.equal(body.tool_choice, 'required');
    });

    await test('tools passthrough (stream): input_json_delta assembled by the SDK', async () => {
        const stream = client.messages.stream({
            model: 'mock-model@tool=get_weather',
            max_tokens: 200,
            tools: [WEATHER_ANTHROPIC],
            messages: [{ role: 'user', content: 'Weather in Paris?' }],
        });
        const m = await stream.finalMessage();
        assert.equal(m.stop_reason, 'tool_use');
        assert.equal(m.content[0].type, 'tool_use');
        assert.deepEqual(m.content[0].input, PARIS);
    });

    await test('tools through an approach (bon, stream): a tool_use block from the approach', async () => {
        // The mock answers every request that offers tools (and has no tool result yet) with a
        // call of the first tool; bon carries the tools to its answer calls.
        const stream = client.messages.stream({
            model: 'bon-mock-model',
            max_tokens: 200,
            tools: [WEATHER_ANTHROPIC],
            messages: [{ role: 'user', content: 'Weather in Paris?' }],
        });
        const m = await stream.finalMessage();
        assert.equal(m.stop_reason, 'tool_use');
        assert.equal(m.content[0].type, 'tool_use');
        assert.equal(m.content[0].name, 'get_weather');
        assert.equal(typeof m.content[0].input, 'object');
    });

    await test('tool_use / tool_result history becomes assistant tool_calls and a tool message', async () => {
        await mockReset();
        const m = await client.messages.create({
            model: 'mock-model',
            max_tokens: 200,
            tools: [WEATHER_ANTHROPIC],
            messages: [
                { role: 'user', content: 'Weather in Paris?' },
                { role: 'assistant', content: [{ type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: PARIS }] },
                { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: '21 C' }, { type: 'text', text: 'and so?' }] },
            ],
        });
        assert.equal(m.content[0].type, 'text');
        const msgs = (await lastRequest()).body.messages;
        assert.equal(msgs.length, 4);
        assert.equal(msgs[1].role, 'assistant');
        assert.equal(msgs[1].content, 'Checking.');
        assert.equal(msgs[1].tool_calls[0].id, 'toolu_1');
        assert.deepEqual(JSON.parse(msgs[1].tool_calls[0].function.arguments), PARIS);
        assert.deepEqual(msgs[2], { role: 'tool', tool_call_id: 'toolu_1', content: '21 C' });
        assert.deepEqual(msgs[3], { role: 'user', content: 'and so?' });
    });

    for (const [status, cls, type] of [
        [400, Anthropic.BadRequestError, 'invalid_request_error'],
        [401, Anthropic.AuthenticationError, 'authentication_error'],
        [429, Anthropic.RateLimitError, 'rate_limit_error'],
    ]) {
        await test(`upstream ${status} -> ${cls.name} with an Anthropic error body (create and stream)`, async () => {
            const check = (e) => {
                assert.equal(e.status, status);
                assert.equal(e.error.type, 'error');
                assert.equal(e.error.error.type, type);
                assert.match(e.error.error.message, new RegExp(`mock error ${status}`));
            };
            const req = { model: `mock-model@status=${status}`, max_tokens: 10, messages: [{ role: 'user', content: 'x' }] };
            await expectError(client.messages.create(req), cls, check);
            await expectError(client.messages.create({ ...req, stream: true }), cls, check);
        });
    }

    await test('invalid request (no max_tokens) -> BadRequestError before any upstream call', async () => {
        await mockReset();
        await expectError(client.messages.create({ model: 'mock-model', messages: [{ role: 'user', content: 'x' }] }), Anthropic.BadRequestError,
            (e) => assert.match(e.error.error.message, /max_tokens/));
        assert.equal((await mockGet('/mock/stats')).calls, 0);
    });

    await test('a stream cut by an upstream error mid-way -> the SDK raises (in-band error event)', async () => {
        // Every bon call fails after 0.5 s: by then the stream has begun (message_start, pings),
        // so the error can only travel in-band, as Anthropic's error event.
        const stream = await client.messages.create({
            model: 'bon-mock-model@status=500,latency=500',
            max_tokens: 10,
            stream: true,
            messages: [{ role: 'user', content: 'x' }],
        });
        let err;
        try {
            for await (const _ of stream);
        } catch (e) {
            err = e;
        }
        assert.ok(err instanceof Anthropic.APIError, `got ${err}`);
        assert.match(String(err.message), /mock error 500/);
    });

    await test('countTokens: an estimate', async () => {
        const r = await client.messages.countTokens({ model: 'mock-model', system: 'abc', messages: [{ role: 'user', content: 'hello world, how are you?' }] });
        assert.ok(Number.isInteger(r.input_tokens) && r.input_tokens > 5, JSON.stringify(r));
    });

    await test('models.list (Anthropic SDK): type model, ids, has_more false', async () => {
        const ids = [];
        for await (const m of client.models.list()) {
            assert.equal(m.type, 'model');
            ids.push(m.id);
        }
        assert.deepEqual(ids, ['mock-model', 'mock-model-2']);
    });
}

async function responsesTests(proxy) {
    const client = openai(proxy.port);

    await test('responses.create passthrough: output_text, usage, the request upstream', async () => {
        await mockReset();
        const r = await client.responses.create({
            model: 'mock-model',
            instructions: 'Be brief.',
            input: 'tell me about Paris',
            max_output_tokens: 200,
            temperature: 0.5,
            metadata: { k: 'v' },
            store: false,
        });
        assert.equal(r.object, 'response');
        assert.equal(r.status, 'completed');
        assert.match(r.id, /^resp_/);
        assert.equal(r.output_text, 'mock reply 0: tell me about Paris tell me about Paris');
        assert.equal(r.output[0].type, 'message');
        assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
        assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
        assert.deepEqual(r.metadata, { k: 'v' });
        assert.equal(r.instructions, 'Be brief.');
        const body = (await lastRequest()).body;
        assert.deepEqual(body.messages, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'tell me about Paris' }]);
        assert.equal(body.max_tokens, 200);
        assert.equal(body.temperature, 0.5);
        assert.equal(body.metadata, undefined);
    });

    await test('responses.create stream: the event sequence and deltas', async () => {
        await mockReset();
        const stream = await client.responses.create({ model: 'mock-model', input: [{ role: 'user', content: [{ type: 'input_text', text: 'stream me' }] }], stream: true });
        const types = [];
        let text = '';
        let completed;
        let seq = -1;
        for await (const ev of stream) {
            types.push(ev.type);
            assert.equal(ev.sequence_number, seq + 1);
            seq = ev.sequence_number;
            if (ev.type === 'response.output_text.delta') text += ev.delta;
            if (ev.type === 'response.completed') completed = ev.response;
        }
        assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
        assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
        assert.equal(text, 'mock reply 0: stream me stream me stream me stream me');
        assert.equal(completed.output[0].content[0].text, text);
        assert.ok(completed.usage.output_tokens > 0);
    });

    await test('responses.stream() helper: finalResponse', async () => {
        const stream = client.responses.stream({ model: 'mock-model', input: 'helper test' });
        const r = await stream.finalResponse();
        assert.equal(r.output_text, 'mock reply 0: helper test helper test helper test helper test');
    });

    await test('approach moa through /v1/responses (create)', async () => {
        await mockReset();
        const r = await client.responses.create({ model: 'moa-mock-model', input: 'What is 6 * 7?' });
        assert.equal(r.model, 'moa-mock-model');
        assert.ok(r.output_text.length > 0);
        const st = await mockGet('/mock/stats');
        assert.ok(st.calls >= 3, `moa made ${st.calls} upstream calls`); // n=3 samples, critique, final
        assert.ok(r.usage.input_tokens >= st.prompt_tokens);
    });

    await test('approach bon through /v1/responses (optillm_approach field, stream)', async () => {
        await mockReset();
        const stream = await client.responses.create({ model: 'mock-model', optillm_approach: 'bon', input: 'What is 6 * 7?', stream: true });
        let completed;
        for await (const ev of stream) if (ev.type === 'response.completed') completed = ev.response;
        assert.ok(completed.output[0].content[0].text.length > 0);
        assert.ok((await mockGet('/mock/stats')).calls >= 2);
    });

    await test('tools passthrough (create): function_call output item', async () => {
        await mockReset();
        const r = await client.responses.create({ model: 'mock-model@tool=get_weather', input: 'Weather in Paris?', tools: [WEATHER_RESPONSES], tool_choice: 'auto' });
        const fc = r.output.find((o) => o.type === 'function_call');
        assert.ok(fc, JSON.stringify(r.output));
        assert.equal(fc.name, 'get_weather');
        assert.equal(fc.call_id, 'call_mock_1');
        assert.deepEqual(JSON.parse(fc.arguments), PARIS);
        const body = (await lastRequest()).body;
        assert.equal(body.tools[0].function.name, 'get_weather');
        assert.deepEqual(body.tools[0].function.parameters, WEATHER_RESPONSES.parameters);
        assert.equal(body.tool_choice, 'auto');
    });

    await test('tools passthrough (stream): function_call_arguments events', async () => {
        const stream = await client.responses.create({ model: 'mock-model@tool=get_weather', input: 'Weather?', tools: [WEATHER_RESPONSES], stream: true });
        let args = '';
        let done;
        for await (const ev of stream) {
            if (ev.type === 'response.function_call_arguments.delta') args += ev.delta;
            if (ev.type === 'response.function_call_arguments.done') done = ev.arguments;
        }
        assert.deepEqual(JSON.parse(args), PARIS);
        assert.equal(done, args);
    });

    await test('tools through an approach (moa, create): a function_call output item', async () => {
        const r = await client.responses.create({ model: 'moa-mock-model', input: 'Weather in Paris?', tools: [WEATHER_RESPONSES] });
        const fc = r.output.find((o) => o.type === 'function_call');
        assert.ok(fc, JSON.stringify(r.output));
        assert.equal(fc.name, 'get_weather');
        assert.equal(typeof JSON.parse(fc.arguments), 'object');
        assert.equal(r.model, 'moa-mock-model');
    });

    await test('function_call / function_call_output items become tool_calls and a tool message', async () => {
        await mockReset();
        await client.responses.create({
            model: 'mock-model',
            tools: [WEATHER_RESPONSES],
            input: [
                { role: 'user', content: 'Weather in Paris?' },
                { type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: JSON.stringify(PARIS) },
                { type: 'function_call_output', call_id: 'call_1', output: '21 C' },
            ],
        });
        const msgs = (await lastRequest()).body.messages;
        assert.equal(msgs[1].role, 'assistant');
        assert.equal(msgs[1].tool_calls[0].id, 'call_1');
        assert.equal(msgs[1].tool_calls[0].function.name, 'get_weather');
        assert.deepEqual(msgs[2], { role: 'tool', tool_call_id: 'call_1', content: '21 C' });
    });

    await test('text.format json_schema -> response_format upstream', async () => {
        await mockReset();
        const schema = { type: 'object', properties: { a: { type: 'string' } }, required: ['a'], additionalProperties: false };
        await client.responses.create({ model: 'mock-model', input: 'json please', text: { format: { type: 'json_schema', name: 'thing', schema, strict: true } } });
        const rf = (await lastRequest()).body.response_format;
        assert.deepEqual(rf, { type: 'json_schema', json_schema: { name: 'thing', schema, strict: true } });
    });

    for (const [status, cls] of [
        [400, OpenAI.BadRequestError],
        [401, OpenAI.AuthenticationError],
        [429, OpenAI.RateLimitError],
    ]) {
        await test(`upstream ${status} -> ${cls.name} (create and stream)`, async () => {
            const req = { model: `mock-model@status=${status}`, input: 'x' };
            const check = (e) => {
                assert.equal(e.status, status);
                assert.match(e.message, new RegExp(`mock error ${status}`));
            };
            await expectError(client.responses.create(req), cls, check);
            await expectError(client.responses.create({ ...req, stream: true }), cls, check);
        });
    }

    await test('previous_response_id -> BadRequestError saying no responses are stored', async () => {
        await expectError(client.responses.create({ model: 'mock-model', input: 'x', previous_response_id: 'resp_123' }), OpenAI.BadRequestError,
            (e) => assert.match(e.message, /store/));
    });

    await test('a stream cut by an upstream error -> the SDK raises (error event)', () => toleratingSdkAbort(async () => {
        const stream = await client.responses.create({ model: 'bon-mock-model@status=500,latency=500', input: 'x', stream: true });
        let err;
        try {
            for await (const _ of stream);
        } catch (e) {
            err = e;
        }
        assert.ok(err instanceof OpenAI.APIError, `got ${err}`);
        assert.match(String(err.message), /mock error 500/);
    }));
}

async function keyTests() {
    // No gate, no server key: the client's x-api-key goes upstream as its Bearer.
    let proxy = await startProxy(mock.port, [], {});
    try {
        await test('keys: x-api-key forwarded upstream as the Bearer (no server key)', async () => {
            await mockReset();
            await anthropic(proxy.port, { apiKey: 'sk-ant-client-1' }).messages.create({ model: 'mock-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
            assert.equal((await lastRequest()).auth, 'Bearer sk-ant-client-1');
        });
    } finally {
        await stopChild(proxy);
    }
    // --client-keys with a server key: the client's own key wins.
    proxy = await startProxy(mock.port, ['--client-keys'], { OPENAI_API_KEY: SERVER_KEY });
    try {
        await test('keys: --client-keys: x-api-key wins over the server key; Responses Bearer too', async () => {
            await mockReset();
            await anthropic(proxy.port, { apiKey: 'sk-ant-client-2' }).messages.create({ model: 'mock-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
            assert.equal((await lastRequest()).auth, 'Bearer sk-ant-client-2');
            await openai(proxy.port, { apiKey: 'sk-oai-client-3' }).responses.create({ model: 'mock-model', input: 'x' });
            assert.equal((await lastRequest()).auth, 'Bearer sk-oai-client-3');
        });
    } finally {
        await stopChild(proxy);
    }
    // A gate: x-api-key must be the gate key, which never goes upstream.
    proxy = await startProxy(mock.port, [], { OPENAI_API_KEY: SERVER_KEY, OPTILLM_API_KEY: GATE_KEY });
    try {
        await test('keys: behind a gate, x-api-key is the gate key (never forwarded); a wrong one -> AuthenticationError', async () => {
            await mockReset();
            await anthropic(proxy.port, { apiKey: GATE_KEY }).messages.create({ model: 'mock-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
            assert.equal((await lastRequest()).auth, `Bearer ${SERVER_KEY}`);
            await expectError(anthropic(proxy.port, { apiKey: 'wrong' }).messages.create({ model: 'mock-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
                Anthropic.AuthenticationError, (e) => assert.equal(e.error.error.type, 'authentication_error'));
            await expectError(openai(proxy.port, { apiKey: 'wrong' }).responses.create({ model: 'mock-model', input: 'x' }), OpenAI.AuthenticationError);
            await expectError(anthropic(proxy.port, { apiKey: 'wrong' }).messages.countTokens({ model: 'mock-model', messages: [{ role: 'user', content: 'x' }] }),
                Anthropic.AuthenticationError);
        });
        await test('keys: the upstream refuses the server key -> 502 api_error (InternalServerError), not the client\'s 401', async () => {
            await expectError(anthropic(proxy.port, { apiKey: GATE_KEY }).messages.create({ model: 'mock-model@status=401', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
                Anthropic.InternalServerError, (e) => {
                    assert.equal(e.status, 502);
                    assert.equal(e.error.error.type, 'api_error');
                });
        });
    } finally {
        await stopChild(proxy);
    }
}

async function main() {
    mock = await startMock();
    // No server key: the client's own key goes upstream, so an upstream 401 is the client's
    // (a 401 to a key the proxy holds is a 502, checked in keyTests).
    const proxy = await startProxy(mock.port, [], {});
    await anthropicTests(proxy);
    await responsesTests(proxy);
    await stopChild(proxy);
    await keyTests();
}

try {
    await main();
} catch (e) {
    run.failed++;
    console.log(`FAIL setup: ${e && e.stack ? e.stack : e}`);
}
if (run.failed) dumpLogs();
clearTimeout(deadline);
for (const c of children) await stopChild(c);
summary();
process.exitCode = run.failed ? 1 : 0;
