#!/bin/bash
# (e) velo-keygen writes key files with mode 0600 in the format velod
# loads and prints the key id; velod and velo-client refuse a key file that
# others can read; a wrong key gets no session (and zero bytes).
. "$(dirname "$0")/lib.sh"

make_key
id=$(cat "$T/keyid")
[ "$(stat -c %a "$KEY")" = 600 ] || fail "mode $(stat -c %a "$KEY"), not 600"
case "$id" in ''|*[!0-9]*) fail "velo-keygen printed '$id', not a key id" ;; esac
grep -Eq "^velo-psk-v1 $id [0-9a-f]{64} integration\$" "$KEY" ||
	fail "key file line: $(cat "$KEY")"
id2=$("$BIN/velo-keygen" -o "$KEY") || fail "append a second key"
[ "$id2" != "$id" ] || fail "same id twice"
[ "$(grep -c '^velo-psk-v1 ' "$KEY")" = 2 ] || fail "second key not appended"
expect_rc 1 "$BIN/velo-keygen" -o "$KEY" --id "$id"	# id in use
note "keys $id and $id2, mode 600"

# Readable by others: refused by velod (exit 1) and by the client.
chmod 644 "$KEY"
cat >"$T/bad.json" <<JSON
{ "listen": "127.0.0.1:0", "keys": "$KEY", "control_socket": "",
  "dataplane": { "core": -1 }, "scheduler": { "core": -1 } }
JSON
timeout 10 "$BIN/velod" -c "$T/bad.json" >"$T/out" 2>"$T/err"
rc=$?
[ "$rc" = 1 ] || fail "velod with a 0644 key file: exit $rc, expected 1"
grep -qi 'key' "$T/err" || fail "velod did not say why: $(cat "$T/err")"
note "velod refuses a 0644 key file: $(head -n 1 "$T/err")"
expect_rc 1 "$BIN/velo-client" --server 127.0.0.1:1 --key "$KEY" ping
chmod 600 "$KEY"

start_velod
expect_rc 0 client --key-id "$id2" ping -n 3

# A key velod does not know, and the right id with the wrong secret.
"$BIN/velo-keygen" -o "$T/other.key" >/dev/null || fail keygen
"$BIN/velo-keygen" -o "$T/forged.key" --id "$id" >/dev/null || fail keygen
unk0=$(counter dp.drop_unknown_session)
bad0=$(counter dp.drop_bad_tag)
expect_rc 3 "$BIN/velo-client" --server "$SERVER" --key "$T/other.key" \
	--timeout-ms 400 ping -n 1
expect_rc 3 "$BIN/velo-client" --server "$SERVER" --key "$T/forged.key" \
	--timeout-ms 400 ping -n 1
[ "$(counter dp.drop_unknown_session)" -gt "$unk0" ] ||
	fail "unknown key id not counted"
[ "$(counter dp.drop_bad_tag)" -gt "$bad0" ] || fail "wrong secret not counted"
stop_velod
exit 0
