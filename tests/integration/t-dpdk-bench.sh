#!/bin/bash
# Both transports in one run, same veth pair, same client, same build:
#   socket   velod on the kernel UDP socket (kernel address on the veth)
#   af_packet velod on DPDK, net_af_packet vdev (no kernel address)
#   af_xdp   velod on DPDK, net_af_xdp vdev with our XDP program (kernel
#            address kept: the NIC is shared); BENCH_XDP=1 only
# For each: PING and 1-token INFER round trips (closed loop 1; p50/p99/
# p99.9), dataplane on core 0, scheduler and client on core 1, idle
# backoff on (BENCH_BUSY=1: the dataplane busy-polls; on 2 cores that
# starves the veth's softirq work on core 0 and AF_XDP stalls);
# then an open-loop run at $BENCH_RATE pings/s with idle backoff on, where
# the dataplane thread's CPU time over the datagrams it handled is the
# per-datagram cost, and packets/s per lcore is 1 / that cost.
# In `make check` it runs small (BENCH_REQUESTS=2000) and fails only when
# velod does not start or serve; lost requests are reported in the table; BENCH_REQUESTS=20000 for docs/perf.md.  JSON and
# tables under $O/results/bench-dpdk/.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/dpdk.inc"

N=${BENCH_REQUESTS:-2000}
RATE=${BENCH_RATE:-10000}
R=$O/results/bench-dpdk
mkdir -p "$R"
PROG=$DPDK_O/dataplane/xdp/velo_xdp.bpf.o
transports="af_packet socket"
# AF_XDP only on request: its transmit stalls after ~1,343 frames here
# (docs/dpdk.md), which would spend a minute of `make check` on timeouts.
[ "${BENCH_XDP:-0}" = 1 ] && grep -q '^CONFIG_DP_XDP=y' "$DPDK_O/.config" &&
	[ -f "$PROG" ] && transports="af_packet socket af_xdp"
ncores=$(nproc)
busy_backoff=true
[ "${BENCH_BUSY:-0}" = 1 ] && busy_backoff=false
dpc=-1; scc=-1; clc=0
[ "$ncores" -ge 2 ] && { dpc=0; scc=1; clc=$((ncores - 1)); }

start_transport() {	# NAME [--set ...]
	local t=$1
	shift
	case $t in
	socket)
		[ -f "$KEY" ] || make_key
		cat >"$T/velod.json" <<JSON
{ "listen": "$DP_IP:$DP_PORT", "keys": "$KEY", "control_socket": "$T/ctl.sock",
  "dataplane": { "core": $dpc }, "scheduler": { "core": $scc } }
JSON
		ip netns exec "$NS_DP" "$BIN/velod" -c "$T/velod.json" "$@" \
			>"$T/velod.out" 2>"$T/velod.err" &
		VELOD_PID=$!
		for _ in $(seq 100); do
			grep -q '^velod: ready' "$T/velod.out" 2>/dev/null && break
			kill -0 "$VELOD_PID" 2>/dev/null || fail "velod exited"
			sleep 0.1
		done
		SERVER=$DP_IP:$DP_PORT ;;
	af_packet)
		start_velod_dpdk --set dataplane.core=$dpc --set scheduler.core=$scc "$@" ;;
	af_xdp)
		DPDK_VDEV="net_af_xdp0,iface=$IF_DP,xdp_prog=$PROG" start_velod_dpdk \
			--set dpdk.mbufs=8192 --set dataplane.core=$dpc \
			--set scheduler.core=$scc "$@" ;;
	esac
}

bench() {	# FILE ARGS...
	local f=$1
	shift
	cl taskset -c "$clc" "$BIN/velo-bench" --server "$SERVER" --key "$KEY" \
		--max-seconds 30 --json "$R/$f.json" "$@" >"$R/$f.txt" 2>&1 ||
		{ note "velo-bench $f: $(grep -E 'completed|lost' "$R/$f.txt" | head -1)"; return 1; }
}

# CPU seconds of velod's dataplane thread (utime + stime).
dp_cpu() {
	local tid
	for tid in /proc/"$VELOD_PID"/task/*; do
		[ "$(cat "$tid/comm")" = velo-dp ] || continue
		awk -v hz="$(getconf CLK_TCK)" '{ printf "%.4f", ($14 + $15) / hz }' "$tid/stat"
		return
	done
	echo 0
}

for t in $transports; do
	if [ "$t" = af_packet ]; then
		ip -n "$NS_DP" addr flush dev "$IF_DP"
	else
		ip -n "$NS_DP" addr replace "$DP_IP/24" dev "$IF_DP"
	fi
	# Latency.
	start_transport "$t" --set dataplane.idle_backoff=$busy_backoff
	# A run that loses requests is reported, not fatal: on a shared
	# 2-core machine other load decides the tails (see docs/dpdk.md).
	bench "$t-ping" --mode ping --closed 1 --requests "$N" --warmup 200 || :
	bench "$t-infer1" --mode infer --max-tokens 1 --closed 1 \
		--requests "$((N / 2))" --warmup 100 --sessions 1 || :
	stop_velod
	# Cost per datagram: idle backoff on, open loop.
	start_transport "$t" --set dataplane.idle_backoff=true
	c0=$(dp_cpu); d0=$(( $(counter dp.rx_datagrams) + $(counter dp.tx_datagrams) ))
	# Open loop on a shared 2-core machine can lose pings to other load:
	# reported, not a failure (the cost per datagram stays meaningful).
	bench "$t-rate" --mode ping --rate "$RATE" --duration 3 ||
		note "$t: open loop at $RATE/s lost pings: $(grep -o '[0-9]* lost' "$R/$t-rate.txt")"
	c1=$(dp_cpu); d1=$(( $(counter dp.rx_datagrams) + $(counter dp.tx_datagrams) ))
	echo "{\"cpu_s\": $(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }'), \"datagrams\": $((d1 - d0))}" \
		>"$R/$t-cpu.json"
	stop_velod
done

/usr/bin/python3 - "$R" $transports <<'PY' | tee "$R/table.txt"
import json, sys
r, ts = sys.argv[1], sys.argv[2:]
out = {}
print("%-10s %-6s %8s %8s %8s %8s %7s | %8s %9s" %
      ("transport", "op", "p50 us", "p90", "p99", "p99.9", "n", "ns/dgram", "dgram/s"))
for t in ts:
    cpu = json.load(open("%s/%s-cpu.json" % (r, t)))
    ns = cpu["cpu_s"] * 1e9 / cpu["datagrams"] if cpu["datagrams"] else 0
    out[t] = {"cpu": cpu, "ns_per_datagram": ns}
    for op in ("ping", "infer1"):
        try:
            j = json.load(open("%s/%s-%s.json" % (r, t, op)))
        except Exception:
            print("%-10s %-6s (no result)" % (t, op))
            continue
        lat = j["results"]["latency_ns"]
        l = lat.get("rtt") or lat.get("total") or next(iter(lat.values()))
        out[t][op] = j
        print("%-10s %-6s %8.1f %8.1f %8.1f %8.1f %7d | %8.0f %9.0f  lost %d" %
              (t, op, l["p50"] / 1e3, l["p90"] / 1e3, l["p99"] / 1e3, l["p99.9"] / 1e3,
               l["n"], ns, 1e9 / ns if ns else 0, j["results"].get("lost", 0)))
json.dump(out, open("%s/bench-dpdk.json" % r, "w"), indent=1)
PY
for t in $transports; do
	[ -s "$R/$t-ping.json" ] || [ "$t" = af_xdp ] ||
		fail "$t: no PING result (see $R/$t-ping.txt)"
done
exit 0
