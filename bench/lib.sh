#!/usr/bin/env bash
# Helpers shared by the bench/*.sh harnesses: reading a proxy's CPU time
# (the figure both report per request / per query), waiting for it to settle, checking ports,
# stopping what a script started. Sourced, never run.

# On-CPU ns of every live thread (schedstat field 1), summed over the given processes.
cpu_ns() {
    local p t sum=0 ns rest
    for p in "$@"; do
        for t in /proc/"$p"/task/*/schedstat; do
            read -r ns rest < "$t" 2>/dev/null || continue
            sum=$((sum + ns))
        done
    done
    echo "$sum"
}

# utime+stime of the processes in ns (clock ticks; includes threads that already exited).
# Recorded next to cpu_ns as a cross-check.
tick_ns() {
    local p sum=0 hz f
    local -a fld
    hz=$(getconf CLK_TCK)
    for p in "$@"; do
        # After "pid (comm) ": state is field 0, utime 11, stime 12 (stat(5) fields 14 and 15).
        f=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null) || continue
        read -r -a fld <<< "$f"
        sum=$((sum + fld[11] + fld[12]))
    done
    echo $((sum * 1000000000 / hz))
}

# Wait until the target has settled (CPU time still for 200 ms, at most 10 s): teardown work
# of the run (closing 10k connections) is charged to that run, and to nobody else's. (Sozu 2.3
# needs ~6 s of CPU to close 10k sessions; a 3 s cap left half of it to the next target's run.)
settle() {
    local a b i
    a=$(cpu_ns "$@")
    for ((i = 0; i < 50; i++)); do
        sleep 0.2
        b=$(cpu_ns "$@")
        ((b - a < 1000000)) && return 0
        a=$b
    done
}

# Direct children of a process (nginx: the master's workers).
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# All PIDs of a target's process tree, one level deep (nginx: master + worker).
tree_pids() { local p=$1; echo "$p"; children_of "$p"; }

stop_pid() {
    local p=$1 i
    kill -0 "$p" 2>/dev/null || return 0
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}

# True when nothing listens on TCP port $1.
port_free() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# Stop a process and the children it had (collected first: they may be re-parented once it goes).
stop_tree() {
    local p=$1 kids k
    kids=$(children_of "$p")
    stop_pid "$p"
    for k in $kids; do stop_pid "$k"; done
}

# Wait (at most 10 s) until $1 answers 2xx; further arguments go to curl (e.g. -k for https).
wait_http() {
    local url=$1 i
    shift
    for ((i = 0; i < 100; i++)); do
        curl -sf -o /dev/null --max-time 1 "$@" "$url" && return 0
        sleep 0.1
    done
    return 1
}
