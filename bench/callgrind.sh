#!/usr/bin/env bash
# bench/callgrind.sh — user-space instructions per echo round trip, counted
# by valgrind --tool=callgrind in the server: deterministic, so it holds on a
# noisy shared machine where timings do not.
#
# For each server, two runs of one connection with 64-byte messages, K1 and
# K2 round trips (default 2000 and 12000). Start-up, accept and shutdown cost
# the same in both, so (Ir(K2) - Ir(K1)) / (K2 - K1) is the cost of one
# round trip. loadgen pauses (--think-us, default 500) after each echo so
# that every message finds the server idle in its wait, as a single
# connection does at native speed; without the pause the slowed-down server
# would sometimes find the next message already there, and the count of a
# library whose path depends on that (Asio) would vary from run to run. The same difference is taken per function (exclusive and
# inclusive), which shows where the instructions of a round trip go.
#
# Usage: bench/callgrind.sh [--no-build] [--counts "K1 K2"] [--think-us T]
#                           [--size BYTES] [--out DIR] [--reuse] [--tls] [SERVER...]
#   --size: message size (default 64).
#   --reuse: keep the profiles already in DIR, run only the missing ones.
#   --tls: the TLS servers instead (default anyloop-tls-epoll and
#   raw-tls-epoll; loadgen --tls; DIR defaults to build/bench/callgrind-tls),
#   judged against 1.10 × raw-tls-epoll. loadgen completes each TLS
#   handshake before its first message, and start-up, handshake (with the
#   server's session tickets) and close_notify are the same in both runs,
#   so they cancel out of the difference like accept and exit do.
#   SERVER: anyloop-<backend>, loop-<backend> or raw-<library>; default: all
#   that are built.
# Output: DIR/instructions.md (table), DIR/<server>.hot.txt (per function),
#   DIR/<server>.<K>.callgrind (raw profiles); DIR defaults to build/bench/callgrind.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

build=1
reuse=0
counts="2000 12000"
think_us=500
size=64
out=$BENCH_BUILD/callgrind
out_given=0
tls=0
servers=()
while (($#)); do
  case $1 in
    --no-build) build=0 ;;
    --reuse) reuse=1 ;;
    --counts) counts=$2; shift ;;
    --think-us) think_us=$2; shift ;;
    --size) size=$2; shift ;;
    --out) out=$2; out_given=1; shift ;;
    --tls) tls=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) servers+=("$1") ;;
  esac
  shift
done
read -r k1 k2 <<<"$counts"
((k2 > k1)) || { echo "--counts: K2 must exceed K1" >&2; exit 2; }

