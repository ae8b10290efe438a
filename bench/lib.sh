# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run).

# Prints a free TCP port on 127.0.0.1 below the ephemeral range, for a reference server the
# script starts (nginx, nghttpx): a wave leaves thousands of ephemeral ports in TIME_WAIT, and a
# random port among them may not bind. Fails after 50 tries.
free_port() {
    local p
    for _ in $(seq 50); do
        p=$(( 20000 + RANDOM % 12000 ))
        ss -Htan "( sport = :$p )" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
    done
    echo "no free port below the ephemeral range" >&2
    return 1
}
