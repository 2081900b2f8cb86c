#!/bin/bash
# t-boot.sh O — boot O's image (qemu_defconfig) in QEMU under TCG and check
# it from the host: the console shows every velo-init step timed and "ready";
# velo-client logs on to the DATAPLANE address (QEMU netdev "dp", UDP host
# forward to 10.0.2.15, served by velod's DPDK transport on the virtio PMD:
# the NIC bound to uio_pci_generic, velod's dpdk.* and pkt.* counters move)
# and gets a streamed answer; veloctl answers `show status` on the serial
# console; ssh to the management address (netdev "mgmt", 10.0.3.15) runs one
# veloctl command and nothing else.  QEMU is bounded and killed on exit.
. "$(dirname "$0")/lib.sh"

image_build
boot_start
boot_wait 300
grep -aq 'velo-init: .*ready in' "$T/console.log" || fail "not ready: $(grep -a 'FAILED\|NOT READY' "$T/console.log")"
for s in mount cmdline modules hugepages isolcpus dp-nic dp-config mgmt-net dropbear mgmtd ready; do
	grep -aqE "velo-init: \[ *[0-9]+\.[0-9]{3}\] step $s ok \([0-9]+ ms\)" "$T/console.log" ||
		fail "step $s has no timed ok line"
done
ready_ms=$(grep -aoE 'ready in [0-9]+ ms' "$T/console.log" | grep -oE '[0-9]+')
echo "boot: ready in $ready_ms ms after init started; $boot_wall_ms ms from QEMU start (TCG)"
# Per step, for docs/perf.md: "boot-step NAME END_S DURATION_MS" (END_S:
# seconds since velo-init started when the step finished).
grep -aoE 'velo-init: \[ *[0-9]+\.[0-9]{3}\] step [a-z-]+ ok \([0-9]+ ms\)' "$T/console.log" |
	sed -E 's/velo-init: \[ *([0-9.]+)\] step ([a-z-]+) ok \(([0-9]+) ms\)/boot-step \2 \1 \3/'
# The dataplane is DPDK's virtio PMD on the NIC velo-init bound; the
# management NIC stays the kernel's.
grep -aqE 'velo-init: .*0000:00:03\.0 bound to uio_pci_generic' "$T/console.log" ||
	fail "dataplane NIC 00:03.0 not bound to uio_pci_generic"
grep -aqE 'velo-init: .*transport dpdk, listen 10\.0\.2\.15:7400, eal "-a 0000:00:03\.0 ' "$T/console.log" ||
	fail "velod not configured for DPDK on 0000:00:03.0 (dp-config line)"
grep -aqE 'velo-init: .*  eth[0-9]+ 10\.0\.3\.15/24 gw 10\.0\.3\.2' "$T/console.log" ||
	fail "management interface not configured as 10.0.3.15/24 gw 10.0.3.2"

# Dataplane: logon and a streamed answer, through QEMU's dp netdev to DPDK.
gen_t0=$(date +%s%N)
"$O/bin/velo-client" -s "127.0.0.1:$udp_port" -k "$O/images/velod.keys" --timeout-ms 60000 \
	gen --max-tokens 16 --stream sentence --seed 1 "Once upon a time" \
	>"$T/gen.out" 2>"$T/gen.err" || fail "velo-client gen through the dataplane: $(cat "$T/gen.err")"
[ -s "$T/gen.out" ] || fail "velo-client gen: no text"
echo "gen: $(head -c 200 "$T/gen.out" | tr '\n' ' ')"
echo "gen: $(tail -n 3 "$T/gen.err" | tr '\n' ' ') wall $((($(date +%s%N) - gen_t0) / 1000000)) ms"

# Serial console: veloctl.
/usr/bin/python3 "$SRC/tests/image/console.py" "$T/con.sock" "show status" >"$T/con.out" 2>&1 ||
	fail "console show status: $(cat "$T/con.out")"
grep -q 'ready: *yes' "$T/con.out" || fail "console show status: $(cat "$T/con.out")"
echo "console: $(grep -E 'health|ready' "$T/con.out" | tr -d '\r' | tr '\n' ' ')"

# SSH one-shot through the forced command, to the management address.
box_ssh show status >"$T/ssh.out" 2>&1 || fail "ssh show status: $(cat "$T/ssh.out")"
grep -q 'ready: *yes' "$T/ssh.out" || fail "ssh show status: $(cat "$T/ssh.out")"
echo "ssh: $(grep -E 'health|ready' "$T/ssh.out" | tr '\n' ' ')"
# A shell command is refused by veloctl's grammar (no shell behind SSH).
box_ssh 'cat /etc/shadow; id' >"$T/ssh2.out" 2>&1 && fail "ssh ran a shell command: $(cat "$T/ssh2.out")"
grep -q 'root:' "$T/ssh2.out" && fail "ssh leaked /etc/shadow"

# The answer went through DPDK: velod's port counted the datagrams (the
# counters come from velod through mgmtd, over SSH's forced command).
box_ssh show counters >"$T/ctr.out" 2>&1 || fail "ssh show counters: $(cat "$T/ctr.out")"
cp "$T/ctr.out" "$RES/counters.txt"
udp_rx=$(grep -oE 'pkt\.udp_rx[ :=]+[0-9]+' "$T/ctr.out" | grep -oE '[0-9]+$' | head -1)
[ "${udp_rx:-0}" -gt 0 ] || fail "pkt.udp_rx is ${udp_rx:-absent}: the answer did not come through DPDK"
echo "dpdk: pkt.udp_rx=$udp_rx $(grep -oE 'dpdk\.(rx|tx)_mbufs[ :=]+[0-9]+' "$T/ctr.out" | tr '\n' ' ')"
echo "ok"