bench_install valgrind
((build)) && bench_build
((tls && !out_given)) && out=$BENCH_BUILD/callgrind-tls
mkdir -p "$out"
if ((${#servers[@]} == 0)); then
  if ((tls)); then servers=(anyloop-tls-epoll raw-tls-epoll); else mapfile -t servers < <(all_servers loop); fi
fi

# Total instructions (Ir) of a callgrind profile.
total_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

# Per-function Ir of a profile as "count<TAB>function" lines. callgrind
# lists code inlined from another file as "file:function" lines of its own:
# self costs are summed into their function; inclusive costs repeat the
# function's total, so the largest is kept. The object file is dropped.
function_ir() {
  callgrind_annotate --auto=no --inclusive="$2" --threshold=100 "$1" 2>/dev/null | awk -v inclusive="$2" '
    /^-+$/ { rule++; next }
    rule >= 6 && /^ *[0-9,]+ / {
      n = $1; gsub(",", "", n); n += 0
      sub(/^ *[0-9,]+ +(\([^)]*\) +)?/, "")
      sub(/ \[[^]]*\]$/, "")
      f = index($0, ":"); if (f > 0) $0 = substr($0, f + 1)
      if (inclusive == "yes") { if (n > sum[$0]) sum[$0] = n } else sum[$0] += n
    }
    END { for (name in sum) print sum[name] "\t" name }'
}

# Per-round-trip cost per function: (profile K2 - profile K1) / (K2 - K1).
hot_functions() {
  local a=$1 b=$2 inclusive=$3
  awk -F'\t' -v dk=$((k2 - k1)) '
    NR == FNR { base[$2] = $1; next }
    { d = ($1 - base[$2]) / dk; if (d >= 0.5 || d <= -0.5) printf "%10.1f  %.170s\n", d, $2 }
  ' <(function_ir "$a" "$inclusive") <(function_ir "$b" "$inclusive") | sort -rn | awk 'NR <= 60'
}

declare -A per_rt=() ir_small=() ir_large=()
for server in "${servers[@]}"; do
  read -ra command <<<"$(server_command "$server")"
  if ((${#command[@]} == 0)); then
    log "$server: not built, skipped"
    continue
  fi
  SERVER_ENV=$(server_env "$server")
  [[ -z $SERVER_ENV ]] || log "$server: libev comes before libevent in its DT_NEEDED; running with $SERVER_ENV"
  ok=1
  for k in $k1 $k2; do
    profile=$out/$server.$k.callgrind
    ((reuse)) && [[ -n $(total_ir "$profile" 2>/dev/null) ]] && continue
    rm -f "$profile"
    log "$server: $k round trips under callgrind"
    if ! start_server "$out/$server.$k" valgrind --tool=callgrind --callgrind-out-file="$profile" "${command[@]}"; then
      ok=0; break
    fi
    read -ra extra <<<"$(loadgen_flags "$server")"
    if ! "$BENCH_BUILD/bench/loadgen" "${extra[@]}" --host "$BENCH_HOST" --port "$SERVER_PORT" --connections 1 --size "$size" \
      --count "$k" --think-us "$think_us" --quiet >"$out/$server.$k.loadgen" 2>&1; then
      log "$server: loadgen failed: $(tail -n 1 "$out/$server.$k.loadgen")"
      ok=0
    fi
    stop_server || log "$server: exit status $? on SIGTERM (expected 0)"
    [[ -s $profile ]] || ok=0
    ((ok)) || break
  done
  ((ok)) || { log "$server: no measurement"; continue; }
  ir1=$(total_ir "$out/$server.$k1.callgrind")
  ir2=$(total_ir "$out/$server.$k2.callgrind")
  per_rt[$server]=$(awk -v a="$ir1" -v b="$ir2" -v dk=$((k2 - k1)) 'BEGIN { printf "%.0f", (b - a) / dk }')
  {
    echo "# $server: instructions per round trip by function, (Ir($k2) - Ir($k1)) / $((k2 - k1))"
    echo "# total: ${per_rt[$server]} per round trip"
    echo
    echo "## exclusive (self)"
    hot_functions "$out/$server.$k1.callgrind" "$out/$server.$k2.callgrind" no
    echo
    echo "## inclusive (self + callees)"
    hot_functions "$out/$server.$k1.callgrind" "$out/$server.$k2.callgrind" yes
  } >"$out/$server.hot.txt"
  ir_small[$server]=$ir1
  ir_large[$server]=$ir2
  log "$server: ${per_rt[$server]} instructions per round trip"
done

# The table, with the issue's targets: anyloop-X within raw-X + 300, and
# anyloop-epoll no more than raw-libev.
{
  echo "| server | Ir, $k1 round trips | Ir, $k2 round trips | instructions per round trip | target | result |"
  echo "|---|---:|---:|---:|---|---|"
  for server in "${servers[@]}"; do
    [[ -n ${per_rt[$server]:-} ]] || { echo "| $server | – | – | not measured yet (not built) | | |"; continue; }
    ir1=${ir_small[$server]} ir2=${ir_large[$server]} n=${per_rt[$server]}
    target="" result=""
    if is_tls_server "$server" && [[ $server != raw-* ]]; then
      # One raw TLS server; the target is a ratio, as in the timed runs.
      if [[ -n ${per_rt[raw-tls-epoll]:-} ]]; then
        limit=$(awk -v r="${per_rt[raw-tls-epoll]}" 'BEGIN { printf "%.0f", 1.10 * r }')
        ratio=$(awk -v a="$n" -v r="${per_rt[raw-tls-epoll]}" 'BEGIN { printf "%.2f", a / r }')
        target="≤ 1.10 × raw-tls-epoll = $limit"
        if ((n <= limit)); then result="pass (${ratio}×)"; else result="**fail** (${ratio}×, $((n - limit)) over)"; fi
      fi
    elif [[ $server == anyloop-* || $server == loop-* ]]; then
      raw=raw-${server#*-}
      if [[ -n ${per_rt[$raw]:-} ]]; then
        target="≤ $raw + 300 = $((per_rt[$raw] + 300))"
        if ((n <= per_rt[$raw] + 300)); then result="pass ($(printf "%+d" $((n - per_rt[$raw]))) vs raw)"
        else result="**fail** by $((n - per_rt[$raw] - 300))"; fi
      fi
      if [[ $server == anyloop-epoll && -n ${per_rt[raw-libev]:-} ]]; then
        target+="${target:+; }≤ raw-libev = ${per_rt[raw-libev]}"
        if ((n <= per_rt[raw-libev])); then result+="${result:+; }pass"
        else result+="${result:+; }**fail** by $((n - per_rt[raw-libev]))"; fi
      fi
    fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$server" "$ir1" "$ir2" "$n" "$target" "$result"
  done
} >"$out/instructions.md"
cat "$out/instructions.md"
