#!/usr/bin/env bash
# examples_test.sh — runs examples/tls_echo_server and examples/tls_client
# against each other and against `openssl s_client` / `openssl s_server`.
#
#   examples_test.sh TLS_ECHO_SERVER TLS_CLIENT MAKE_CERTS "BACKEND..."
#
# Checks: lines and a binary blob round-trip on every backend; SIGTERM ends
# the server with status 0; a wrong --peername, an untrusted server, a bad
# certificate file and a missing client certificate each fail with a
# non-zero status and a message saying why; the server serves s_client
# (with its chain) and the client talks to s_server, whose host name it
# verifies. Each step has a time limit; the first failure ends the test.
set -euo pipefail

server_bin=${1:?usage: examples_test.sh TLS_ECHO_SERVER TLS_CLIENT MAKE_CERTS BACKENDS}
client_bin=${2:?}
make_certs=${3:?}
read -ra backends <<<"${4//;/ }"
((${#backends[@]})) || backends=("")

# shellcheck source=SCRIPTDIR/../support/example_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../support/example_lib.sh"
openssl_pid=""
cleanup_pid_variables+=(openssl_pid)

bash "$make_certs" "$work/certs" >/dev/null 2>&1 || fail "make_certs.sh $work/certs"
certs=$work/certs

# start_server NAME ARGS...: runs tls_echo_server in the background, waits
# for its first line and sets server_pid and port.
start_server() {
    local name=$1
    shift
    start_background "$name" "$server_bin" --port 0 "$@"
    [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || fail "$name: first line '$line', expected 'listening on 127.0.0.1:PORT'"
    port=${BASH_REMATCH[1]}
}

# expect_failure NAME PATTERN COMMAND...: the command fails and its stderr
# matches PATTERN.
expect_failure() {
    local name=$1 pattern=$2 status=0
    shift 2
    timeout 20 "$@" </dev/null >"$work/$name.out" 2>"$work/$name.err" || status=$?
    ((status != 0 && status != 124)) || fail "$name: exit status $status, expected a failure"
    grep -q -- "$pattern" "$work/$name.err" || fail "$name: stderr lacks '$pattern'"
    pass "$name (exit $status: $(grep -m1 -- "$pattern" "$work/$name.err"))"
}

printf 'hello\nsecond line\n\nlast line\n' >"$work/lines.txt"
head -c 300000 /dev/urandom >"$work/blob.bin"

# ---- tls_echo_server and tls_client on every backend ------------------------
for backend in "${backends[@]}"; do
    with=()
    [[ -n $backend ]] && with=(--backend "$backend")
    start_server "server-$backend" "${with[@]}" --cert "$certs/server.pem" --key "$certs/server.key"
    # Standard input as a pipe (watched by a Handle) and as a regular file.
    # shellcheck disable=SC2002  # a pipe on purpose: tls_client watches it with a Handle
    cat "$work/lines.txt" | timeout 20 "$client_bin" 127.0.0.1 "$port" "${with[@]}" --ca "$certs/ca.pem" \
        >"$work/echo.out" 2>"$work/client.err" || fail "$backend: tls_client exit status $?"
    cmp -s "$work/echo.out" "$work/lines.txt" || fail "$backend: lines echoed differ"
    timeout 20 "$client_bin" localhost "$port" "${with[@]}" --ca "$certs/ca.pem" <"$work/blob.bin" \
        >"$work/blob.out" 2>"$work/client.err" || fail "$backend: tls_client (file input) exit status $?"
    cmp -s "$work/blob.out" "$work/blob.bin" || fail "$backend: binary echo differs"
    # shellcheck disable=SC2002  # a pipe again (the line above fed a regular file)
    cat "$work/blob.bin" | timeout 20 "$client_bin" localhost "$port" "${with[@]}" --ca "$certs/ca.pem" \
        >"$work/blob.out" 2>"$work/client.err" || fail "$backend: tls_client (pipe input) exit status $?"
    cmp -s "$work/blob.out" "$work/blob.bin" || fail "$backend: binary echo through a pipe differs"
    # Empty input: the client still completes the handshake, then closes.
    timeout 20 "$client_bin" localhost "$port" "${with[@]}" --ca "$certs/ca.pem" </dev/null \
        >"$work/empty.out" 2>"$work/client.err" || fail "$backend: tls_client with empty input: exit status $?"
    stop_server "server-$backend"
    pass "${backend:-default}: lines and 300 kB round-trip, SIGTERM exits 0"
done

# ---- failures -----------------------------------------------------------------
start_server failures --cert "$certs/server.pem" --key "$certs/server.key"
expect_failure wrong-peername "hostname mismatch" \
    "$client_bin" 127.0.0.1 "$port" --ca "$certs/ca.pem" --peername wrong.example
expect_failure untrusted "certificate verify failed" "$client_bin" localhost "$port" --ca "$certs/other-ca.pem"
# --insecure talks to it all the same.
timeout 20 "$client_bin" localhost "$port" --insecure <"$work/lines.txt" >"$work/insecure.out" 2>"$work/client.err" ||
    fail "--insecure: exit status $?"
cmp -s "$work/insecure.out" "$work/lines.txt" || fail "--insecure: echo differs"
pass "--insecure skips verification"
stop_server failures

expect_failure bad-certificate "garbage.pem" "$server_bin" --cert "$certs/garbage.pem" --key "$certs/server.key"
expect_failure missing-key "no-such.key" "$server_bin" --cert "$certs/server.pem" --key "$certs/no-such.key"
expect_failure mismatched-key "does not match" "$server_bin" --cert "$certs/server.pem" --key "$certs/client.key"

# ---- client certificates --------------------------------------------------------
start_server verify-client --cert "$certs/server.pem" --key "$certs/server.key" --ca "$certs/ca.pem" --verify-client
timeout 20 "$client_bin" localhost "$port" --ca "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client.key" \
    <"$work/lines.txt" >"$work/client-cert.out" 2>"$work/client.err" || fail "client certificate: exit status $?"
cmp -s "$work/client-cert.out" "$work/lines.txt" || fail "client certificate: echo differs"
pass "client certificate accepted"
# TLS 1.3: the client learns of the refusal from the server's alert.
expect_failure no-client-certificate "alert" "$client_bin" localhost "$port" --ca "$certs/ca.pem"
grep -q "peer did not return a certificate" "$work/verify-client.err" ||
    fail "verify-client: the server did not log 'peer did not return a certificate'"
pass "the server names the missing client certificate"
stop_server verify-client

# ---- real peers: openssl s_client and s_server ----------------------------------
if ! command -v openssl >/dev/null; then
    echo "openssl command not found: the s_client / s_server steps are skipped"
    echo "$steps steps passed"
    exit 0
fi

# s_client against tls_echo_server serving a chain (leaf + intermediate).
# s_client would exit at the end of its input before the echo is back, so
# the input stays open until the last line came back (or 10 s passed).
start_server s_client --cert "$certs/chained-full.pem"
# shellcheck disable=SC2094  # the input side polls the output file on purpose
{
    cat "$work/lines.txt"
    for ((i = 0; i < 100; ++i)); do grep -q "last line" "$work/s_client.out" 2>/dev/null && break; sleep 0.1; done
} | timeout 20 openssl s_client -quiet -no_ign_eof -connect "127.0.0.1:$port" -CAfile "$certs/ca.pem" \
    -verify_return_error -verify_hostname localhost >"$work/s_client.out" 2>"$work/s_client.err" ||
    fail "openssl s_client: exit status $?"
cmp -s "$work/s_client.out" "$work/lines.txt" || fail "openssl s_client: echo differs"
grep -q "depth=1 CN = anyloop test intermediate" "$work/s_client.err" || fail "openssl s_client: no chain served"
stop_server s_client
pass "openssl s_client against tls_echo_server (chain served)"

# tls_client against s_server -rev (which sends each line back reversed).
# start_s_server: one connection, then s_server exits; its stdin is a fifo
# held open here, so it never sees end of input.
mkfifo "$work/s_server.in"
exec 7<>"$work/s_server.in"
start_s_server() {
    local i
    : >"$work/s_server.out"
    openssl s_server -accept 0 -naccept 1 -rev -cert "$certs/server.pem" -key "$certs/server.key" \
        <&7 >"$work/s_server.out" 2>"$work/s_server.err" &
    openssl_pid=$!
    port=""
    for ((i = 0; i < 200; ++i)); do
        port=$(sed -n 's/^ACCEPT .*:\([0-9][0-9]*\)$/\1/p' "$work/s_server.out")
        [[ -z $port ]] || break
        sleep 0.05
    done
    [[ -n $port ]] || fail "openssl s_server did not start"
}
stop_s_server() {
    kill "$openssl_pid" 2>/dev/null || true
    wait "$openssl_pid" 2>/dev/null || true
    openssl_pid=""
}

for peer in localhost 127.0.0.1; do
    start_s_server
    printf 'abc\nhello\n' | timeout 20 "$client_bin" "$peer" "$port" --ca "$certs/ca.pem" \
        >"$work/s_server-client.out" 2>"$work/client.err" || fail "tls_client against s_server ($peer): exit status $?"
    [[ $(cat "$work/s_server-client.out") == $'cba\nolleh' ]] || fail "tls_client against s_server ($peer): wrong reply"
    stop_s_server
    pass "tls_client against openssl s_server, verified as $peer"
done
start_s_server
expect_failure s_server-wrong-name "hostname mismatch" \
    "$client_bin" localhost "$port" --ca "$certs/ca.pem" --peername wrong.example
stop_s_server

echo "$steps steps passed"
