# shellcheck shell=bash disable=SC2034  # SERVER_PID/SERVER_PORT/SERVER_ENV are for the sourcing scripts
# bench/lib.sh — shared by bench/run.sh and bench/callgrind.sh (sourced).
#
# Servers are named "anyloop-<backend>" (examples/echo_server --backend
# <backend>, the Handle-based echo), "loop-<backend>" (bench/loop_echo
# --backend <backend>: the same echo on the EventLoop alone, no Handle) or
# "raw-<library>" (bench/raw_echo_<library>). Every server takes --host and
# --port, prints "listening on HOST:PORT" first and exits 0 on SIGTERM.
#
# A name ending in "+" is a second copy of the same server (bench/run.sh
# --aa runs a raw server beside a copy of itself).
#
# TLS servers: "anyloop-tls-<backend>" (examples/tls_echo_server --backend
# <backend>) and "raw-tls-epoll" (bench/raw_echo_tls_epoll, OpenSSL on the
# socket), both given the test certificates that tests/tls/make_certs.sh
# writes into $BENCH_BUILD/certs; loadgen talks to them with --tls.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_BUILD=${BENCH_BUILD:-$BENCH_ROOT/build/bench}
BENCH_HOST=127.0.0.1
ANYLOOP_BACKENDS=(epoll libev libevent asio poll select)
RAW_SERVERS=(epoll libev libevent asio poll select libuv)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs the Debian packages named as arguments that are missing.
bench_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    log "missing packages: ${missing[*]} (run as root or install them)"
    return 0
  fi
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# Configures and builds RelWithDebInfo in $BENCH_BUILD (tests off). A target
# that does not compile is reported and skipped, not fatal: whatever was
# built is measured.
bench_build() {
  bench_install g++ cmake ninja-build libev-dev libevent-dev libasio-dev libuv1-dev
  mkdir -p "$BENCH_BUILD"
  cmake -S "$BENCH_ROOT" -B "$BENCH_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DANYLOOP_BUILD_TESTS=OFF -DANYLOOP_BUILD_EXAMPLES=ON -DANYLOOP_BUILD_BENCH=ON >"$BENCH_BUILD/bench-configure.log" 2>&1 ||
    { cat "$BENCH_BUILD/bench-configure.log" >&2; return 1; }
  if ! cmake --build "$BENCH_BUILD" -- -k 0 >"$BENCH_BUILD/bench-build.log" 2>&1; then
    log "some targets did not build (see $BENCH_BUILD/bench-build.log); measuring what did"
    grep -E '^FAILED:' "$BENCH_BUILD/bench-build.log" >&2 || true
  fi
  [[ -x $BENCH_BUILD/bench/loadgen ]] || { log "loadgen did not build"; return 1; }
}

# Makes the TLS servers' certificate and key in $BENCH_BUILD/certs, once.
bench_certs() {
  [[ -s $BENCH_BUILD/certs/server.pem && -s $BENCH_BUILD/certs/server.key ]] && return 0
  bash "$BENCH_ROOT/tests/tls/make_certs.sh" "$BENCH_BUILD/certs" >"$BENCH_BUILD/certs.log" 2>&1 ||
    { log "make_certs.sh failed (see $BENCH_BUILD/certs.log)"; return 1; }
}

# Whether a server name is a TLS server.
is_tls_server() { [[ $1 == *-tls-* ]]; }

# loadgen's extra options for a server: --tls for the TLS servers.
loadgen_flags() {
  if is_tls_server "$1"; then echo "--tls"; fi
  return 0
}

