#!/bin/sh
# The fuzz smoke test of `make test`: every libFuzzer target for FUZZ_SECONDS (default 25).
# The targets are built by `make fuzz-build`. Ends with "N passed, N failed".
set -eu
cd "$(dirname "$0")/../.."
exec scripts/fuzz.sh build-fuzz "${FUZZ_SECONDS:-25}" request model answer sse door html
