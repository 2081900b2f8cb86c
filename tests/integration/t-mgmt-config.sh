#!/bin/bash
# velo-mgmtd configuration store through veloctl: set / show compare /
# commit confirmed that rolls back by itself (velod restarted with the new
# settings, then with the old), a plain commit that confirms, rollback N,
# a value velod refuses, the grammar, and persistence across a restart of
# velo-mgmtd.  A "minute" is 500 ms here (--minute-ms).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/t-mgmt.inc"

start_mgmtd --minute-ms 500

sessions_max() { vctl show stats 2>/dev/null | sed -n 's/^sessions_max //p'; }
sm_is() { [ "$(sessions_max)" = "$1" ]; }
[ "$(sessions_max)" = 64 ] || fail "default sessions_max: $(sessions_max)"

expect_rc 0 vctl set velod.sessions.max 8
expect_rc 0 vctl set system.hostname velo-test-1
expect_rc 0 vctl show config compare
grep -qx '+ set velod.sessions.max 8' "$T/out" || fail "compare: $(cat "$T/out")"
grep -qx '+ set system.hostname velo-test-1' "$T/out" || fail "compare"

# commit confirmed 2 = 1 s here.
pid0=$(velod_pid)
expect_rc 0 vctl commit confirmed 2
grep -q 'rolls back by itself' "$T/out" || fail "commit confirmed: $(cat "$T/out")"
cat "$T/out"
wait_until 5 sm_is 8 || fail "velod not restarted with sessions.max 8"
[ "$(velod_pid)" != "$pid0" ] || fail "same velod pid after a commit"
vctl show status | grep -q 'unconfirmed' || fail "status does not show the pending confirmation"
# Not confirmed: back to the old configuration by itself.
wait_until 6 sm_is 64 || fail "no automatic rollback"
vctl show config >"$T/out"
grep -q 'sessions.max' "$T/out" && fail "rolled-back config still has sessions.max"
vctl show config history | tee "$T/out"
grep -q 'automatic rollback to commit 0' "$T/out" || fail "history: no automatic rollback"
vctl show status | grep -q 'unconfirmed' && fail "still unconfirmed after the rollback"
note "commit confirmed rolled back by itself"

# Confirmed in time: stays.
expect_rc 0 vctl set velod.sessions.max 16
expect_rc 0 vctl commit confirmed 4
wait_until 5 sm_is 16 || fail "sessions.max 16 not applied"
expect_rc 0 vctl commit
sleep 2.5
[ "$(sessions_max)" = 16 ] || fail "confirmed commit rolled back"
note "commit confirmed then commit: kept"

# rollback N loads into the candidate; commit applies.
expect_rc 0 vctl show config history
n=$(grep -c 'commit' "$T/out")
[ "$n" -ge 4 ] || fail "history: $n commits"
expect_rc 0 vctl rollback 3
expect_rc 0 vctl show config compare
grep -qx -- '- set velod.sessions.max 16' "$T/out" || fail "rollback 3 compare: $(cat "$T/out")"
expect_rc 0 vctl commit
wait_until 5 sm_is 64 || fail "rollback 3 not applied"
expect_rc 1 vctl rollback 999
grep -q 'no commit 999 back' "$T/err" || fail "rollback 999: $(cat "$T/err")"

# velod checks its own keys before anything is committed.
expect_rc 0 vctl set velod.sessions.max many
expect_rc 1 vctl commit
grep -q "commit refused: .*sessions.max" "$T/err" || fail "bad value: $(cat "$T/err")"
cat "$T/err"
expect_rc 0 vctl set velod.no_such_key 1
expect_rc 1 vctl commit
expect_rc 0 vctl delete velod.no_such_key
expect_rc 0 vctl delete velod.sessions.max
expect_rc 0 vctl set bogus.key 1
expect_rc 1 vctl commit
grep -q "unknown section 'bogus'" "$T/err" || fail "bogus section: $(cat "$T/err")"
expect_rc 0 vctl delete bogus.key

# The grammar: usage errors are exit 2, nothing reaches mgmtd.
expect_rc 2 vctl show status now
expect_rc 2 vctl 'show status; id'
grep -q "character ';' not allowed" "$T/err" || fail "metachar: $(cat "$T/err")"
expect_rc 2 vctl commit confirmed 0
expect_rc 2 vctl frobnicate
expect_rc 0 vctl --json show config
expect_rc 0 vctl help
grep -q 'commit confirmed MINUTES' "$T/out" || fail "help"

# Persistence: a new mgmtd finds the same running configuration.
expect_rc 0 vctl set system.hostname velo-test-2
expect_rc 0 vctl commit
serial=$(vctl --json show status | sed -n 's/^    "commit": \([0-9]*\),*/\1/p')
stop_mgmtd
start_mgmtd --minute-ms 500
vctl show config | grep -qx 'set system.hostname velo-test-2' || fail "config lost across a restart"
[ "$(vctl --json show status | sed -n 's/^    "commit": \([0-9]*\),*/\1/p')" = "$serial" ] ||
	fail "commit serial changed across a restart"
stop_mgmtd
exit 0
