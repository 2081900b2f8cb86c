#!/bin/bash
# Loss through the DPDK transport (velod on net_af_packet in a namespace):
# 1 %, 5 % and 20 % in each direction, (a) injected by velod's dataplane
# (loss.* keys, rx and tx, data and control), (b) separately by nftables
# "numgen random" drop rules in the client's namespace (input and output).
# Every request gets exactly one complete answer and reaches the engine
# side exactly once (velo-itest + sess.infer_to_engine), and the loss
# really happened (velod's loss counters, nft rule counters).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/dpdk.inc"

get() { awk -v k="$1" '$1 == k { print $2 }' "$T/itest.out"; }

itest() {	# itest REQUESTS PINGS SEED
	cl "$BIN/velo-itest" loss --server "$SERVER" --key "$KEY" --sessions 2 \
		--requests "$1" --pings "$2" --seed "$3" --max-seconds 40 \
		>"$T/itest.out" 2>"$T/itest.err" ||
		{ cat "$T/itest.out" "$T/itest.err"; fail "velo-itest loss ($label)"; }
	[ "$(get bad)" = 0 ] || fail "$label: requests without exactly one answer"
	eng=$(counter sess.infer_to_engine)
	[ "$eng" = "$1" ] || fail "$label: $eng requests reached the engine, expected $1"
	note "$label: $1 requests + $2 pings answered exactly once in $(get seconds) s," \
	     "velod retransmitted $(counter sess.retrans_datagrams) datagram(s)"
}

# (a) the dataplane's own injector.
for p in 1 5 20; do
	r=$(awk -v p="$p" 'BEGIN { printf "%.2f", p / 100 }')
	label="dataplane $p %"
	n=$([ "$p" = 20 ] && echo 150 || echo 300)
	start_velod_dpdk --set loss.seed=$((p + 3)) --set loss.rx_data=$r \
		--set loss.tx_data=$r --set loss.rx_ctrl=$r --set loss.tx_ctrl=$r
	itest "$n" 50 "$p"
	loss=$(counter_sum '^dp\..*loss')
	[ "$loss" -gt 0 ] || fail "$label: velod's loss counters are 0"
	stop_velod
done

# (b) nftables in the client's namespace, both directions.
command -v nft >/dev/null || fail "nft missing (nftables)"
for p in 1 5 20; do
	label="nftables $p %"
	n=$([ "$p" = 20 ] && echo 150 || echo 300)
	cl nft -f - <<NFT || fail "nft rules"
table inet velo_loss {
	chain in {
		type filter hook input priority 0;
		udp sport $DP_PORT numgen random mod 100 < $p counter drop
	}
	chain out {
		type filter hook output priority 0;
		udp dport $DP_PORT numgen random mod 100 < $p counter drop
	}
}
NFT
	start_velod_dpdk
	itest "$n" 50 "$((p + 100))"
	drops=$(cl nft list table inet velo_loss | awk '/counter packets/ { for (i = 1; i <= NF; i++) if ($i == "packets") s += $(i + 1) } END { print s + 0 }')
	note "$label: nftables dropped $drops packet(s)"
	[ "$drops" -gt 0 ] || fail "$label: nftables dropped nothing"
	stop_velod
	cl nft delete table inet velo_loss
done
exit 0