# The command line of a server, or nothing when it was not built.
server_command() {
  set -- "${1%+}"
  local kind=${1%%-*} what=${1#*-}
  if [[ $what == tls-* ]]; then
    local program=$BENCH_BUILD/examples/tls_echo_server backend=${what#tls-}
    if [[ $kind == raw ]]; then
      program=$BENCH_BUILD/bench/raw_echo_tls_$backend
    else
      [[ $kind == anyloop ]] || return 0
      grep -q "^ANYLOOP_WITH_${backend^^}:BOOL=ON" "$BENCH_BUILD/CMakeCache.txt" || return 0
    fi
    [[ -x $program ]] || return 0
    bench_certs || return 0
    local args="--cert $BENCH_BUILD/certs/server.pem --key $BENCH_BUILD/certs/server.key"
    if [[ $kind == raw ]]; then echo "$program $args"; else echo "$program --backend $backend $args"; fi
    return 0
  fi
  if [[ $kind == anyloop || $kind == loop ]]; then
    local program=$BENCH_BUILD/examples/echo_server
    [[ $kind == loop ]] && program=$BENCH_BUILD/bench/loop_echo
    [[ -x $program ]] || return 0
    grep -q "^ANYLOOP_WITH_${what^^}:BOOL=ON" "$BENCH_BUILD/CMakeCache.txt" || return 0
    echo "$program --backend $what"
  else
    [[ -x $BENCH_BUILD/bench/raw_echo_$what ]] && echo "$BENCH_BUILD/bench/raw_echo_$what"
  fi
  return 0
}

# Environment a server needs, as NAME=value words (usually nothing).
# Debian's libev.so also exports libevent's API (event_add, event_base_new,
# ...: libev's compatibility layer), unversioned. In a program that links
# both, whichever library comes first in DT_NEEDED supplies those symbols for
# the whole process, libevent's own internal calls included; with libev
# first, anyloop's libevent backend silently runs on libev's emulation (and
# aborts in ev_signal_start when it watches a signal). Until the build fixes
# the order, preloading libevent_core puts the real libevent first.
server_env() {
  set -- "${1%+}"
  [[ $1 == *-libevent ]] || return 0
  local program
  read -r program _ <<<"$(server_command "$1")"
  [[ -n $program ]] || return 0
  local order
  order=$(readelf -d "$program" 2>/dev/null | awk '/NEEDED/ && /libev\.so|libevent_core/ { print ($0 ~ /libev\.so/) ? "libev" : "libevent"; exit }')
  [[ $order == libev ]] || return 0
  local core
  core=$(ldd "$program" | awk '/libevent_core/ { print $3; exit }')
  [[ -n $core ]] && echo "LD_PRELOAD=$core"
  return 0
}

# The servers to measure, anyloop's beside the raw one of the same library;
# with the argument "loop", loop-<backend> too.
all_servers() {
  local b
  for b in "${ANYLOOP_BACKENDS[@]}"; do
    echo "anyloop-$b"
    [[ ${1:-} == loop ]] && echo "loop-$b"
    [[ " ${RAW_SERVERS[*]} " == *" $b "* ]] && echo "raw-$b"
  done
  for b in "${RAW_SERVERS[@]}"; do
    [[ " ${ANYLOOP_BACKENDS[*]} " == *" $b "* ]] || echo "raw-$b"
  done
}

# The TLS servers: anyloop's on every backend, then the raw one.
tls_servers() {
  local b
  for b in "${ANYLOOP_BACKENDS[@]}"; do echo "anyloop-tls-$b"; done
  echo "raw-tls-epoll"
}

# start_server LOG_PREFIX COMMAND... — runs the server in the background
# (with the NAME=value words in SERVER_ENV, if any, in its environment),
# waits for its "listening on" line, sets SERVER_PID and SERVER_PORT.
start_server() {
  local prefix=$1 line="" i
  shift
  : >"$prefix.stdout"
  # shellcheck disable=SC2086  # SERVER_ENV holds separate words
  env ${SERVER_ENV:-} "$@" --host "$BENCH_HOST" --port 0 >"$prefix.stdout" 2>"$prefix.stderr" &
  SERVER_PID=$!
  for ((i = 0; i < 1200; ++i)); do  # up to 60 s (valgrind starts slowly)
    line=$(head -n 1 "$prefix.stdout")
    [[ $line == "listening on "* ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [[ $line != "listening on "* ]]; then
    log "server did not start: $* (first line: '$line'; see $prefix.stderr)"
    kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
    return 1
  fi
  SERVER_PORT=${line##*:}
}

# Sends SIGTERM and waits; returns the server's exit status.
stop_server() {
  local status=0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" || status=$?
  return $status
}
