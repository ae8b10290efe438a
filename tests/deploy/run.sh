#!/bin/bash
# tests/deploy/run.sh: the deployment files checked with what this machine has, and run where
# they can be: make install into a temporary prefix (binaries, man pages, prompts), the
# installed binary started with the installed prompts, the systemd unit (systemd-analyze
# verify), deploy/nginx.conf (nginx -t), the Kubernetes YAML (PyYAML), the shell scripts
# (shellcheck), and the Slurm array script run as three tasks against the mock upstream and
# merged (the same results as one run). Docker and Kubernetes themselves are not available
# here. Ends with "N passed, N failed". Usage: tests/deploy/run.sh (from the repository root).
set -u
BUILD=${PX_BUILD:-build}
tmp=$(mktemp -d)
pass=0
fail=0
mock_pid=""
cleanup() {
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
ok() { echo "ok   $1"; pass=$((pass + 1)); }
no() { echo "FAIL $1"; fail=$((fail + 1)); }
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then ok "$name"; else no "$name"; sed 's/^/     /' "$tmp/out" | tail -n 15; fi
}
skip() { echo "skip $1"; }

# ---- make install ----------------------------------------------------------------------------
prefix=$tmp/prefix
check "make install PREFIX=..." make --no-print-directory install BUILD="$BUILD" PREFIX="$prefix"
check "installed binaries run" sh -c "'$prefix/bin/optillm' --version && '$prefix/bin/optillm-eval' --version"
check "installed prompts: every file" sh -c \
    "[ \$(find prompts -name '*.txt' | wc -l) -eq \$(find '$prefix/share/optillm/prompts' -name '*.txt' | wc -l) ]"
check "installed datasets" test -s "$prefix/share/optillm/datasets/arithmetic.jsonl"
render_man() {
    for m in optillm optillm-eval; do
        out=$(groff -man -Tutf8 -ww -z "$prefix/share/man/man1/$m.1" 2>&1) || return 1
        [ -z "$out" ] || { echo "$out"; return 1; }
        MANWIDTH=100 man -l "$prefix/share/man/man1/$m.1" | grep -q -- "--redis-url\|--shard" || return 1
    done
}
if command -v groff >/dev/null && command -v man >/dev/null; then
    check "man pages render without warnings and document the flags" render_man
else
    skip "man pages (no groff/man)"
fi
start_installed() {
    "$prefix/bin/optillm" --port 0 --prompts-dir "$prefix/share/optillm/prompts" >"$tmp/px.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$tmp/px.log" && break
        sleep 0.05
    done
    kill -TERM "$pid"
    wait "$pid" && grep -q "listening on" "$tmp/px.log"
}
check "installed binary starts with the installed prompts (--prompts-dir)" start_installed

# ---- systemd ---------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    sed -e "s|/usr/local/bin/optillm|$prefix/bin/optillm|" -e "s|^EnvironmentFile=|EnvironmentFile=-|" \
        deploy/optillm.service >"$tmp/optillm.service"
    check "systemd-analyze verify deploy/optillm.service" \
        env MANPATH="$prefix/share/man" systemd-analyze verify "$tmp/optillm.service"
    check "unit is hardened (DynamicUser, ProtectSystem=strict, NoNewPrivileges, MemoryMax)" sh -c \
        "grep -q '^DynamicUser=yes' deploy/optillm.service && grep -q '^ProtectSystem=strict' deploy/optillm.service &&
         grep -q '^NoNewPrivileges=yes' deploy/optillm.service && grep -q '^MemoryMax=' deploy/optillm.service &&
         grep -q '^EnvironmentFile=' deploy/optillm.service"
else
    skip "systemd unit (no systemd-analyze)"
fi

# ---- nginx -----------------------------------------------------------------------------------
if [ -x /usr/sbin/nginx ]; then
    mkdir -p "$tmp/nginx"
    cat >"$tmp/nginx/nginx.conf" <<CONF
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events {}
http { access_log off; include $PWD/deploy/nginx.conf; }
CONF
    check "nginx -t with deploy/nginx.conf" /usr/sbin/nginx -t -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log"
else
    skip "nginx -t (no nginx)"
fi

