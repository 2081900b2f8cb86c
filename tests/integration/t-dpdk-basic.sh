#!/bin/bash
# velod on the DPDK transport (net_af_packet on one end of a veth pair, in
# its own network namespace), velo-client on the kernel side in another:
# logon and PING, STATUS, INFER with streamed tokens from the bundled model
# (text identical to the kernel socket's, in order, one DONE; 8 at once),
# CANCEL of a running INFER (CANCEL_ACK, DONE CANCELLED, KV blocks freed); ARP requests for velod's
# address and ICMP echo answered by the dataplane; malformed frames and
# packets of every class dropped, each by its own counter, velod still
# serving afterwards.  Root only (namespaces); skipped otherwise.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/dpdk.inc"

P="A wise man"
ref_texts 32 "$P"
PIDS=()
start_velod_dpdk "${MODEL_ARGS[@]}"
note "velod (dpdk, af_packet on $IF_DP) answers for $SERVER"
c() { cl "$BIN/velo-client" --server "$SERVER" --key "$KEY" "$@"; }

# Logon + PING through the DPDK path; ARP was answered on the way.
expect_rc 0 c ping -n 50
grep -q '50 received' "$T/out" || { cat "$T/out"; fail "ping: not 50 received"; }
sed 's/^/# /' "$T/out"
[ "$(counter pkt.arp_reply_tx)" -ge 1 ] || fail "no ARP reply counted"
mac=$(sed -n 's/.*dpdk: port 0 mac \([0-9a-f:]*\),.*/\1/p' "$T/velod.err")
[ -n "$mac" ] || fail "velod did not log its MAC"
ip -n "$NS_CL" neigh show "$DP_IP" | grep -qi "$mac" ||
	fail "client's ARP entry for $DP_IP is not velod's MAC $mac"
note "ARP: $DP_IP is at $mac in the client's table"

# STATUS.
expect_rc 0 c status
grep -q 'credit free' "$T/out" || { cat "$T/out"; fail "status: no credit line"; }

# INFER through DPDK: the streamed text is the kernel socket's (reference
# run above), in order, complete, one DONE.
rx0=$(counter sess.infer_rx); d0=$(counter sess.done_tx)
c gen --json --ignore-eos --max-tokens 32 "$P" >"$T/gen.json" 2>"$T/gen.err" ||
	{ cat "$T/gen.err"; fail "gen through DPDK"; }
gen_check "$T/gen.json" >"$T/gen.chk" || fail "gen: $(cat "$T/gen.chk")"
cmp -s "$T/gen.chk" "$T/ref.0" ||
	fail "DPDK text differs from the socket's: $(cut -f3 "$T/gen.chk") / $(cut -f3 "$T/ref.0")"
[ "$(counter sess.infer_rx)" = $((rx0 + 1)) ] || fail "INFER received $(( $(counter sess.infer_rx) - rx0 )) times"
[ "$(counter sess.done_tx)" = $((d0 + 1)) ] || fail "DONE sent $(( $(counter sess.done_tx) - d0 )) times"
note "INFER: $(grep -c '"tokens"' "$T/gen.json") TOKENS messages, text =" \
     "socket's: '$(cut -f3 "$T/gen.chk")'"
# 8 at once on one session each: same texts (greedy, batched).
for i in $(seq 8); do
	c gen --json --ignore-eos --max-tokens 32 "$P" >"$T/par.$i" 2>&1 &
	PIDS+=($!)
done
for p in "${PIDS[@]}"; do wait "$p" || fail "parallel gen failed"; done
for i in $(seq 8); do
	gen_check "$T/par.$i" | cmp -s - "$T/ref.0" || fail "parallel gen $i differs"
done
note "8 concurrent INFERs through DPDK: all 8 texts = socket's"

# CANCEL of a running INFER: CANCEL_ACK, DONE CANCELLED, blocks freed.
expect_rc 0 c gen --ignore-eos --max-tokens 400 --cancel-after 4 "Cancel me please"
grep -q '^\[cancelled: ' "$T/err" || fail "no CANCEL_ACK: $(cat "$T/err")"
grep -q 'done: cancelled' "$T/err" || fail "no DONE cancelled: $(cat "$T/err")"
[ "$(counter sess.cancel_rx)" -ge 1 ] || fail "CANCEL did not reach velod"
[ "$(counter sched.done_cancel)" -ge 1 ] || fail "sched.done_cancel not counted"
kv_idle
note "CANCEL: $(grep -o 'cancelled: [0-9]* tokens generated' "$T/err"), every KV block free"

# ICMP echo, answered by the dataplane (the kernel has no address there).
if cl ping -c 3 -i 0.2 -W 1 "$DP_IP" >"$T/ping.out" 2>&1; then
	[ "$(counter pkt.icmp_echo_tx)" = 3 ] ||
		fail "icmp_echo_tx $(counter pkt.icmp_echo_tx), expected 3"
	note "ICMP: $(grep -o '[0-9]* received' "$T/ping.out")"
else
	cat "$T/ping.out"; fail "ICMP echo not answered"
fi

# Malformed frames: each class raises its own counter by exactly N.
N=5
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import scapy' 2>/dev/null ||
	fail "python3-scapy missing (make deps with CONFIG_DP_DPDK=y)"
smac=$(ip -n "$NS_CL" -o link show "$IF_CL" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
ctl "counters all" >"$T/before"
cl /usr/bin/python3 "$SRC/tests/integration/t-dpdk-frames.py" "$IF_CL" \
	"$smac" "$mac" "$CL_IP" "$DP_IP" "$DP_PORT" "$N" >"$T/cases" 2>"$T/scapy.err" ||
	{ cat "$T/scapy.err"; fail "scapy sender"; }
sleep 0.5
ctl "counters all" >"$T/after"
val() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }
declare -A want
while read -r name ctr n; do
	want[$ctr]=$(( ${want[$ctr]:-0} + n ))
done <"$T/cases"
bad=0
for ctr in "${!want[@]}"; do
	d=$(( $(val "$T/after" "$ctr") - $(val "$T/before" "$ctr") ))
	printf '# %-22s +%d (want %d)\n' "$ctr" "$d" "${want[$ctr]}"
	# unknown ethertypes may also come from the client's kernel
	if [ "$ctr" = pkt.drop_ethertype ]; then
		[ "$d" -ge "${want[$ctr]}" ] || bad=1
	elif [ "$ctr" = pkt.drop_ip_frag ]; then
		# net_af_packet joins a fanout group with the kernel's DEFRAG
		# flag: lone fragments are held by the kernel and never reach
		# the port (test_dp_pkt covers the drop; net_af_xdp and NICs
		# deliver them).
		[ "$d" = 0 ] || [ "$d" = "${want[$ctr]}" ] || bad=1
	else
		[ "$d" = "${want[$ctr]}" ] || bad=1
	fi
done
[ "$bad" = 0 ] || fail "malformed frames: a counter moved by the wrong amount"
sd=$(( $(awk '$1 ~ /^dp\.drop_/ { s += $2 } END { print s + 0 }' "$T/after") -
       $(awk '$1 ~ /^dp\.drop_/ { s += $2 } END { print s + 0 }' "$T/before") ))
note "session layer drops for the non-velo datagrams: +$sd"
[ "$sd" = "$N" ] || fail "session layer dropped $sd of $N garbage datagrams"

# Still serving.
expect_rc 0 c ping -n 10
grep -q '10 received' "$T/out" || fail "ping after malformed frames"
stop_velod
exit 0
