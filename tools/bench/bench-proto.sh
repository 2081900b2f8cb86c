#!/bin/bash
# bench-proto.sh BUILDDIR — what `make bench-proto` runs:
#   1. velo-bench-codec: decode + authenticate cost per datagram, one core;
#   2. velo-bench PING round trips through a velod it starts on 127.0.0.1
#      (loss injection off), in a few settings: closed loop 1 and 8, open
#      loop 5000/s Poisson; with the dataplane's idle backoff on (the
#      development default) and off (busy poll); beside them, as the floor,
#      plain UDP round trips to a busy-polling echo thread (velo-bench
#      --mode udp).
# Prints a short table; writes the JSON of every run under
# BUILDDIR/results/bench-proto/ and a summary bench-proto.json beside them.
# Environment: BENCH_REQUESTS (closed-loop pings per run, default 20000),
# BENCH_SECONDS (codec seconds per figure, default 0.3).
set -eu
O=$(cd "$1" && pwd)
BIN=$O/bin
R=$O/results/bench-proto
N=${BENCH_REQUESTS:-20000}
CODEC_SECONDS=${BENCH_SECONDS:-0.3}
mkdir -p "$R"
T=$(mktemp -d /tmp/velo-bench.XXXXXX)
VELOD_PID=
cleanup() {
	[ -n "$VELOD_PID" ] && kill "$VELOD_PID" 2>/dev/null && wait "$VELOD_PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
ncores=$(nproc)
# The commit measured: $VELO_COMMIT when set (a copy of the tree without
# .git), else git's HEAD.
if [ -z "${VELO_COMMIT:-}" ]; then
	VELO_COMMIT=$(git -C "$(dirname "$0")" rev-parse --verify -q HEAD 2>/dev/null) ||
		VELO_COMMIT=unknown
fi
export VELO_COMMIT
commit=${VELO_COMMIT:0:12}

echo "bench-proto: commit $commit, $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"

# 1. Codec.
echo
echo "== decode + authenticate (velo-bench-codec, one core)"
if [ -x "$BIN/velo-bench-codec" ]; then
	"$BIN/velo-bench-codec" --seconds "$CODEC_SECONDS" --json "$R/codec.json" |
		tee "$R/codec.txt"
else
	echo "   velo-bench-codec not built: skipped"
fi

# 2. PING through velod.
"$BIN/velo-keygen" -o "$T/key" >/dev/null

# start_velod NAME [--set ...]: velod with its dataplane and scheduler
# pinned (core 0 and 1 when there are two cores or more).
start_velod() {
	local name=$1
	shift
	local dpc=-1 scc=-1
	if [ "$ncores" -ge 2 ]; then dpc=0; scc=1; fi
	cat >"$T/velod.json" <<JSON
{ "listen": "127.0.0.1:0", "keys": "$T/key", "control_socket": "$T/ctl.sock",
  "dataplane": { "core": $dpc }, "scheduler": { "core": $scc } }
JSON
	"$BIN/velod" -c "$T/velod.json" "$@" >"$T/velod.out" 2>"$T/velod.err" &
	VELOD_PID=$!
	for _ in $(seq 100); do
		grep -q '^velod: ready' "$T/velod.out" 2>/dev/null && break
		kill -0 "$VELOD_PID" 2>/dev/null || { cat "$T/velod.err" >&2; exit 1; }
		sleep 0.1
	done
	SERVER=127.0.0.1:$(sed -n 's/^velod: ready listen=[^ ]*:\([0-9]*\) .*/\1/p' "$T/velod.out")
	SETTINGS="$name: dataplane core $dpc, scheduler core $scc, $*"
}

stop_velod() {
	kill -TERM "$VELOD_PID"
	wait "$VELOD_PID" || true
	VELOD_PID=
}

# The client runs on the last core, away from the dataplane when it can.
client_core=$((ncores - 1))
bench() {
	local file=$1
	shift
	taskset -c "$client_core" "$BIN/velo-bench" --server "$SERVER" \
		--key "$T/key" --mode ping --warmup 500 --json "$R/$file.json" "$@" \
		>"$R/$file.txt"
}

# The floor: plain UDP round trips on loopback to a busy-polling echo
# thread on the dataplane's core: no protocol, no authentication, the
# client waiting the same way.
echo_core=-1
[ "$ncores" -ge 2 ] && echo_core=0
taskset -c "$client_core" "$BIN/velo-bench" --mode udp --closed 1 \
	--requests "$N" --warmup 500 --echo-core "$echo_core" \
	--json "$R/udp-baseline.json" >"$R/udp-baseline.txt"
runs=(udp-baseline)
for mode in backoff busy; do
	if [ $mode = backoff ]; then
		start_velod "idle backoff on" --set dataplane.idle_backoff=true \
			--set scheduler.idle_backoff=true
	else
		start_velod "dataplane busy-polls" --set dataplane.idle_backoff=false \
			--set scheduler.idle_backoff=true
	fi
	echo "$SETTINGS" >"$R/settings-$mode.txt"
	bench "ping-$mode-closed1" --closed 1 --requests "$N"
	bench "ping-$mode-closed8" --closed 8 --requests "$N"
	bench "ping-$mode-poisson5k" --rate 5000 --poisson --duration 3
	runs+=("ping-$mode-closed1" "ping-$mode-closed8" "ping-$mode-poisson5k")
	stop_velod
done

echo
echo "== PING round trip through velod on loopback (loss off; client on core $client_core)"
/usr/bin/python3 - "$R" "${runs[@]}" <<'PY'
import json, sys
r, runs = sys.argv[1], sys.argv[2:]
print("   %-24s %8s %8s %8s %8s %8s %9s %8s" %
      ("run (us)", "p50", "p90", "p99", "p99.9", "max", "ops/s", "n"))
out = {"runs": {}}
for name in runs:
    j = json.load(open("%s/%s.json" % (r, name)))
    l = j["results"]["latency_ns"].get("rtt")
    res = j["results"]
    out["runs"][name] = j
    if not l:
        print("   %-24s no samples (lost %d)" % (name.replace("ping-", ""), res["lost"]))
        continue
    print("   %-24s %8.1f %8.1f %8.1f %8.1f %8.1f %9.0f %8d" %
          (name.replace("ping-", ""), l["p50"] / 1e3, l["p90"] / 1e3, l["p99"] / 1e3,
           l["p99.9"] / 1e3, l["max"] / 1e3, res["throughput_ops_s"], l["n"]))
try:
    out["codec"] = json.load(open("%s/codec.json" % r))
except Exception:
    pass
json.dump(out, open("%s/bench-proto.json" % r, "w"), indent=1)
PY
for m in backoff busy; do echo "   $m: $(cat "$R/settings-$m.txt")"; done
if [ "$ncores" -lt 4 ]; then
	echo "   note: $ncores cores: the busy-polling echo thread and dataplane share" \
		"cores with the client and velod's other thread; quote figures from a" \
		"machine with 4+ idle cores"
fi
echo "   results: $R/"
