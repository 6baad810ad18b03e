#!/usr/bin/env bash
# bench/run.sh — the timed echo benchmark: anyloop's echo_server on every
# backend beside the hand-written raw servers, ping-pong load from loadgen.
#
# For each connections x message size (default 1x64 50x64 1000x64 50x16384)
# and each repetition, every server runs once, pinned to CPU 0 while loadgen
# runs pinned to CPU 1; the order of the servers alternates between
# repetitions so that drift on a shared machine spreads over all of them.
# Each run: warm-up, then a measured window (msgs/s, MB/s, p50/p99 latency,
# server CPU per round trip from /proc/<pid>/stat). Tables hold medians.
#
# Usage: bench/run.sh [--no-build] [--reps R] [--duration S] [--warmup S]
#                     [--scenarios "NxM ..."] [--out DIR] [--write-docs]
#                     [--with-loop] [--report-only] [--max-steal P] [SERVER...]
#   SERVER: anyloop-<backend>, loop-<backend> or raw-<library>; default: all
#   anyloop and raw servers that are built (--with-loop adds loop-<backend>).
#   --report-only: no runs; tables and chart from DIR/runs.txt as it is.
#   --max-steal P: a run during which the hypervisor took more than P % of
#   the machine's CPU time (steal, reported by loadgen; default 10) is run
#   again, up to 3 attempts in all; the last attempt counts whatever its
#   steal. The table shows each row's median steal.
#   --write-docs: also copy the chart to docs/performance-msgs.png and the
#   table into docs/performance.md (between its timed-results markers).
#   --tls: the TLS rows instead: anyloop-tls-<backend> (tls_echo_server)
#   on every backend and raw-tls-epoll (OpenSSL on an epoll socket), loadgen
#   --tls, scenarios 1x64 50x64 50x16384 unless given, output in
#   build/bench/timed-tls unless --out, each anyloop-tls-X compared with
#   raw-tls-epoll; --write-docs then fills the tls-timed-results markers
#   (no chart is copied).
# Output in DIR (default build/bench/timed): runs.txt (every run),
#   results.md (medians), msgs.dat and performance-msgs.png (the chart).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

build=1
reps=3
duration=3
warmup=0.5
scenarios="1x64 50x64 1000x64 50x16384"
out=$BENCH_BUILD/timed
write_docs=0
report_only=0
with_loop=""
tls=0
max_steal=10
steal_attempts=3
scenarios_given=0
out_given=0
servers=()
while (($#)); do
  case $1 in
    --no-build) build=0 ;;
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --scenarios) scenarios=$2; scenarios_given=1; shift ;;
    --out) out=$2; out_given=1; shift ;;
    --tls) tls=1 ;;
    --max-steal) max_steal=$2; shift ;;
    --write-docs) write_docs=1 ;;
    --with-loop) with_loop=loop ;;
    --report-only) report_only=1; build=0 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) servers+=("$1") ;;
  esac
  shift
done

if ((tls)); then
  ((scenarios_given)) || scenarios="1x64 50x64 50x16384"
  ((out_given)) || out=$BENCH_BUILD/timed-tls
fi

