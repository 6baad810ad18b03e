# shellcheck shell=bash
# example_lib.sh — what the example test scripts share (sourced by
# tests/tcp/server_examples_test.sh and tests/tls/examples_test.sh): a work
# directory removed on exit, pass/fail reporting, and starting and stopping
# a server that announces itself with a first line "listening on ...".
#
# Sets: work (the directory), server_pid (the running server, or empty),
# steps (how many pass calls), line (the server's first line, after
# start_background). A script that starts other background programs keeps
# their pids in variables and appends the variables' names to
# cleanup_pid_variables, so that an early exit kills them too.

work=$(mktemp -d)
server_pid=""
steps=0
cleanup_pid_variables=(server_pid)
cleanup() {
    local variable
    for variable in "${cleanup_pid_variables[@]}"; do
        [[ -n ${!variable} ]] && kill -KILL "${!variable}" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

pass() { steps=$((steps + 1)); echo "ok   $*"; }
# fail MESSAGE: reports, shows every server's stderr, and ends the script.
fail() {
    echo "FAIL $*" >&2
    for f in "$work"/*.err; do [[ -s $f ]] && { echo "--- $f" >&2; cat "$f" >&2; }; done
    exit 1
}

# start_background NAME COMMAND...: runs a server in the background with its
# output in $work/NAME.out and NAME.err, and waits (up to 10 s, or until it
# exits) for its first line; sets server_pid and line. The caller checks line.
start_background() {
    local name=$1 i
    shift
    line=""
    : >"$work/$name.out"  # exists before the server's shell opens it
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    server_pid=$!
    for ((i = 0; i < 200; ++i)); do
        line=$(head -n 1 "$work/$name.out")
        [[ -n $line ]] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
}

# stop_server NAME: SIGTERM, and the server must exit 0 within 10 s.
stop_server() {
    local status=0
    kill -TERM "$server_pid"
    timeout 10 tail --pid="$server_pid" -f /dev/null || fail "$1: still running 10 s after SIGTERM"
    wait "$server_pid" || status=$?
    server_pid=""
    ((status == 0)) || fail "$1: exit status $status after SIGTERM, expected 0"
}
