#!/bin/bash
# veloctl as an SSH forced command: dropbear (Debian's dropbear-bin) on
# 127.0.0.1 with a generated host key, a test user key in authorized_keys
# with command="veloctl --socket ...", and `dbclient ... show status`.  The
# client's words arrive in SSH_ORIGINAL_COMMAND and are read by veloctl's
# grammar, never by a shell.  dropbear reads ~/.ssh of the login user, so
# it runs in a private mount namespace (unshare -m) where the home
# directory is a temp dir: the machine's real ~/.ssh is never touched.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/t-mgmt.inc"

DB_PID=
ssh_cleanup() {
	[ -n "$DB_PID" ] && kill -KILL "$DB_PID" 2>/dev/null
	mgmt_cleanup
}
trap ssh_cleanup EXIT

command -v dropbear >/dev/null || fail "dropbear not installed (dropbear-bin)"
command -v dbclient >/dev/null || fail "dbclient not installed (dropbear-bin)"
[ "$(id -u)" = 0 ] || fail "needs root for a private mount namespace (unshare -m)"
user=$(id -un)
home=$(getent passwd "$user" | cut -d: -f6)
[ -d "$home" ] || fail "no home directory for $user"

start_mgmtd

mkdir -m 700 "$T/home" "$T/home/.ssh" "$T/chome" "$T/chome/.ssh"
dropbearkey -t ed25519 -f "$T/hostkey" >/dev/null 2>&1 || fail "host key"
dropbearkey -t ed25519 -f "$T/userkey" >/dev/null 2>&1 || fail "user key"
pub=$(dropbearkey -y -f "$T/userkey" | grep '^ssh-ed25519 ')
[ -n "$pub" ] || fail "no public key"
printf 'command="%s --socket %s",no-port-forwarding,no-agent-forwarding,no-X11-forwarding %s\n' \
	"$BIN/veloctl" "$MGMT_STATE/mgmt.sock" "$pub" >"$T/home/.ssh/authorized_keys"
chmod 600 "$T/home/.ssh/authorized_keys"

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
unshare -m bash -c "mount --bind '$T/home' '$home' && exec dropbear -F -E -s \
	-r '$T/hostkey' -p 127.0.0.1:$port -P '$T/dropbear.pid'" 2>"$T/dropbear.err" &
DB_PID=$!
up() { /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)"; }
wait_until 5 up || { cat "$T/dropbear.err" >&2; fail "dropbear not listening on $port"; }
note "dropbear pid $DB_PID on 127.0.0.1:$port"

# dbclient in its own namespace too (its known_hosts under a temp home).
ssh_box() {
	unshare -m bash -c "mount --bind '$T/chome' '$home' && exec timeout 10 dbclient -y \
		-i '$T/userkey' -p $port $user@127.0.0.1 \"\$@\"" ssh "$@" </dev/null
}

expect_rc 0 ssh_box show status
cat "$T/out"
grep -q '^health: *ok' "$T/out" || fail "ssh show status: $(cat "$T/out") $(cat "$T/err")"
grep -q '^ready: *no' "$T/out" || fail "ssh show status: readiness"

# (dbclient takes words starting with '-' as its own options even after
# the host, so the JSON form is the "veloctl --json ..." one.)
expect_rc 0 ssh_box 'veloctl --json show status'
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["healthy"] is True' \
	"$T/out" || fail "ssh --json: $(cat "$T/out" "$T/err")"
# "ssh box veloctl show config" works as well.
expect_rc 0 ssh_box veloctl show config

# Configuration over SSH, one command per connection.
expect_rc 0 ssh_box set system.hostname over-ssh
expect_rc 0 ssh_box commit
vctl show config | grep -qx 'set system.hostname over-ssh' || fail "ssh commit not applied"

# No shell: metacharacters are refused by veloctl, nothing else runs.
expect_rc 2 ssh_box 'show status; id'
grep -q "not allowed" "$T/err" || fail "ssh metachar: $(cat "$T/err")"
grep -q 'uid=' "$T/out" "$T/err" && fail "a shell ran the command"
expect_rc 2 ssh_box 'show $(id)'
grep -q 'uid=' "$T/out" "$T/err" && fail "a shell ran the command"
expect_rc 2 ssh_box /bin/sh -c id
grep -q 'uid=' "$T/out" "$T/err" && fail "a shell ran the command"

# Another key is refused.
dropbearkey -t ed25519 -f "$T/otherkey" >/dev/null 2>&1
unshare -m bash -c "mount --bind '$T/chome' '$home' && exec timeout 10 dbclient -y \
	-i '$T/otherkey' -p $port $user@127.0.0.1 show status" </dev/null >"$T/out" 2>"$T/err" &&
	fail "a key not in authorized_keys logged in"

kill -TERM "$DB_PID"
for _ in $(seq 30); do
	kill -0 "$DB_PID" 2>/dev/null || break
	sleep 0.1
done
kill -KILL "$DB_PID" 2>/dev/null
DB_PID=
stop_mgmtd
exit 0
