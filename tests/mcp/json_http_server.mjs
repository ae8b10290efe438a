// json_http_server.mjs: a Streamable HTTP MCP server built on the official SDK (installed with
// server-everything) that answers with plain JSON bodies (enableJsonResponse) instead of SSE,
// with sessions. Listens on 127.0.0.1 (an ephemeral port) and prints "PORT <n>", then
// "DELETE true" when a client ends a session it knows. Tool: "shout".
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

const sessions = new Map();

function newServer() {
    const s = new McpServer({ name: 'json-http-test', version: '1.0.0' });
    s.registerTool('shout', { description: 'Upper-cases a text', inputSchema: { text: z.string() } },
        async ({ text }) => ({ content: [{ type: 'text', text: text.toUpperCase() }] }));
    return s;
}

const server = http.createServer(async (req, res) => {
    if (req.method === 'DELETE') console.log(`DELETE ${sessions.has(req.headers['mcp-session-id'])}`);
    let body = '';
    for await (const chunk of req) body += chunk;
    const parsed = body ? JSON.parse(body) : undefined;
    const sid = req.headers['mcp-session-id'];
    let transport = sid && sessions.get(sid);
    if (!transport) {
        transport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse: true,
            onsessioninitialized: (id) => sessions.set(id, transport),
        });
        await newServer().connect(transport);
    }
    await transport.handleRequest(req, res, parsed);
});
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
