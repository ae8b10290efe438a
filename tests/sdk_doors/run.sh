#!/bin/sh
# run.sh: the front-door SDK test (@anthropic-ai/sdk and openai) (tests/sdk_doors/doors_test.mjs). Installs the pinned SDKs
# with `npm ci` when node_modules is missing or does not match package-lock.json, then runs the
# test. The last line printed is "N passed, M failed"; the exit status is non-zero on failure.
# PX_BUILD (default "build", relative to the repository root) selects the binaries.
set -eu
case "$0" in */*) cd "${0%/*}" ;; esac

fail_setup() {
    echo "sdk doors test: $1" >&2
    echo "0 passed, 1 failed"
    exit 1
}

command -v node >/dev/null 2>&1 || fail_setup "node is not installed (Node.js 20 or later is needed)"
command -v npm >/dev/null 2>&1 || fail_setup "npm is not installed"

# node_modules/.sdk-lock-stamp is a copy of the package-lock.json it was installed from.
if [ ! -d node_modules/@anthropic-ai/sdk ] || ! cmp -s package-lock.json node_modules/.sdk-lock-stamp; then
    npm ci --no-audit --no-fund --silent || fail_setup "npm ci failed"
    cp package-lock.json node_modules/.sdk-lock-stamp
fi

exec node doors_test.mjs
