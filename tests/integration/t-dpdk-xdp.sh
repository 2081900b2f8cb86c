#!/bin/bash
# One NIC for both planes: velod on DPDK's net_af_xdp vdev with our XDP
# program (dataplane/xdp/velo_xdp.bpf.c, xdp_prog=) on a veth end that also
# has a kernel address.  Protocol datagrams reach velod (xdp.redirected),
# while ICMP echo and a TCP connection (standing in for SSH) to the same
# address are answered by the kernel (xdp.pass_other; velod's own ICMP
# counter stays 0).  A real INFER on the bundled model streams the kernel
# socket's text through AF_XDP, and 5,000 back-to-back PINGs all come back
# (transmit used to stop after ~1,343 frames: mbufs outside the umem, see
# docs/dpdk.md), with no mbuf leaked (dpdk.mbufs_free back where it was).
# Root only; skipped where AF_XDP or libbpf are missing.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/dpdk.inc"

grep -q '^CONFIG_DP_XDP=y' "$DPDK_O/.config" || skip "no CONFIG_DP_XDP (libbpf-dev)"
PROG=$DPDK_O/dataplane/xdp/velo_xdp.bpf.o
[ -f "$PROG" ] || fail "$PROG not built"
P="A wise man"
ref_texts 24 "$P"
ip -n "$NS_DP" addr add "$DP_IP/24" dev "$IF_DP" || fail "kernel address"
# The AF_XDP umem takes its frames from the mbuf pool: the fill queue
# alone wants 2048 + the rx/tx descriptors.
DPDK_VDEV="net_af_xdp0,iface=$IF_DP,xdp_prog=$PROG" \
	start_velod_dpdk --set dpdk.mbufs=8192 "${MODEL_ARGS[@]}"
grep -q 'xdp: program' "$T/velod.err" || fail "velod did not configure the XDP program"
note "$(grep -o 'xdp: program.*' "$T/velod.err")"
c() { cl "$BIN/velo-client" --server "$SERVER" --key "$KEY" "$@"; }

# The protocol goes to velod.
expect_rc 0 c ping -n 50
grep -q '50 received' "$T/out" || { cat "$T/out"; fail "protocol ping through AF_XDP"; }
sed 's/^/# /' "$T/out"

# INFER through AF_XDP: the socket's text, in order, one DONE.
c gen --json --ignore-eos --max-tokens 24 "$P" >"$T/gen.json" 2>"$T/gen.err" ||
	{ cat "$T/gen.err"; fail "gen through AF_XDP"; }
gen_check "$T/gen.json" >"$T/gen.chk" || fail "gen: $(cat "$T/gen.chk")"
cmp -s "$T/gen.chk" "$T/ref.0" || fail "AF_XDP text differs: $(cut -f3 "$T/gen.chk")"
note "INFER through AF_XDP: '$(cut -f3 "$T/gen.chk")' (= socket's)"

# Many more frames than the old transmit stall (~1,343), no mbuf leak.
sleep 1.2	# dpdk.mbufs_free is sampled once a second
free0=$(counter dpdk.mbufs_free)
t0=$(date +%s%N)
expect_rc 0 c ping -n 5000 -i 0
grep -q '5000 received' "$T/out" || { cat "$T/out"; fail "5000 PINGs through AF_XDP"; }
note "$(head -1 "$T/out") in $((($(date +%s%N) - t0) / 1000000)) ms"
sleep 1.2
free1=$(counter dpdk.mbufs_free)
note "dpdk.mbufs_free $free0 before, $free1 after; tx_full $(counter dpdk.tx_full)"
# Completions are reaped lazily (on the next transmit): up to a burst or
# two may still be out.
[ "$free1" -ge $((free0 - 128)) ] || fail "mbufs leaked: $free0 -> $free1"

# ICMP and TCP to the same address go to the kernel.
cl ping -c 3 -i 0.2 -W 1 "$DP_IP" >"$T/ping.out" 2>&1 ||
	{ cat "$T/ping.out"; fail "kernel ICMP echo on the shared NIC"; }
ip netns exec "$NS_DP" /usr/bin/python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 2222)); s.listen(1); s.settimeout(10)
c, _ = s.accept(); c.sendall(b"kernel-tcp\n"); c.close()' "$DP_IP" &
srv=$!
sleep 0.5
got=$(cl timeout 5 bash -c "exec 3<>/dev/tcp/$DP_IP/2222; read -r l <&3; echo \$l")
wait "$srv"
[ "$got" = kernel-tcp ] || fail "TCP to the kernel on the shared NIC: got '$got'"
note "kernel answered ICMP ($(grep -o '[0-9]* received' "$T/ping.out")) and TCP on $DP_IP"

sleep 1.2	# velod reads the XDP counters once a second
red=$(counter xdp.redirected)
oth=$(counter xdp.pass_other)
note "xdp.redirected $red, xdp.pass_other $oth, pkt.udp_rx $(counter pkt.udp_rx)"
[ "$red" -ge 5050 ] || fail "xdp.redirected $red < 5050"
[ "$oth" -ge 5 ] || fail "xdp.pass_other $oth: ICMP/TCP/ARP not passed"
[ "$(counter pkt.icmp_echo_tx)" = 0 ] || fail "velod answered ICMP: it should be the kernel's"
[ "$(counter pkt.udp_rx)" -ge 5050 ] || fail "velod saw $(counter pkt.udp_rx) datagrams"
stop_velod
exit 0
