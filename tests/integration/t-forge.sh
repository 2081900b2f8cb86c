#!/bin/bash
# (c) A forged datagram (bad tag) and a replayed captured datagram get no
# answer (zero bytes back, on the session's socket and on a stranger's) and
# bump dp.drop_bad_tag and dp.drop_replay.
. "$(dirname "$0")/lib.sh"

start_velod
bad0=$(counter dp.drop_bad_tag)
rep0=$(counter dp.drop_replay)

"$BIN/velo-itest" forge --server "$SERVER" --key "$KEY" >"$T/out" 2>"$T/err" ||
	{ cat "$T/out" "$T/err"; fail "velo-itest forge"; }
cat "$T/out"

bad1=$(counter dp.drop_bad_tag)
rep1=$(counter dp.drop_replay)
note "dp.drop_bad_tag $bad0 -> $bad1, dp.drop_replay $rep0 -> $rep1"
[ "$bad1" -gt "$bad0" ] || fail "dp.drop_bad_tag did not move"
[ "$rep1" -gt "$rep0" ] || fail "dp.drop_replay did not move"

# The session is still fine after all that.
expect_rc 0 client ping -n 3
stop_velod
exit 0
