#!/bin/bash
# veloctl as an operator uses it: the interactive shell on a terminal
# (t-mgmt-pty.py drives it through a pseudo-terminal: prompts, TAB
# completion, history, configure mode, commit, refused input), lines from
# a pipe, and one-shot commands with --json for scripts.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/t-mgmt.inc"

start_mgmtd

expect_rc 0 /usr/bin/python3 "$SRC/tests/integration/t-mgmt-pty.py" \
	"$BIN/veloctl" "$MGMT_STATE/mgmt.sock"
cat "$T/out"
vctl show config | grep -qx 'set system.hostname console-1' ||
	fail "the console's commit is not running: $(vctl show config)"

# Lines from a pipe (no terminal): same grammar, configure mode enforced.
printf 'show status\nset system.hostname y\nconfigure\nset system.hostname piped\ncommit\nexit\nexit\n' |
	"$BIN/veloctl" -S "$MGMT_STATE/mgmt.sock" >"$T/out" 2>"$T/err"
grep -q 'only in configuration mode' "$T/err" || fail "pipe: configure mode not enforced"
vctl show config | grep -qx 'set system.hostname piped' || fail "pipe: commit not applied"

# One shot, JSON for scripts.
expect_rc 0 vctl --json show status
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["healthy"] is True and d["ready"] is False and d["velod"]["pid"] > 0, d' \
	"$T/out" || fail "show status --json: $(cat "$T/out")"
expect_rc 0 vctl --json show stats
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["engine_state"] == "not_ready"' \
	"$T/out" || fail "show stats --json: $(cat "$T/out")"
expect_rc 0 vctl --json show counters
grep -q '"mgmt.cli_requests"' "$T/out" || fail "show counters --json"
expect_rc 0 vctl show sessions
expect_rc 1 vctl --json model load nosuchmodel
grep -q '"ok": *false' "$T/out" || fail "json error: $(cat "$T/out") $(cat "$T/err")"
# mgmtd unreachable: exit 3.
expect_rc 3 "$BIN/veloctl" -S "$T/nothing.sock" show status
stop_mgmtd
exit 0
