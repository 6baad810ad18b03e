#!/usr/bin/env bash
# bench/run.sh — the timed echo benchmark: anyloop's echo_server on every
# backend beside the hand-written raw servers, ping-pong load from loadgen.
#
# For each connections x message size (default 1x64 50x64 1000x64 50x16384)
# and each repetition, every anyloop server runs beside the raw server of its
# library in one loadgen run (loadgen --port2): both pinned to CPU 0, loadgen
# to CPU 1, the two servers taking turns every 50 ms, each getting its own N
# connections and DURATION seconds of turns. Whatever the machine does on a
# scale of seconds then falls on both alike. A raw server nobody is compared
# with (libuv) runs alone. The order of the pairs, and which server of a pair
# takes the first turn, alternate between repetitions. Each run: warm-up,
# then a measured window (msgs/s, MB/s, p50/p99 latency, the server's CPU
# time per round trip: its utime + stime, read through its CPU-time clock).
# Tables hold medians.
#
# Usage: bench/run.sh [--no-build] [--reps R] [--duration S] [--warmup S]
#                     [--scenarios "NxM ..."] [--out DIR] [--write-docs]
#                     [--with-loop] [--report-only] [--max-steal P] [--sequential] [--aa]
#                     [SERVER...]
#   SERVER: anyloop-<backend>, loop-<backend> or raw-<library>; default: all
#   anyloop and raw servers that are built (--with-loop adds loop-<backend>).
#   --report-only: no runs; tables and chart from DIR/runs.txt as it is.
#   --sequential: every server runs alone, one after the other (as before
#   pairs were run side by side; for comparison).
#   --aa: a check of the method: each raw server (or with --tls the raw TLS
#   server) beside a second copy of itself, "raw-X+", compared with raw-X as
#   an anyloop server would be. Both are the same program, so every ratio
#   should come out near 1.00; how far they stray is the method's noise.
#   --max-steal P: a run during which the hypervisor took more than P % of
#   the machine's CPU time (steal, reported by loadgen; default 10) is run
#   again (a pair, both), up to 3 attempts in all; the last attempt counts whatever its
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
sequential=0
aa=0
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
    --sequential) sequential=1 ;;
    --aa) aa=1 ;;
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
if ((aa)); then
  raws=()
  for server in "${servers[@]}"; do [[ $server == raw-* ]] && raws+=("$server+" "$server"); done
  servers=("${raws[@]}")
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
  local server=${1%+} connections=$2
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

# raw_of SERVER: the raw server an anyloop or loop server is compared with.
raw_of() {
  if [[ $1 == *+ ]]; then
    echo "${1%+}"
  elif is_tls_server "$1"; then
    echo raw-tls-epoll
  else
    echo "raw-${1#*-}"
  fi
}

# partner_of SERVER: the raw server an anyloop or loop server runs beside,
# when that one is measured too (and runs are not --sequential).
partner_of() {
  ((sequential)) && return 0
  [[ $1 == anyloop-* || $1 == loop-* || $1 == *+ ]] || return 0
  local raw
  raw=$(raw_of "$1")
  [[ " ${available[*]} " == *" $raw "* ]] && echo "$raw"
  return 0
}

# The units of a repetition: "SERVER RAW" pairs, and the servers that run
# alone (a raw server only if nobody runs beside it).
units=()
for server in "${available[@]}"; do
  partner=$(partner_of "$server")
  if [[ -n $partner ]]; then
    units+=("$server $partner")
    continue
  fi
  if [[ $server == raw-* ]]; then
    for other in "${available[@]}"; do [[ $(partner_of "$other") == "$server" ]] && continue 2; done
  fi
  units+=("$server")
done

