#!/usr/bin/env bash
# server_examples_test.sh — runs the TcpServer examples as a user would.
#
#   server_examples_test.sh EXAMPLES_DIR "BACKEND..."
#
# Checks: echo_server echoes on every backend and exits 0 on SIGTERM; its
# options (--listen unix:, --workers, --concurrency, --deny, --cidr-allow,
# --proxy-protocol, --idle-timeout) do what they say; rot13_server answers
# with rot13, time_server greets and hangs up, chat_server passes a line to
# the other client. Every step has a time limit; the first failure ends it.
set -euo pipefail

examples=${1:?usage: server_examples_test.sh EXAMPLES_DIR BACKENDS}
read -ra backends <<<"${2//;/ }"
((${#backends[@]})) || backends=("")
command -v socat >/dev/null || { echo "socat is needed (Debian package socat)" >&2; exit 1; }

# shellcheck source=SCRIPTDIR/../support/example_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../support/example_lib.sh"

# start NAME PROGRAM ARGS...: runs an example server in the background and
# waits for its first line; sets server_pid and port.
start() {
    local name=$1 program=$2
    shift 2
    start_background "$name" "$examples/$program" "$@"
    [[ $line =~ ^listening\ on\ (.*)$ ]] || fail "$name: first line '$line', expected 'listening on ADDRESS'"
    port=${line##*:}
}

# talk ADDRESS INPUT: what the server answers to INPUT within a second.
talk() { printf '%b' "$2" | timeout 5 socat -t1 - "$1" 2>/dev/null || true; }

for backend in "${backends[@]}"; do
    args=()
    [[ -n $backend ]] && args=(--backend "$backend")
    start "echo-$backend" echo_server "${args[@]}" --port 0
    [[ $(talk "TCP:127.0.0.1:$port" 'one\ntwo\n') == $'one\ntwo' ]] || fail "echo_server ($backend) did not echo"
    stop_server "echo-$backend"
    pass "echo_server echoes and exits 0 on SIGTERM (${backend:-default})"
done

start listen echo_server --listen "unix:$work/echo.sock" --listen 127.0.0.1:0 --workers 2
[[ $(sed -n 2p "$work/listen.out") =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ ]] || fail "--listen: second line"
[[ $(talk "UNIX-CONNECT:$work/echo.sock" 'by unix\n') == "by unix" ]] || fail "--listen unix: no echo"
stop_server listen
[[ ! -e $work/echo.sock ]] || fail "the unix socket file is still there after the shutdown"
pass "echo_server --listen unix:PATH --workers 2"

start limit echo_server --concurrency 1
sleep 10 | socat - "TCP:127.0.0.1:$port" >/dev/null 2>&1 &
holder_pid=$!
sleep 0.3
[[ -z $(talk "TCP:127.0.0.1:$port" 'waits\n') ]] || fail "--concurrency 1 served a second client"
kill "$holder_pid" 2>/dev/null || true
sleep 0.2
[[ $(talk "TCP:127.0.0.1:$port" 'served\n') == "served" ]] || fail "--concurrency 1: not served after the first left"
stop_server limit
pass "echo_server --concurrency 1"

start rules echo_server --host 127.0.0.1 --cidr-allow 127.0.0.0/8 --deny '^127\.0\.0\.1$'
[[ -z $(talk "TCP:127.0.0.1:$port" 'denied\n') ]] || fail "--deny: 127.0.0.1 was served"
[[ $(talk "TCP:127.0.0.1:$port,bind=127.0.0.2" 'allowed\n') == "allowed" ]] || fail "--cidr-allow: 127.0.0.2 not served"
grep -q "denied 127.0.0.1" "$work/rules.err" || fail "the refusal was not logged"
stop_server rules
pass "echo_server --cidr-allow --deny"

start proxy echo_server --proxy-protocol
[[ $(talk "TCP:127.0.0.1:$port" 'PROXY TCP4 192.0.2.1 127.0.0.1 5000 80\r\nbehind\n') == "behind" ]] ||
    fail "--proxy-protocol: no echo after a v1 header"
[[ -z $(talk "TCP:127.0.0.1:$port" 'no header\n') ]] || fail "--proxy-protocol: served without a header"
stop_server proxy
pass "echo_server --proxy-protocol"

start idle echo_server --idle-timeout 0.5
started=$(date +%s%N)
exec {silent}<>"/dev/tcp/127.0.0.1/$port"
timeout 5 cat <&"$silent" >/dev/null || true  # ends when the server closes
exec {silent}>&-
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
((elapsed_ms < 2500)) || fail "--idle-timeout 0.5: a silent client stayed ${elapsed_ms} ms"
stop_server idle
pass "echo_server --idle-timeout"

start rot13 rot13_server
[[ $(talk "TCP:127.0.0.1:$port" 'Hello, World\n') == "Uryyb, Jbeyq" ]] || fail "rot13_server"
stop_server rot13
pass "rot13_server"

start time time_server
[[ $(timeout 5 socat -u "TCP:127.0.0.1:$port" - 2>/dev/null) =~ ^Hello\ there,\ 127\.0\.0\.1,\ it\'s\ now\ .+$ ]] ||
    fail "time_server: no greeting"
stop_server time
pass "time_server"

start chat chat_server
sleep 10 | socat - "TCP:127.0.0.1:$port" >"$work/chat.heard" 2>/dev/null &
listener_pid=$!
sleep 0.3
talk "TCP:127.0.0.1:$port" 'hi all\n' >/dev/null
sleep 0.3
kill "$listener_pid" 2>/dev/null || true
grep -q "^127.0.0.1:[0-9]*: hi all$" "$work/chat.heard" || fail "chat_server: the other client did not hear the line"
stop_server chat
pass "chat_server"
