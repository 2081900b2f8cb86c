#!/usr/bin/python3
"""console.py SOCK CMD — on QEMU's serial console (a Unix socket chardev),
wait for the veloctl prompt, send CMD, print what comes back up to the next
prompt.  Exit 0 when the prompt came back, 1 on timeout (30 s each)."""
import socket
import sys
import time

PROMPT = b"velo> "


def read_until(s, token, timeout):
    buf = b""
    end = time.time() + timeout
    while time.time() < end:
        s.settimeout(max(0.1, end - time.time()))
        try:
            d = s.recv(4096)
        except socket.timeout:
            continue
        if not d:
            break
        buf += d
        if token in buf:
            return buf, True
    return buf, False


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.sendall(b"\n")  # a fresh prompt
    _, ok = read_until(s, PROMPT, 30)
    if not ok:
        print("no veloctl prompt on the console", file=sys.stderr)
        return 1
    s.sendall(sys.argv[2].encode() + b"\n")
    out, ok = read_until(s, PROMPT, 30)
    sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
    return 0 if ok else 1


sys.exit(main())