bench_install gnuplot-nox util-linux valgrind
((build)) && bench_build
mkdir -p "$out"
if ((${#servers[@]} == 0)); then
  if ((tls)); then mapfile -t servers < <(tls_servers); else mapfile -t servers < <(all_servers $with_loop); fi
fi

# 1000 connections need more descriptors than the usual 1024, in the server
# (which inherits this limit) and in loadgen.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < 2100)); then log "ulimit -n is $(ulimit -n); the 1000-connection rows may fail"; fi

server_cpu=() client_cpu=()
if (($(nproc) >= 2)); then
  server_cpu=(taskset -c 0)
  client_cpu=(taskset -c 1)
else
  log "fewer than 2 CPUs: server and loadgen are not pinned"
fi

# select() cannot watch descriptors >= FD_SETSIZE (1024): 1000 connections
# come too close (the server's own descriptors add to them), so it sits out.
skip_reason() {
  local server=$1 connections=$2
  if [[ $server == *-select ]] && ((connections >= 1000)); then
    echo "skipped: select() is limited to FD_SETSIZE (1024) descriptors"
  fi
}

# Keep only servers that were built.
available=()
for server in "${servers[@]}"; do
  if [[ -n $(server_command "$server") ]]; then available+=("$server"); else log "$server: not built, skipped"; fi
  environment=$(server_env "$server")
  [[ -z $environment ]] || log "$server: libev comes before libevent in its DT_NEEDED; running with $environment"
done
((${#available[@]})) || { log "nothing to measure"; exit 1; }

runs=$out/runs.txt

# run_once SERVER SCENARIO REP MAY_RETRY: one timed run, appended to runs.txt.
# False when the hypervisor took more than --max-steal of the machine during
# the window and MAY_RETRY is 1: that run is kept as status=steal (out of
# the medians) and the caller runs it again.
run_once() {
  local server=$1 scenario=$2 rep=$3 may_retry=$4 status=ok result="" steal
  local connections=${scenario%x*} size=${scenario#*x} prefix=$out/$1.$2.$3
  read -ra command <<<"$(server_command "$server")"
  # shellcheck disable=SC2034  # read by start_server
  SERVER_ENV=$(server_env "$server")
  if ! start_server "$prefix" "${server_cpu[@]}" "${command[@]}"; then
    echo "server=$server scenario=$scenario rep=$rep status=no-start" >>"$runs"
    return 0
  fi
  read -ra extra <<<"$(loadgen_flags "$server")"
  result=$("${client_cpu[@]}" "$BENCH_BUILD/bench/loadgen" "${extra[@]}" --host "$BENCH_HOST" --port "$SERVER_PORT" \
    --connections "$connections" --size "$size" --duration "$duration" --warmup "$warmup" \
    --server-pid "$SERVER_PID" --label "$server" --quiet 2>"$prefix.loadgen" | grep '^RESULT') || status=loadgen-failed
  if ! stop_server; then status+=",exit-not-0"; fi
  [[ $status == ok ]] || log "$server $scenario rep $rep: $status $(tail -n 1 "$prefix.loadgen")"
  steal=$(sed -n 's/.*steal_pct=\([^ ]*\).*/\1/p' <<<"$result")
  if [[ $status == ok && $may_retry == 1 && -n $steal ]] &&
    awk -v s="$steal" -v m="$max_steal" 'BEGIN { exit !(s > m) }'; then
    status=steal
  fi
  echo "server=$server scenario=$scenario rep=$rep status=$status ${result#RESULT }" >>"$runs"
  local note=""
  [[ $status == ok ]] || note=" ($status)"
  log "$server $scenario rep $rep: $(sed -n 's/.*\(msgs_per_s=[^ ]*\).*\(server_cpu_us_per_rt=[^ ]*\).*/\1 \2/p' <<<"$result") steal=${steal:-?}%$note"
  [[ $status != steal ]]
}
((report_only)) || : >"$runs"
started=$(date +%s)
((report_only)) || for scenario in $scenarios; do
  connections=${scenario%x*}
  size=${scenario#*x}
  for ((rep = 1; rep <= reps; ++rep)); do
    order=("${available[@]}")
    if ((rep % 2 == 0)); then
      order=()
      for ((i = ${#available[@]} - 1; i >= 0; --i)); do order+=("${available[$i]}"); done
    fi
    for server in "${order[@]}"; do
      [[ -n $(skip_reason "$server" "$connections") ]] && continue
      for ((attempt = 1; ; ++attempt)); do
        run_once "$server" "$scenario" "$rep" $((attempt < steal_attempts)) && break
      done
    done
  done
done
((report_only)) || log "timed runs took $(($(date +%s) - started)) s"

# ---- medians ------------------------------------------------------------------

# median_of_lines: the median of the numbers on stdin, one per line; "-"
# without any.
median_of_lines() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# median SERVER SCENARIO KEY: the median of KEY over that server's good runs.
median() {
  awk -v head="server=$1 scenario=$2 " -v key="$3=" '
    index($0, head) == 1 && index($0, " status=ok ") {
      for (i = 1; i <= NF; ++i) if (index($i, key) == 1) print substr($i, length(key) + 1)
    }' "$runs" | median_of_lines
}

# paired_ratio SERVER RAW SCENARIO: the median over repetitions of SERVER's
# CPU per round trip divided by RAW's in the same repetition. The two run
# one right after the other in every repetition, so a machine that drifts
# from one repetition to the next moves both alike; "-" without a pair.
paired_ratio() {
  awk -v a="server=$1 scenario=$3 " -v b="server=$2 scenario=$3 " '
    function value(   i) {
      for (i = 1; i <= NF; ++i) if (index($i, "server_cpu_us_per_rt=") == 1) return substr($i, 22)
    }
    function rep_of(   i) { for (i = 1; i <= NF; ++i) if (index($i, "rep=") == 1) return substr($i, 5) }
    index($0, " status=ok ") == 0 { next }
    index($0, a) == 1 { x[rep_of()] = value() }
    index($0, b) == 1 { y[rep_of()] = value() }
    END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$runs" | median_of_lines
}

# fmt FORMAT VALUE: printf, leaving "-" alone.
# shellcheck disable=SC2059  # the format is the argument
fmt() { if [[ $2 == - ]]; then echo -; else printf "$1" "$2"; fi; }

{
  echo "Medians of $reps runs of ${duration} s (after ${warmup} s warm-up) each; server on CPU 0, loadgen on CPU 1."
  if ((tls)); then
    echo "TLS (loadgen --tls). CPU/rt: the server's user+system CPU time per round trip (/proc/<pid>/stat); raw: raw-tls-epoll for every backend (target ≤ 1.10)."
  else
    echo "CPU/rt: the server's user+system CPU time per round trip (/proc/<pid>/stat); raw: the raw server of the same library (target ≤ 1.10)."
  fi
  echo
  echo "Steal: the share of the machine's CPU time the hypervisor took during the window (median; runs over ${max_steal} % were repeated, up to ${steal_attempts} attempts)."
  echo
  echo "vs raw: anyloop's median CPU per round trip ÷ the raw server's; the verdict is on it. Paired: the median, over the repetitions, of the same ratio within one repetition (where the two servers run back to back, drift between repetitions cancels), for comparison: where the two columns differ, the noise is larger than the difference."
  echo
  echo "| N×M | server | msgs/s | MB/s | p50 µs | p99 µs | server CPU µs/rt | steal % | vs raw | paired | target ≤ 1.10× |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for scenario in $scenarios; do
    connections=${scenario%x*}
    for server in "${available[@]}"; do
      reason=$(skip_reason "$server" "$connections")
      if [[ -n $reason ]]; then
        echo "| $scenario | $server | – | – | – | – | – | – | | | $reason |"
        continue
      fi
      msgs=$(median "$server" "$scenario" msgs_per_s)
      mb=$(median "$server" "$scenario" mb_per_s)
      p50=$(median "$server" "$scenario" p50_us)
      p99=$(median "$server" "$scenario" p99_us)
      cpu=$(median "$server" "$scenario" server_cpu_us_per_rt)
      steal=$(median "$server" "$scenario" steal_pct)
      ratio="" paired="" verdict=""
      raw=raw-${server#*-}
      is_tls_server "$server" && raw="raw-tls-epoll"  # the one raw TLS server
      if [[ $server == anyloop-* || $server == loop-* ]] && [[ $cpu != - && " ${available[*]} " == *" $raw "* ]]; then
        raw_cpu=$(median "$raw" "$scenario" server_cpu_us_per_rt)
        if [[ $raw_cpu != - ]]; then
          ratio=$(awk -v a="$cpu" -v b="$raw_cpu" 'BEGIN { printf "%.2f", a / b }')
          verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.10 ? "pass" : "**fail**") }')
        fi
        paired=$(paired_ratio "$server" "$raw" "$scenario")
        [[ $paired != - ]] && paired=$(awk -v r="$paired" 'BEGIN { printf "%.2f", r }')
      fi
      [[ $msgs == - ]] && verdict="no good run (see runs.txt)"
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scenario" "$server" "$(fmt %.0f "$msgs")" \
        "$(fmt %.2f "$mb")" "$(fmt %.1f "$p50")" "$(fmt %.1f "$p99")" "$(fmt %.3f "$cpu")" "$(fmt %.1f "$steal")" \
        "$ratio" "$paired" "$verdict"
    done
  done
} >"$out/results.md"
cat "$out/results.md"

# ---- chart --------------------------------------------------------------------

{
  echo "# index server colour $scenarios"
  i=0
  for server in "${available[@]}"; do
    case $server in
      anyloop-*) colour=$((0x3465a4)) ;;
      loop-*) colour=$((0x73d216)) ;;
      *) colour=$((0xf57900)) ;;
    esac
    line="$i $server $colour"
    for scenario in $scenarios; do
      v=$(median "$server" "$scenario" msgs_per_s)
      [[ $v == - ]] && v="?"
      line+=" $v"
    done
    echo "$line"
    i=$((i + 1))
  done
} >"$out/msgs.dat"

if command -v gnuplot >/dev/null; then
  {
    echo "set terminal pngcairo size 1400,1000 font 'DejaVu Sans,10'"
    echo "set output '$out/performance-msgs.png'"
    echo "set datafile missing '?'"
    echo "set termoption noenhanced"
    echo "set style fill solid 0.85 border -1"
    echo "set boxwidth 0.7"
    echo "set xtics rotate by -40 nomirror"
    echo "set grid ytics"
    echo "set yrange [0:*]"
    echo "set ylabel 'round trips per second (median)'"
    title="anyloop echo_server (blue)"
    ((tls)) && title="anyloop tls_echo_server (blue)"
    [[ " ${available[*]}" == *" loop-"* ]] && title+=", anyloop loop_echo (green)"
    title+=", hand-written raw servers (orange): msgs/s, higher is better"
    echo "set multiplot layout 2,2 title '$title'"
    column=4
    for scenario in $scenarios; do
      echo "set title '${scenario%x*} connection(s) × ${scenario#*x} bytes'"
      echo "plot '$out/msgs.dat' using 1:$column:3:xtic(2) with boxes lc rgb variable notitle, \\"
      echo "     '' using 1:$column:(sprintf('%.0fk', column($column) / 1000)) with labels offset 0,0.7 font ',8' notitle"
      column=$((column + 1))
    done
    echo "unset multiplot"
  } >"$out/chart.gp"
  gnuplot "$out/chart.gp" && log "chart: $out/performance-msgs.png"
fi

if ((write_docs)); then
  doc=$BENCH_ROOT/docs/performance.md
  marker=timed-results
  if ((tls)); then
    marker="tls-timed-results"
  elif [[ -f $out/performance-msgs.png ]]; then
    cp "$out/performance-msgs.png" "$BENCH_ROOT/docs/performance-msgs.png"
  fi
  if [[ -f $doc ]] && grep -q "<!-- $marker:begin -->" "$doc"; then
    awk -v table="$out/results.md" -v begin="<!-- $marker:begin -->" -v end="<!-- $marker:end -->" '
      $0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; next }
      $0 == end { skip = 0 }
      !skip' "$doc" >"$doc.new" && mv "$doc.new" "$doc"
    log "updated $doc"
  fi
fi