# run_unit SCENARIO REP MAY_RETRY SERVER [SERVER2]: one timed run of one
# server, or of two side by side (loadgen --port2; each gets DURATION s of
# turns), appended to runs.txt, a line per server; a pair's lines carry
# duel=<the anyloop server>. False when the hypervisor took more than
# --max-steal of the machine during the window and MAY_RETRY is 1: the run
# is kept as status=steal (out of the medians) and the caller runs it again.
run_unit() {
  local scenario=$1 rep=$2 may_retry=$3
  shift 3
  local members=("$@") connections=${scenario%x*} size=${scenario#*x}
  local prefix=$out/$1.$scenario.$rep status=ok results="" steal="" tag="" window=$duration i pid
  local pids=() ports=() extra=() command=() pair=()
  if (($# == 2)); then
    tag="duel=$2 "  # named after the server compared, not its raw counterpart
    [[ -n $(partner_of "$1") ]] && tag="duel=$1 "
    window=$(awk -v d="$duration" 'BEGIN { print 2 * d }')
  fi
  for ((i = 0; i < $#; ++i)); do
    read -ra command <<<"$(server_command "${members[$i]}")"
    # shellcheck disable=SC2034  # read by start_server
    SERVER_ENV=$(server_env "${members[$i]}")
    start_server "$out/${members[$i]}.$scenario.$rep" "${server_cpu[@]}" "${command[@]}" || { status=no-start; break; }
    pids+=("$SERVER_PID")
    ports+=("$SERVER_PORT")
  done
  if [[ $status == ok ]]; then
    (($# == 2)) && pair=(--port2 "${ports[1]}" --server-pid2 "${pids[1]}" --label2 "$2")
    read -ra extra <<<"$(loadgen_flags "$1")"
    results=$("${client_cpu[@]}" "$BENCH_BUILD/bench/loadgen" "${extra[@]}" --host "$BENCH_HOST" \
      --connections "$connections" --size "$size" --duration "$window" --warmup "$warmup" \
      --port "${ports[0]}" --server-pid "${pids[0]}" --label "$1" "${pair[@]}" --quiet 2>"$prefix.loadgen" |
      grep '^RESULT') || status=loadgen-failed
  fi
  for pid in "${pids[@]}"; do
    SERVER_PID=$pid
    stop_server || status+=",exit-not-0"
  done
  [[ $status == ok ]] || log "$* $scenario rep $rep: $status $(tail -n 1 "$prefix.loadgen" 2>/dev/null)"
  steal=$(sed -n 's/.*steal_pct=\([^ ]*\).*/\1/p' <<<"$results" | head -n 1)
  if [[ $status == ok && $may_retry == 1 && -n $steal ]] &&
    awk -v s="$steal" -v m="$max_steal" 'BEGIN { exit !(s > m) }'; then
    status=steal
  fi
  local server result note=""
  [[ $status == ok ]] || note=" ($status)"
  for server in "$@"; do
    result=$(grep "^RESULT label=$server " <<<"$results" || true)
    echo "server=$server scenario=$scenario rep=$rep status=$status $tag${result#RESULT }" >>"$runs"
    log "$server $scenario rep $rep: $(sed -n 's/.*\(msgs_per_s=[^ ]*\).*\(server_cpu_us_per_rt=[^ ]*\).*/\1 \2/p' <<<"$result") steal=${steal:-?}%$note"
  done
  [[ $status != steal ]]
}
((report_only)) || : >"$runs"
started=$(date +%s)
((report_only)) || for scenario in $scenarios; do
  connections=${scenario%x*}
  size=${scenario#*x}
  for ((rep = 1; rep <= reps; ++rep)); do
    order=("${units[@]}")
    if ((rep % 2 == 0)); then
      order=()
      for ((i = ${#units[@]} - 1; i >= 0; --i)); do order+=("${units[$i]}"); done
    fi
    for unit in "${order[@]}"; do
      read -ra members <<<"$unit"
      for server in "${members[@]}"; do [[ -n $(skip_reason "$server" "$connections") ]] && continue 2; done
      # The first turn goes to each server of a pair in every other repetition.
      ((rep % 2 == 0 && ${#members[@]} == 2)) && members=("${members[1]}" "${members[0]}")
      for ((attempt = 1; ; ++attempt)); do
        run_unit "$scenario" "$rep" $((attempt < steal_attempts)) "${members[@]}" && break
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

# paired_ratios SERVER RAW SCENARIO: SERVER's CPU per round trip divided by
# RAW's in the same run (side by side, the lines tagged duel=SERVER) or,
# from --sequential runs, in the same repetition (one right after the
# other), a line per repetition.
paired_ratios() {
  awk -v a="server=$1 scenario=$3 " -v b="server=$2 scenario=$3 " -v duel="duel=$1" '
    function field(name,   i) {
      for (i = 1; i <= NF; ++i) if (index($i, name "=") == 1) return substr($i, length(name) + 2)
      return ""
    }
    index($0, " status=ok ") == 0 { next }
    # a run side by side with someone else is not this pair
    { d = field("duel") }
    d != "" && "duel=" d != duel { next }
    index($0, a) == 1 { x[field("rep")] = field("server_cpu_us_per_rt") }
    index($0, b) == 1 { y[field("rep")] = field("server_cpu_us_per_rt") }
    END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$runs"
}

# fmt FORMAT VALUE: printf, leaving "-" alone.
# shellcheck disable=SC2059  # the format is the argument
fmt() { if [[ $2 == - ]]; then echo -; else printf "$1" "$2"; fi; }

{
  if ((sequential)); then
    echo "Medians of $reps runs of ${duration} s (after ${warmup} s warm-up) each, one server at a time; server on CPU 0, loadgen on CPU 1."
  else
    echo "Medians of $reps runs. In each run an anyloop server and its raw counterpart ran side by side (both on CPU 0, loadgen on CPU 1), taking turns every 50 ms for ${duration} s of turns each (after ${warmup} s warm-up); a raw server without a counterpart ran alone for ${duration} s."
  fi
  if ((tls)); then
    echo "TLS (loadgen --tls). CPU/rt: the server's user+system CPU time per round trip (read through its CPU-time clock: what /proc/<pid>/stat rounds to 10 ms ticks); raw: raw-tls-epoll for every backend (target ≤ 1.10)."
  else
    echo "CPU/rt: the server's user+system CPU time per round trip (read through its CPU-time clock: what /proc/<pid>/stat rounds to 10 ms ticks); raw: the raw server of the same library (target ≤ 1.10)."
  fi
  echo
  echo "Steal: the share of the machine's CPU time the hypervisor took during the window (median; runs over ${max_steal} % were repeated, up to ${steal_attempts} attempts)."
  echo
  if ((sequential)); then
    echo "vs raw: anyloop's median CPU per round trip ÷ the raw server's; the verdict is on it. Paired: the median, over the repetitions, of the same ratio within one repetition (where the two servers run back to back, drift between repetitions cancels), for comparison: where the two columns differ, the noise is larger than the difference; min–max: the lowest and highest of those ratios."
  else
    echo "Paired: the median, over the runs, of anyloop's CPU per round trip ÷ the raw server's within one run, where the two servers took turns in one window; the verdict is on it. min–max: the lowest and highest of those ratios. vs raw: the ratio of the two medians, for comparison (it sets runs made at different times against each other; with --tls the raw server's median is over its runs beside every backend)."
  fi
  echo
  echo "| N×M | server | msgs/s | MB/s | p50 µs | p99 µs | server CPU µs/rt | steal % | vs raw | paired | paired min–max | target ≤ 1.10× |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for scenario in $scenarios; do
    connections=${scenario%x*}
    for server in "${available[@]}"; do
      reason=$(skip_reason "$server" "$connections")
      if [[ -n $reason ]]; then
        echo "| $scenario | $server | – | – | – | – | – | – | | | | $reason |"
        continue
      fi
      msgs=$(median "$server" "$scenario" msgs_per_s)
      mb=$(median "$server" "$scenario" mb_per_s)
      p50=$(median "$server" "$scenario" p50_us)
      p99=$(median "$server" "$scenario" p99_us)
      cpu=$(median "$server" "$scenario" server_cpu_us_per_rt)
      steal=$(median "$server" "$scenario" steal_pct)
      ratio="" paired="" spread="" verdict=""
      raw=$(raw_of "$server")
      if [[ $server == anyloop-* || $server == loop-* || $server == *+ ]] && [[ $cpu != - && " ${available[*]} " == *" $raw "* ]]; then
        raw_cpu=$(median "$raw" "$scenario" server_cpu_us_per_rt)
        if [[ $raw_cpu != - ]]; then
          ratio=$(awk -v a="$cpu" -v b="$raw_cpu" 'BEGIN { printf "%.2f", a / b }')
        fi
        ratios=$(paired_ratios "$server" "$raw" "$scenario" | sort -g)
        paired=-
        [[ -n $ratios ]] && paired=$(median_of_lines <<<"$ratios")
        if [[ $paired != - ]]; then
          paired=$(awk -v r="$paired" 'BEGIN { printf "%.2f", r }')
          spread=$(awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f–%.2f", lo, hi }' <<<"$ratios")
        fi
        # The verdict: side by side, on the ratio within each run; from
        # sequential runs, on the ratio of the medians.
        judged=$paired
        ((sequential)) && judged=$ratio
        [[ -n $judged && $judged != - ]] &&
          verdict=$(awk -v r="$judged" 'BEGIN { print (r <= 1.10 ? "pass" : "**fail**") }')
      fi
      [[ $msgs == - ]] && verdict="no good run (see runs.txt)"
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scenario" "$server" \
        "$(fmt %.0f "$msgs")" "$(fmt %.2f "$mb")" "$(fmt %.1f "$p50")" "$(fmt %.1f "$p99")" "$(fmt %.3f "$cpu")" \
        "$(fmt %.1f "$steal")" "$ratio" "$paired" "$spread" "$verdict"
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
