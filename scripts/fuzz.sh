#!/bin/bash
# Runs libFuzzer targets for a fixed time each, starting from the committed seed corpus.
# Usage: scripts/fuzz.sh FUZZ_BUILD SECONDS target...   Ends with "N passed, N failed".
set -u
dir=$1
secs=$2
shift 2
passed=0
failed=0
mkdir -p "$dir/crashes"
for t in "$@"; do
    corpus="$dir/corpus/$t"
    mkdir -p "$corpus"
    cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
    echo "fuzz_$t: ${secs}s"
    if "$dir/fuzz_$t" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$dir/crashes/$t-" -print_final_stats=1 "$corpus" \
        > "$dir/fuzz_$t.log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$dir/fuzz_$t.log" | tail -1
        passed=$((passed + 1))
    else
        echo "fuzz_$t FAILED: see $dir/fuzz_$t.log and $dir/crashes/"
        grep -E 'ERROR|SUMMARY|Test unit written' "$dir/fuzz_$t.log" | head -5
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
