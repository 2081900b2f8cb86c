# lib.sh — sourced by tests/image/t-boot*.sh: build O's image with a fresh
# test SSH key, boot it under QEMU TCG (bounded, killed on exit), talk to it.
#   image_build          mkimage with $T/id.pub authorized; sets $img
#   boot_start [APPEND]  QEMU on free host ports ($ssh_port, $udp_port), the
#                        serial console on $T/con.sock (log $T/console.log)
#   boot_wait SECONDS    until velo-init printed "ready in" or "NOT READY"
#   box_ssh CMD...       one veloctl command through the forced command
#   fail MSG             prints FAIL, the console's tail, exits 1
# Everything (QEMU, temp dir) is removed by the EXIT trap, on failure too.
set -u
O=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d /tmp/velo-image-test.XXXXXX)
RES=$O/results/image
qpid=
TEST=$(basename "$0" .sh)
alive() { local p; for p; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
boot_cleanup() {
	if [ -n "$qpid" ]; then
		# $qpid is timeout(1); QEMU is its child (boot-qemu.sh execs it).
		local kids
		kids=$(pgrep -P "$qpid" 2>/dev/null | tr '\n' ' ')
		kill "$qpid" 2>/dev/null	# timeout passes SIGTERM on to QEMU
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			alive "$qpid" $kids || break
			sleep 0.5
		done
		# shellcheck disable=SC2086
		kill -9 "$qpid" $kids 2>/dev/null
	fi
	cp "$T/console.log" "$RES/$TEST.console.log" 2>/dev/null
	rm -rf "$T"
	return 0
}
trap boot_cleanup EXIT
# A signal (run.sh's timeout, Ctrl-C) must run the EXIT trap too: without a
# handler bash dies at once and the trap never runs.
trap 'exit 143' TERM INT HUP
fail() {
	echo "FAIL $*"
	echo "--- console (tail, full log in $RES/$TEST.console.log)"
	tail -n 40 "$T/console.log" 2>/dev/null | tr -d '\r'
	exit 1
}
mkdir -p "$RES"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing (make deps / apt-get install qemu-system-x86)"
command -v ssh >/dev/null || fail "ssh missing (apt-get install openssh-client)"

image_build() {
	ssh-keygen -q -t ed25519 -N '' -C check-image -f "$T/id" || fail "ssh-keygen"
	AUTHORIZED_KEYS=$T/id.pub "$SRC/images/mkimage.sh" "$O" || fail "mkimage"
	name=$(sed -n 's/^CONFIG_IMAGE_NAME="\(.*\)"$/\1/p' "$O/.config")
	img=$O/images/$name
}

freeport() {
	/usr/bin/python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='u' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}

# QEMU is bounded by timeout.  --foreground keeps it in the test's process
# group, so run.sh's timeout (TERM, then KILL) reaches QEMU directly even
# when this shell is killed before its EXIT trap runs.
boot_start() {
	ssh_port=$(freeport t); udp_port=$(freeport u)
	boot_t0=$(date +%s%N)
	APPEND=${1:-} SSH_PORT=$ssh_port UDP_PORT=$udp_port SERIAL=chardev:con \
		timeout --foreground -k 5 "${QEMU_TIMEOUT:-420}" "$img/boot-qemu.sh" \
		-chardev "socket,id=con,path=$T/con.sock,server=on,wait=off,logfile=$T/console.log" \
		-monitor none </dev/null >"$T/qemu.out" 2>&1 &
	qpid=$!
}

boot_wait() {
	local end=$(($(date +%s) + $1))
	while [ "$(date +%s)" -lt "$end" ]; do
		grep -aqE 'velo-init: .*(ready in|NOT READY)' "$T/console.log" 2>/dev/null && break
		kill -0 "$qpid" 2>/dev/null || fail "QEMU exited: $(cat "$T/qemu.out")"
		sleep 0.2
	done
	boot_wall_ms=$((($(date +%s%N) - boot_t0) / 1000000))
	grep -aqE 'velo-init: .*(ready in|NOT READY)' "$T/console.log" ||
		fail "no ready/NOT READY line from velo-init within $1 s"
	grep -a '^velo-init:' "$T/console.log" | tr -d '\r'
}

box_ssh() {
	timeout 60 ssh -n -i "$T/id" -p "$ssh_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 -o LogLevel=ERROR root@127.0.0.1 "$@"
}
