# lib.sh — sourced by each tests/integration/t-*.sh.  Environment from
# tests/run-integration.sh: O (build dir, absolute), SRC (source tree).
# Gives a private temp dir, a key, velod on 127.0.0.1 (port picked by the
# kernel), control socket queries, and cleanup of everything on exit.
set -u

BIN=$O/bin
T=$(mktemp -d /tmp/velo-it.XXXXXX)
VELOD_PID=
VELOD_PORT=
SERVER=
KEY=$T/test.key

cleanup() {
	if [ -n "$VELOD_PID" ] && kill -0 "$VELOD_PID" 2>/dev/null; then
		kill -TERM "$VELOD_PID" 2>/dev/null
		for _ in $(seq 50); do
			kill -0 "$VELOD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$VELOD_PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	if [ -f "$T/velod.err" ]; then
		echo "--- velod stderr (tail)" >&2
		tail -n 20 "$T/velod.err" >&2
	fi
	exit 1
}

note() { echo "# $*"; }

make_key() {
	"$BIN/velo-keygen" -o "$KEY" --comment integration >"$T/keyid" ||
		fail "velo-keygen failed"
}

# start_velod [--set key=value ...]: config in $T, wait for the ready line.
start_velod() {
	[ -x "$BIN/velod" ] || fail "velod is not built ($BIN/velod)"
	[ -f "$KEY" ] || make_key
	cat >"$T/velod.json" <<JSON
{
  "listen": "127.0.0.1:0",
  "keys": "$KEY",
  "control_socket": "$T/ctl.sock",
  "dataplane": { "core": -1 },
  "scheduler": { "core": -1 }
}
JSON
	"$BIN/velod" -c "$T/velod.json" "$@" >"$T/velod.out" 2>"$T/velod.err" &
	VELOD_PID=$!
	for _ in $(seq 100); do
		if grep -q '^velod: ready' "$T/velod.out" 2>/dev/null; then
			VELOD_PORT=$(sed -n 's/^velod: ready listen=[^ ]*:\([0-9]*\) .*/\1/p' \
				"$T/velod.out" | head -1)
			SERVER=127.0.0.1:$VELOD_PORT
			[ -n "$VELOD_PORT" ] || fail "no port on the ready line"
			return 0
		fi
		kill -0 "$VELOD_PID" 2>/dev/null || fail "velod exited at start"
		sleep 0.1
	done
	fail "velod not ready within 10 s"
}

# stop_velod: SIGTERM, expect exit 0 within 5 s.
stop_velod() {
	local rc
	kill -TERM "$VELOD_PID" || fail "velod gone before stop"
	for _ in $(seq 50); do
		kill -0 "$VELOD_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$VELOD_PID" 2>/dev/null && fail "velod did not stop on SIGTERM"
	wait "$VELOD_PID"
	rc=$?
	VELOD_PID=
	[ "$rc" = 0 ] || fail "velod exit status $rc after SIGTERM"
}

ctl() { "$BIN/velod" -s "$T/ctl.sock" -q "$*"; }

# counter NAME: value from the control socket (0 if unknown).
counter() {
	local v
	v=$(ctl "counter $1" 2>/dev/null) || { echo 0; return; }
	case "$v" in
	''|*[!0-9]*) echo 0 ;;
	*) echo "$v" ;;
	esac
}

# sum of the counters whose names match an extended regex
counter_sum() {
	ctl "counters all" | awk -v re="$1" '$1 ~ re { s += $2 } END { print s + 0 }'
}

client() { "$BIN/velo-client" --server "$SERVER" --key "$KEY" "$@"; }

# bench_none_lost JSON WHAT: velo-bench's results had requests, and none
# was rejected, failed, lost or timed out (the hot-swap and label tests).
bench_none_lost() {
	/usr/bin/python3 - "$1" "$2" <<'PY' || fail "requests failed or lost: $2"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
assert not r.get("rejects") and not r.get("errors") and not r.get("lost") \
    and not r.get("timeouts") and r["completed"] == r["started"] > 0, r
print("# %s: %d requests, none failed or lost" % (sys.argv[2], r["completed"]))
PY
}

# expect_rc WANT CMD...: run, keep stdout/stderr in $T/out $T/err.
expect_rc() {
	local want=$1 rc
	shift
	"$@" >"$T/out" 2>"$T/err"
	rc=$?
	if [ "$rc" != "$want" ]; then
		echo "--- stdout" >&2; cat "$T/out" >&2
		echo "--- stderr" >&2; cat "$T/err" >&2
		fail "exit status $rc, expected $want: $*"
	fi
}