# ---- Kubernetes YAML -------------------------------------------------------------------------
if python3 -c 'import yaml' 2>/dev/null; then
    check "deploy/k8s/*.yaml parse; eval Job N agrees with --shard auto/N; probes on /health" python3 - <<'PY'
import glob, re, yaml
docs = {}
for f in sorted(glob.glob("deploy/k8s/*.yaml")):
    for d in yaml.safe_load_all(open(f)):
        docs[(d["kind"], d["metadata"]["name"])] = d
job = docs[("Job", "optillm-eval")]["spec"]
assert job["completionMode"] == "Indexed"
args = " ".join(job["template"]["spec"]["containers"][0]["args"])
n = int(re.search(r"--shard auto/(\d+)", args).group(1))
assert job["completions"] == n and job["parallelism"] <= n, (job["completions"], n)
assert "$JOB_COMPLETION_INDEX" in args
merge = " ".join(docs[("Job", "optillm-eval-merge")]["spec"]["template"]["spec"]["containers"][0]["args"])
assert "optillm-eval merge" in merge
dep = docs[("Deployment", "optillm")]["spec"]["template"]["spec"]
c = dep["containers"][0]
assert c["readinessProbe"]["httpGet"]["path"] == "/health"
assert c["lifecycle"]["preStop"]
assert dep["terminationGracePeriodSeconds"] > 30
assert docs[("HorizontalPodAutoscaler", "optillm")]["spec"]["scaleTargetRef"]["name"] == "optillm"
assert ("Service", "optillm") in docs
PY
else
    skip "Kubernetes YAML (PyYAML not installed)"
fi
skip "Dockerfile and Kubernetes objects in a cluster (no Docker, no cluster, no hadolint here)"

# ---- shell scripts ---------------------------------------------------------------------------
if command -v shellcheck >/dev/null; then
    check "shellcheck deploy/slurm/eval-array.sh scripts/manpage.sh tests/deploy/run.sh" \
        shellcheck deploy/slurm/eval-array.sh scripts/manpage.sh tests/deploy/run.sh
else
    skip "shellcheck (not installed)"
fi

# ---- the Slurm array script, run as three tasks against the mock -----------------------------
"$BUILD/mock_upstream" --port 0 >"$tmp/mock.out" &
mock_pid=$!
for _ in $(seq 100); do
    grep -q PORT "$tmp/mock.out" && break
    sleep 0.05
done
port=$(awk '/PORT/ {print $2}' "$tmp/mock.out")
slurm_run() {
    export PATH="$PWD/$BUILD:$PATH" OPTILLM_BASE_URL="http://127.0.0.1:$port/v1" OPENAI_API_KEY=sk-deploy-test
    export DATASET=datasets/arithmetic.jsonl APPROACHES=none,majority_voting MODEL="mock@noisy=1" CONCURRENCY=1
    curl -s -X POST "http://127.0.0.1:$port/mock/reset" >/dev/null
    OUT=$tmp/whole SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=0 \
        deploy/slurm/eval-array.sh || return 1
    curl -s -X POST "http://127.0.0.1:$port/mock/reset" >/dev/null
    for i in 0 1 2; do # SLURM_ARRAY_TASK_COUNT unset: N from MIN..MAX, as older Slurm
        OUT=$tmp/slurm SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=2 \
            deploy/slurm/eval-array.sh || return 1
    done
    OUT=$tmp/slurm deploy/slurm/eval-array.sh merge || return 1
    python3 - "$tmp/whole/shard-0/results.jsonl" "$tmp/slurm/merged/results.jsonl" "$tmp/slurm" <<'PY'
import json, os, sys
def rows(p):
    return sorted((r["id"], r["approach"], r.get("correct"), r.get("extracted"))
                  for r in map(json.loads, open(p)))
whole, merged = rows(sys.argv[1]), rows(sys.argv[2])
parts = [sum(1 for _ in open(os.path.join(sys.argv[3], f"shard-{i}", "results.jsonl"))) for i in range(3)]
assert all(0 < p < len(whole) for p in parts) and sum(parts) == len(whole), parts
assert whole == merged, "merged shards differ from one run"
print(len(merged), "results, shards", parts)
PY
}
check "deploy/slurm/eval-array.sh: 3 tasks + merge = one run" slurm_run

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
