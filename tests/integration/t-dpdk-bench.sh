#!/bin/bash
# Both transports in one run, same veth pair, same client, same build:
#   socket   velod on the kernel UDP socket (kernel address on the veth)
#   af_packet velod on DPDK, net_af_packet vdev (no kernel address)
#   af_xdp   velod on DPDK, net_af_xdp vdev with our XDP program (kernel
#            address kept: the NIC is shared); where CONFIG_DP_XDP is
#            built (BENCH_XDP=0 leaves it out)
# For each: PING and 1-token INFER round trips (closed loop 1; p50/p99/
# p99.9; the INFER runs the bundled model on the CPU backend, the same
# work through either transport), dataplane on core 0, scheduler and client
# on core 1, the dataplane busy-polling (idle_backoff false: the production
# setting, for both transports; BENCH_BUSY=0 for idle backoff, where an
# idle DPDK loop naps up to 50 us in ppoll for want of an fd and a frame
# waits out the nap: +60-70 us at p50 on this VM).  AF_XDP always runs with
# idle backoff: busy polling on the core that runs the veth's softirq
# starves it on 2 cores;
# then an open-loop run at $BENCH_RATE pings/s with idle backoff on, where
# the dataplane thread's CPU time over the datagrams it handled is the
# per-datagram cost, and packets/s per lcore is 1 / that cost.
# Then velo-bench-dp on the dataplane's core: the DPDK transport's packet
# and session path on frames in memory (no PMD, no kernel), ns/datagram and
# Mpps per lcore at saturation.  The table ends with the DPDK / socket
# ratios of each percentile (the figure docs/perf.md quotes: on veth the
# absolute times are the kernel's, not a NIC's).
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
[ "${BENCH_XDP:-1}" = 1 ] && grep -q '^CONFIG_DP_XDP=y' "$DPDK_O/.config" &&
	[ -f "$PROG" ] && transports="af_packet socket af_xdp"
ncores=$(nproc)
busy_backoff=false
[ "${BENCH_BUSY:-1}" = 0 ] && busy_backoff=true
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
	bo=$busy_backoff; [ "$t" = af_xdp ] && bo=true
	start_transport "$t" --set dataplane.idle_backoff=$bo "${MODEL_ARGS[@]}"
	# A run that loses requests is reported, not fatal: on a shared
	# 2-core machine other load decides the tails (see docs/dpdk.md).
	bench "$t-ping" --mode ping --closed 1 --requests "$N" --warmup 200 || :
	bench "$t-infer1" --mode infer --max-tokens 1 --closed 1 \
		--requests "$((N / 2))" --warmup 100 --sessions 1 || :
	stop_velod
	# Cost per datagram: idle backoff on, open loop.
	start_transport "$t" --set dataplane.idle_backoff=true "${MODEL_ARGS[@]}"
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

# Saturation of one lcore: the packet + session path on frames in memory.
bdp_core=$dpc; [ "$bdp_core" -ge 0 ] || bdp_core=0
"$BIN/velo-bench-dp" --core "$bdp_core" --seconds "${BENCH_DP_SECONDS:-0.3}" \
	--reps 5 --json "$R/bench-dp.json" >"$R/bench-dp.txt" 2>&1 ||
	{ cat "$R/bench-dp.txt"; fail "velo-bench-dp"; }
sed 's/^/# /' "$R/bench-dp.txt"

/usr/bin/python3 - "$R" $transports <<'PY' | tee "$R/table.txt"
import json, sys
r, ts = sys.argv[1], sys.argv[2:]
out = {"bench_dp": json.load(open("%s/bench-dp.json" % r))}
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
# DPDK (af_packet, af_xdp) over the kernel socket, same run, same veth.
ratios = {}
for t in ts:
    if t == "socket":
        continue
    for op in ("ping", "infer1"):
        try:
            a = out[t][op]["results"]["latency_ns"]
            b = out["socket"][op]["results"]["latency_ns"]
        except KeyError:
            continue
        a = a.get("rtt") or a.get("total") or next(iter(a.values()))
        b = b.get("rtt") or b.get("total") or next(iter(b.values()))
        ratios["%s/socket %s" % (t, op)] = {p: a[p] / b[p] for p in ("p50", "p99", "p99.9") if b.get(p)}
for k, v in ratios.items():
    print("%-26s p50 %.2f  p99 %.2f  p99.9 %.2f" % (k, v.get("p50", 0), v.get("p99", 0), v.get("p99.9", 0)))
c = {t: out[t]["ns_per_datagram"] for t in ts if out[t]["ns_per_datagram"]}
if "socket" in c:
    for t in c:
        if t != "socket":
            print("%-26s %.2f (dataplane thread CPU per datagram, open loop)" % (t + "/socket cpu", c[t] / c["socket"]))
            ratios[t + "/socket cpu_per_datagram"] = c[t] / c["socket"]
out["ratios"] = ratios
bd = out["bench_dp"]
print("one lcore, frames in memory: %.0f ns/datagram = %.2f Mpps (pkt layer alone %.0f ns, memcpy %.0f ns)" %
      (bd["full"]["ns_wall"], bd["full"]["mpps"], bd["pkt_only"]["ns_wall"], bd["memcpy"]["ns_wall"]))
json.dump(out, open("%s/bench-dpdk.json" % r, "w"), indent=1)
PY
for t in $transports; do
	[ -s "$R/$t-ping.json" ] || [ "$t" = af_xdp ] ||
		fail "$t: no PING result (see $R/$t-ping.txt)"
done
exit 0
