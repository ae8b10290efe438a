#!/bin/sh
# fake_server.sh MODE: a scripted MCP server (stdio, newline-delimited JSON-RPC) for the failure
# cases of itest_mcp and test_mcp. It offers one tool, "probe" (or $FAKE_TOOL; with FAKE_PAGES
# set, tools/list has a second page, behind cursor "p2", with "<tool>_2"). MODE says how it
# behaves:
#   ok         probe answers "probe ok"            crash      exits during the tools/call
#   hang       never answers the tools/call        garbage    answers the call with broken JSON
#   huge       answers with 1,000,000 bytes        toolerror  an isError result
#   rpcerror   a JSON-RPC error for the call       envdump    answers with its environment
#   slow       answers after 1 s (parallel calls)
#   name       answers "called <the tool name it was asked for>"
#   ping       before answering sends a notification, a ping and a sampling request, and
#              answers with the client's two replies (quotes turned into ')
# Requests are written by the proxy with "jsonrpc" then "id" first, which the sed below relies on.
mode=${1:-ok}
tool=${FAKE_TOOL:-probe}
rid() { printf '%s\n' "$1" | sed -n 's/^{"jsonrpc":"2.0","id":\([0-9]*\),.*/\1/p'; }
read -r l || exit 0
printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"fake","version":"1"}}}\n' "$(rid "$l")"
while read -r l; do
    i=$(rid "$l")
    [ -z "$i" ] && continue # notifications
    case "$l" in
    *'"method":"tools/list","params":{"cursor":"p2"}'*)
        printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"%s_2","inputSchema":{"type":"object"}}]}}\n' "$i" "$tool" ;;
    *'"method":"tools/list"'*'"params":{}'*)
        [ -n "${FAKE_PAGES:-}" ] && next=',"nextCursor":"p2"' || next=''
        printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"%s","description":"a fake tool","inputSchema":{"type":"object"}}]%s}}\n' "$i" "$tool" "$next" ;;
    *'"method":"tools/list"'*)
        printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"%s","description":"a fake tool","inputSchema":{"type":"object"}}]}}\n' "$i" "$tool" ;;
    *'"method":"tools/call"'*)
        case "$mode" in
        ok) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"probe ok"}]}}\n' "$i" ;;
        slow) (sleep 1; printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"probe slow"}]}}\n' "$i") & ;;
        crash) exit 1 ;;
        name) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"called %s"}]}}\n' "$i" "$(printf '%s' "$l" | sed -n 's/.*"params":{"name":"\([^"]*\)".*/\1/p')" ;;
        ping)
            echo '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}'
            echo '{"jsonrpc":"2.0","id":"srv-1","method":"ping"}'
            read -r pong
            echo '{"jsonrpc":"2.0","id":"srv-2","method":"sampling/createMessage","params":{}}'
            read -r nf
            printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}]}}\n' "$i" "$(printf '%s %s' "$pong" "$nf" | tr '"' "'")" ;;
        hang) : ;;
        garbage) echo '{"jsonrpc": broken' ;;
        huge)
            printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"' "$i"
            head -c 1000000 /dev/zero | tr '\0' 'x'
            printf '"}]}}\n' ;;
        toolerror) printf '{"jsonrpc":"2.0","id":%s,"result":{"isError":true,"content":[{"type":"text","text":"probe failed on purpose"}]}}\n' "$i" ;;
        rpcerror) printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32602,"message":"bad params"}}\n' "$i" ;;
        envdump) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}]}}\n' "$i" "$(env | tr '\n"\\' ';  ')" ;;
        esac ;;
    *) printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"method not found"}}\n' "$i" ;;
    esac
done
