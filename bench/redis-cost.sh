#!/bin/sh
# Redis instructions per job, counted by callgrind (deterministic: no hardware counters
# needed): starts redis-server under valgrind --tool=callgrind, runs one scenario of
# `build/bench/queue --cost` against it (rt1 rt2 c1 c4 c64), stops it, and prints the
# instructions Redis executed per job (start-up excluded; a short run's script loads and
# the runtime's timers are included), and how much of it ran in scripts: in Lua itself, in
# the commands they call, and in setting up a call (ARGV) and the rest.
# Usage: sh bench/redis-cost.sh SCENARIO [JOBS]   (run from the repository root, after
# make build/bench/queue; QUEUE=path picks another build of the bench, for A/B)
set -e
scen=${1:-c4}; jobs=${2:-2000}; bench=${QUEUE:-./build/bench/queue}
dir=$(mktemp -d); port=$((30000 + $$ % 20000))
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" redis-server --port $port \
    --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >"$dir/vg.log" 2>&1 &
vg=$!
i=0; until redis-cli -p $port ping >/dev/null 2>&1; do i=$((i + 1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done
# the instructions of the start-up and of this run's setup are left out by zeroing here
callgrind_control -z $vg >/dev/null
AM2Z_BENCH_SLOWLOG=2 AM2Z_BENCH_PORT=$port AM2Z_BENCH_RT=$jobs AM2Z_BENCH_N=$jobs $bench --cost "$scen"

redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
wait $vg || true
n=$jobs; [ "$scen" = rt1 ] || [ "$scen" = rt2 ] && n=$((jobs + (jobs < 200 ? jobs : 200)))
f=$(ls -t "$dir"/cg.out* | head -1)
callgrind_annotate --inclusive=yes --auto=no "$f" 2>/dev/null | awk -v n=$n -v scen="$scen" '
  function v() { gsub(",", "", $1); return $1 + 0 }
  /PROGRAM TOTALS/ { tot = v() }
  /:evalShaCommand / || /:evalCommand / { ev += v() }
  /:lua_pcall / { lua = v() }
  /:scriptCall / { cmd = v() }
  END { printf "%s: Redis instructions per job %.0f; in scripts %.0f: Lua %.0f, the commands they call %.0f, ARGV and the rest %.0f\n",
               scen, tot / n, ev / n, (lua - cmd) / n, cmd / n, (ev - lua) / n }'
[ -n "$KEEP" ] && cp "$f" "$KEEP"; rm -rf "$dir"
