#!/bin/bash
# t-boot-fail.sh O — a failing step is reported by name and the box stays
# reachable: boot O's image with a dataplane NIC that does not exist
# (velo.dp_nic= a MAC no NIC has) and a ready deadline of 1 s.  The console
# must show "step dp-nic FAILED" with the reason, dp-config's fallback to
# the socket transport, "NOT READY: failed: dp-nic,dp-config,ready", and
# still answer veloctl on the serial console and over SSH.
. "$(dirname "$0")/lib.sh"

image_build
boot_start "velo.dp_nic=52:54:00:99:99:99 velo.ready_s=1"
boot_wait 240
grep -aqE 'velo-init: \[ *[0-9.]+\] step dp-nic FAILED \([0-9]+ ms\): no PCI network interface with MAC 52:54:00:99:99:99' \
	"$T/console.log" || fail "no 'step dp-nic FAILED' line with its reason"
grep -aqE 'velo-init: \[ *[0-9.]+\] step dp-config FAILED \([0-9]+ ms\): dataplane NIC not bound' \
	"$T/console.log" || fail "no 'step dp-config FAILED' line"
grep -aqE 'velo-init: .*transport socket, listen 0\.0\.0\.0:7400' "$T/console.log" ||
	fail "velod not configured for the socket fallback"
grep -aqE 'velo-init: .*NOT READY: failed: dp-nic,dp-config,ready ' "$T/console.log" ||
	fail "no 'NOT READY: failed: dp-nic,dp-config,ready' line"
for s in mount cmdline modules hugepages mgmt-net dropbear mgmtd; do
	grep -aqE "velo-init: \[ *[0-9]+\.[0-9]{3}\] step $s ok \([0-9]+ ms\)" "$T/console.log" ||
		fail "step $s did not run after the failure"
done
# Reachable: veloctl on the serial console, SSH's forced command.
/usr/bin/python3 "$SRC/tests/image/console.py" "$T/con.sock" "show status" >"$T/con.out" 2>&1 ||
	fail "console after a failed boot: $(cat "$T/con.out")"
grep -q 'health:' "$T/con.out" || fail "console show status: $(cat "$T/con.out")"
echo "console: $(grep -E 'health|ready' "$T/con.out" | tr -d '\r' | tr '\n' ' ')"
box_ssh show status >"$T/ssh.out" 2>&1 || fail "ssh after a failed boot: $(cat "$T/ssh.out")"
grep -q 'health:' "$T/ssh.out" || fail "ssh show status: $(cat "$T/ssh.out")"
echo "ssh: $(grep -E 'health|ready' "$T/ssh.out" | tr '\n' ' ')"
echo "ok"
