#!/bin/sh
# setup.sh: installs the pinned @modelcontextprotocol/server-everything (package-lock.json) for
# itest_mcp with `npm ci`, when node_modules is missing or was installed from another lock file.
# Exit status 0 when the server is ready to run with node.
set -eu
case "$0" in */*) cd "${0%/*}" ;; esac
command -v node >/dev/null 2>&1 || { echo "mcp test: node is not installed (Node.js 20 or later)" >&2; exit 1; }
if [ ! -f node_modules/@modelcontextprotocol/server-everything/dist/index.js ] ||
    ! cmp -s package-lock.json node_modules/.mcp-lock-stamp; then
    command -v npm >/dev/null 2>&1 || { echo "mcp test: npm is not installed" >&2; exit 1; }
    npm ci --no-audit --no-fund --silent >&2 || { echo "mcp test: npm ci failed" >&2; exit 1; }
    cp package-lock.json node_modules/.mcp-lock-stamp
fi
