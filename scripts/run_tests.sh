#!/bin/bash
# Runs test binaries, keeps each one's output in BUILD/logs/, prints their cmocka summaries and
# ends with the total as "N passed, N failed". A binary that crashes or times out without a
# summary counts as one failure. Usage: scripts/run_tests.sh BUILD test...
set -u
build=$1
shift
rm -rf "$build/logs"
mkdir -p "$build/logs"
passed=0
failed=0
for t in "$@"; do
    name=$(basename "$t")
    # Scripts share names (tests/sdk/run.sh, tests/fuzz/run.sh): one log each, by directory.
    case $name in *.sh) name="$(basename "$(dirname "$t")")-$name" ;; esac
    out="$build/logs/$name.out"
    echo "== $name"
    wrap=""
    case $name in test_*) wrap=${PX_UNIT_WRAPPER:-} ;; esac
    # shellcheck disable=SC2086
    PX_BUILD=$build timeout 900 $wrap "$t" > "$out" 2>&1
    rc=$?
    p=$(awk '/^\[  PASSED  \] [0-9]+ test/ { s += $4 } END { print s + 0 }' "$out")
    f=$(awk '/^\[  FAILED  \] [0-9]+ test/ { s += $4 } END { print s + 0 }' "$out")
    # Non-cmocka runners (the SDK test) end with "N passed, N failed".
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
        if [ -n "$last" ]; then
            p=${last%% passed*}
            f=${last#*, }
            f=${f%% failed}
            grep -E '^(not ok|FAIL)' "$out" | head -n 20
            echo "$last"
        fi
    fi
    grep -E '^\[  (PASSED|FAILED)  \]|^\[  ERROR   \]|^\[   LINE   \]' "$out" | tail -n 20
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$name exited with status $rc without a failing test: counted as 1 failure"
        tail -n 5 "$out"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
