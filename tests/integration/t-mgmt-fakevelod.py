#!/usr/bin/python3
# t-mgmt-fakevelod.py — a stand-in for velod's model control commands
# (answers as the real velod's loader gives them, boot/velod.c), so that
# t-mgmt-swap can test velo-mgmtd's side of load, swap, confirm, rollback
# and reload after a restart without loading models (t-swap-mgmt drives
# the real velod).  Same command line as velod for what
# mgmtd passes (-c, -s, --set, --listen, --print-config), same ready line,
# same control socket framing (one line in, the answer until EOF).  Every
# command received is appended to $FAKE_VELOD_LOG as "PID COMMAND".
import os
import signal
import socket
import sys

args = sys.argv[1:]
ctl = None
listen = "127.0.0.1:0"
i = 0
while i < len(args):
    a = args[i]
    if a in ("-c", "-s", "--set", "--listen", "-l"):
        if a == "-s":
            ctl = args[i + 1]
        if a in ("--listen", "-l"):
            listen = args[i + 1]
        i += 2
        continue
    if a == "--print-config":
        print("{}")
        sys.exit(0)
    sys.stderr.write("fakevelod: unknown argument %s\n" % a)
    sys.exit(2)
if not ctl:
    sys.exit(2)

log = os.environ.get("FAKE_VELOD_LOG", "/dev/null")
host, port = listen.rsplit(":", 1)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((host, int(port)))
port = udp.getsockname()[1]
try:
    os.unlink(ctl)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(ctl)
srv.listen(16)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

slots = {}      # name -> serving version
standby = {}    # name -> previous version, kept warm until confirm


def answer(cmd):
    w = cmd.split()
    ready = "ready" if slots else "not_ready"
    if cmd == "stats json":
        return '{"engine_state": "%s", "listen": "%s:%d"}\n' % (ready, host, port)
    if cmd == "counters json":
        return '{"dp.rx_datagrams": 0, "dp.drop_bad_tag": 0}\n'
    if cmd in ("stats", "counters", "sessions"):
        return "engine_state %s\n" % ready
    if w[:2] == ["model", "load"] and len(w) == 5:
        if not os.path.isfile(w[4]):
            return "error: no such image %s\n" % w[4]
        slots[w[2]] = w[3]
        return "ok %s %s loaded, self-test passed\n" % (w[2], w[3])
    if w[:2] == ["model", "swap"] and len(w) == 5:
        if w[2] not in slots:
            return "error: %s is not loaded\n" % w[2]
        standby.setdefault(w[2], slots[w[2]])
        slots[w[2]] = w[3]
        return "ok %s now %s, %s kept warm\n" % (w[2], w[3], standby[w[2]])
    if w[:2] == ["model", "rollback"] and len(w) == 3:
        if w[2] not in standby:
            return "error: no swap of %s to roll back\n" % w[2]
        slots[w[2]] = standby.pop(w[2])
        return "ok %s back to %s\n" % (w[2], slots[w[2]])
    if w[:2] == ["model", "confirm"] and len(w) == 3:
        if w[2] not in standby:
            return "error: no swap of %s to confirm\n" % w[2]
        del standby[w[2]]
        return "ok %s stays %s\n" % (w[2], slots[w[2]])
    if w[:2] == ["model", "unload"] and len(w) == 3:
        if w[2] not in slots:
            return "error: %s is not loaded\n" % w[2]
        v = slots.pop(w[2])
        standby.pop(w[2], None)
        return "ok %s unloaded (%s)\n" % (w[2], v)
    return "error: unknown command '%s'\n" % (w[0] if w else "")


print("velod: ready listen=%s:%d control=%s pid=%d" % (host, port, ctl, os.getpid()),
      flush=True)
while True:
    c, _ = srv.accept()
    c.settimeout(1.0)
    data = b""
    try:
        while b"\n" not in data:
            b = c.recv(4096)
            if not b:
                break
            data += b
    except socket.timeout:
        pass
    cmd = data.decode(errors="replace").strip()
    if cmd.startswith("model"):
        with open(log, "a") as f:
            f.write("%d %s\n" % (os.getpid(), cmd))
    try:
        c.sendall(answer(cmd).encode())
    except OSError:
        pass
    c.close()
