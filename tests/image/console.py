#!/usr/bin/python3
"""console.py SOCK CMD — on QEMU's serial console (a Unix socket chardev),
wait for the veloctl prompt, send CMD, print what comes back up to the next
prompt.  Exit 0 when the prompt came back, 1 on timeout (30 s each).

The console may just be starting (right after velo-init's last line): the
newline sent to get a fresh prompt can reach veloctl after its first prompt
and produce a second, empty one.  So after the first prompt it waits for
the console to go quiet before sending CMD, and the answer is what follows
CMD's echo up to the prompt after it."""
import socket
import sys
import time

PROMPT = b"velo> "


def read_until(s, token, timeout, buf=b"", start=0):
    end = time.time() + timeout
    while time.time() < end:
        if buf.find(token, start) >= 0:
            return buf, True
        s.settimeout(max(0.1, end - time.time()))
        try:
            d = s.recv(4096)
        except socket.timeout:
            continue
        if not d:
            break
        buf += d
    return buf, buf.find(token, start) >= 0


def drain(s, quiet, limit):
    """Read until nothing came for `quiet` seconds (at most `limit`)."""
    end = time.time() + limit
    while time.time() < end:
        s.settimeout(quiet)
        try:
            if not s.recv(4096):
                return
        except socket.timeout:
            return


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    cmd = sys.argv[2].encode()
    s.sendall(b"\n")  # a fresh prompt
    _, ok = read_until(s, PROMPT, 30)
    if not ok:
        print("no veloctl prompt on the console", file=sys.stderr)
        return 1
    drain(s, 1.0, 10)
    s.sendall(cmd + b"\n")
    buf, ok = read_until(s, cmd, 30)
    if not ok:
        sys.stdout.write(buf.decode(errors="replace").replace("\r", ""))
        print("console did not echo the command", file=sys.stderr)
        return 1
    at = buf.find(cmd) + len(cmd)
    buf, ok = read_until(s, PROMPT, 30, buf, at)
    end = buf.find(PROMPT, at)
    out = buf[at:end] if end >= 0 else buf[at:]
    sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
    return 0 if ok else 1


sys.exit(main())
