#!/usr/bin/python3
# t-dpdk-replay.py IFACE SERVER_IP PORT CLIENT_IP N CMD...
# Runs CMD (a velo-client that logs on) while sniffing IFACE, keeps the
# first datagram it sends to SERVER_IP:PORT (its LOGON), then sends that
# datagram again, unchanged, from N fresh UDP source ports (so that the
# port's RSS / fan-out spreads the copies over the dataplane loops) and
# counts the bytes that come back to them within a second: a replayed LOGON
# must get nothing, whichever loop it reaches.  Prints
# "replayed N" and "bytes_back B"; exit 1 when no LOGON was seen.
import socket
import subprocess
import sys
import time

from scapy.all import IP, UDP, AsyncSniffer

iface, sip, port, cip, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
cmd = sys.argv[6:]

# lfilter, not a BPF filter: scapy would need tcpdump to compile one.
sn = AsyncSniffer(iface=iface, store=True,
                  lfilter=lambda p: UDP in p and p[IP].dst == sip and p[UDP].dport == port)
sn.start()
time.sleep(0.5)
rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20).returncode
time.sleep(0.2)
pkts = sn.stop() or []
if rc != 0 or not pkts:
    print("no LOGON captured (client exit %d, %d datagrams)" % (rc, len(pkts)))
    sys.exit(1)
logon = bytes(pkts[0][UDP].payload)

socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((cip, 0))
    s.setblocking(False)
    s.sendto(logon, (sip, port))
    socks.append(s)
time.sleep(1.0)
back = 0
for s in socks:
    while True:
        try:
            back += len(s.recv(65536))
        except BlockingIOError:
            break
print("replayed %d" % n)
print("bytes_back %d" % back)
