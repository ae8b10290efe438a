#!/bin/sh
# First run on a bare Debian 12 / Ubuntu machine (as root, or with sudo): installs what is
# missing (make, a compiler, pkg-config, the -dev packages, Node.js for the SDK test) through
# scripts/deps.sh, then builds and starts the proxy, or builds and runs every test.
# Usage: sh scripts/setup.sh run [--] [proxy flags...]     (= make run ARGS="...")
#        sh scripts/setup.sh test                          (= make test)
# POSIX sh only: it must work where nothing but the base system is installed.
set -eu
cd "$(dirname "$0")/.."
cmd=${1:-}
case $cmd in
run | test) shift ;;
*)
    echo "usage: sh scripts/setup.sh run [--] [proxy flags...] | sh scripts/setup.sh test" >&2
    exit 2
    ;;
esac
if [ "${1:-}" = "--" ]; then
    shift
fi
sh scripts/deps.sh
if [ "$cmd" = test ]; then
    exec make test
fi
# What `make run` does, with the flags passed through unchanged (no re-splitting of ARGS).
make -j"$(nproc 2>/dev/null || echo 2)" --no-print-directory all
exec ./build/optillm "$@"
