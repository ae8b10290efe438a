#!/bin/sh
# Installs the Debian packages the project needs, only those that are missing (idempotent).
# Usage: scripts/deps.sh [extra-package ...]   (run as root, or with sudo available)
# redis-server and nginx-light are for the tests only (shared limits, instances behind nginx).
set -eu
# ca-certificates: HTTPS upstreams (libcurl) and the npm registry; absent from a minimal system.
# bubblewrap, python3: the code sandbox of executecode and coc (src/sandbox.c); openssl: the
# throwaway certificates of the rediss:// and HTTP/2 tests; libsqlite3-dev: spl's strategy store;
# nghttp2-server: nghttpd, the HTTP/2 upstream of itest_waiting (h2 over TLS, h2c).
pkgs="gcc make pkg-config libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev libpcre2-dev \
libssl-dev libcmocka-dev libz3-dev clang clang-format libclang-rt-14-dev ca-certificates \
bubblewrap python3 openssl \
libhiredis-dev redis-server nginx-light json-schema-test-suite python3-jsonschema libxml2-dev \
poppler-utils libsqlite3-dev nghttp2-server $*"
# The SDK compatibility test needs Node.js and npm (Debian's, unless the machine has its own).
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
missing=""
for p in $pkgs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "deps: missing packages:$missing (run as root: apt-get install$missing)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
