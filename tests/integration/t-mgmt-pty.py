#!/usr/bin/python3
# t-mgmt-pty.py VELOCTL SOCKET — drive veloctl's interactive shell through a
# pseudo-terminal as an operator on a serial console would: prompts, TAB
# completion, history recall (up arrow), configure mode, commit, errors,
# exit.  Python standard library only (pty, os, select).  Every wait is
# bounded; exit 0 pass, 1 fail (what was expected and what came, on stderr).
import os
import pty
import re
import select
import sys
import time

veloctl, sock = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "vt100"
    os.execv(veloctl, [veloctl, "--socket", sock])

buf = b""


def fail(msg):
    sys.stderr.write("FAIL: %s\n--- terminal so far:\n%s\n" %
                     (msg, buf.decode("utf-8", "replace")[-2000:]))
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    sys.exit(1)


def expect(pattern, timeout=5.0):
    """Read until `pattern` (a regex) shows up after the last match."""
    global buf
    end = time.monotonic() + timeout
    rx = re.compile(pattern.encode())
    while True:
        m = rx.search(buf)
        if m:
            out = buf[:m.end()]
            buf = buf[m.end():]
            return out.decode("utf-8", "replace")
        left = end - time.monotonic()
        if left <= 0:
            fail("timed out waiting for %r" % pattern)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                fail("veloctl closed the terminal waiting for %r" % pattern)
            buf += data


def send(s):
    os.write(fd, s.encode())


expect(r"velo> ")
send("help\r")
expect(r"configure +enter configuration mode")
expect(r"velo> ")

# TAB completion: "sh" -> "show ", "show mod" -> "show models ".
# The terminal shows the redraw (cursor moves), not the text: the proof
# is that the completed line runs.
send("sh\t")
time.sleep(0.3)
send("mod\t")
time.sleep(0.3)
send("\r")
expect(r"NAME +VERSION +LABEL")
expect(r"velo> ")

# configure-only commands are refused outside configuration mode.
send("set system.hostname x\r")
expect(r"only in configuration mode")
expect(r"velo> ")

send("configure\r")
expect(r"entering configuration mode")
expect(r"velo# ")
send("help\r")
expect(r"commit confirmed MINUTES")
expect(r"velo# ")
send("set system.hostname console-1\r")
expect(r"ok")
expect(r"velo# ")
send("show config compare\r")
expect(r"\+ set system\.hostname console-1")
expect(r"velo# ")
send("commit\r")
expect(r"commit [0-9]+")
expect(r"velo# ")
# History: two ups recall "show config compare"; now no difference.
send("\x1b[A\x1b[A\r")
expect(r"no difference")
expect(r"velo# ")

# No shell behind it.
send("show status; id\r")
expect(r"character ';' not allowed")
expect(r"velo# ")
send("show status\r")
expect(r"health: +ok")
expect(r"velo# ")

send("exit\r")
expect(r"velo> ")
send("exit\r")
end = time.monotonic() + 5
while time.monotonic() < end:
    wpid, status = os.waitpid(pid, os.WNOHANG)
    if wpid == pid:
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            print("pty: prompts, completion, history, configure, commit, errors: ok")
            sys.exit(0)
        fail("veloctl exit status %r" % status)
    try:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            buf += os.read(fd, 4096)
    except OSError:
        pass
fail("veloctl did not exit on 'exit'")
