#!/usr/bin/python3
# t-dpdk-frames.py IFACE SRC_MAC DST_MAC SRC_IP DST_IP PORT COUNT
# Sends COUNT of each class of malformed frame (scapy, raw on IFACE) to the
# DPDK velod and prints "class counter count" lines: the counter each class
# must raise by exactly COUNT (t-dpdk-frames.sh checks them).  Run with
# Debian's python3 (python3-scapy).
import sys
from scapy.all import Ether, Dot1Q, IP, UDP, ICMP, TCP, Raw, sendp, conf

iface, smac, dmac, sip, dip, port, count = sys.argv[1:8]
port = int(port)
count = int(count)
conf.verb = 0
E = Ether(src=smac, dst=dmac)
body = Raw(b"velo" * 8)


def ip_raw(**kw):
    """An IPv4/UDP frame as bytes, checksums computed, then fields forced."""
    return bytes(E / IP(src=sip, dst=dip, **kw) / UDP(sport=40000, dport=port) / body)


def patch(b, off, val):
    b = bytearray(b)
    b[off:off + len(val)] = val
    return bytes(b)


good = ip_raw()
cases = []
# IPv4 too short for its header (an IPv4 "runt").
cases.append(("ip_runt", "pkt.drop_ip_short", bytes(E)[:12] + b"\x08\x00" + good[14:24]))
# IP version 6 inside an IPv4 ethertype.
cases.append(("ip_version", "pkt.drop_ip_version", patch(good, 14, b"\x65")))
# Header length 12 bytes (< 20).
cases.append(("ip_ihl", "pkt.drop_ip_hdr_len", patch(good, 14, b"\x43")))
# Header checksum wrong.
cases.append(("ip_csum", "pkt.drop_ip_csum", patch(good, 24, bytes([good[24] ^ 0xff, good[25]]))))
# Total length beyond the frame (checksum fixed up by scapy).
cases.append(("ip_len", "pkt.drop_ip_len",
              bytes(E / IP(src=sip, dst=dip, len=1200) / UDP(sport=40000, dport=port) / body)))
# Fragments: first piece (MF) and a later piece (offset).
cases.append(("ip_frag_mf", "pkt.drop_ip_frag", ip_raw(flags="MF")))
cases.append(("ip_frag_off", "pkt.drop_ip_frag", ip_raw(frag=20)))
# Another destination address.
cases.append(("ip_not_us", "pkt.drop_ip_not_us",
              bytes(E / IP(src=sip, dst="10.213.0.99") / UDP(sport=40000, dport=port) / body)))
# Another IP protocol.
cases.append(("ip_proto", "pkt.drop_ip_proto",
              bytes(E / IP(src=sip, dst=dip) / TCP(sport=40000, dport=port))))
# UDP length field longer than the IP packet says.
cases.append(("udp_len", "pkt.drop_udp_len",
              bytes(E / IP(src=sip, dst=dip) / UDP(sport=40000, dport=port, len=8 + 32 + 4) / body)))
# UDP checksum wrong.
cases.append(("udp_csum", "pkt.drop_udp_csum",
              bytes(E / IP(src=sip, dst=dip) / UDP(sport=40000, dport=port, chksum=0x1234) / body)))
# Wrong port.
cases.append(("udp_port", "pkt.drop_udp_port",
              bytes(E / IP(src=sip, dst=dip) / UDP(sport=40000, dport=port + 1) / body)))
# 802.1Q tag (velod is configured untagged).
cases.append(("vlan", "pkt.drop_vlan",
              bytes(E / Dot1Q(vlan=7) / IP(src=sip, dst=dip) / UDP(sport=40000, dport=port) / body)))
# ICMP that is not an echo request, and an echo with a bad checksum.
cases.append(("icmp_type", "pkt.drop_icmp_type",
              bytes(E / IP(src=sip, dst=dip) / ICMP(type=13))))
cases.append(("icmp_csum", "pkt.drop_icmp_bad",
              bytes(E / IP(src=sip, dst=dip) / ICMP(type=8, chksum=0x1111) / body)))
# An unknown ethertype.
cases.append(("ethertype", "pkt.drop_ethertype", bytes(Ether(src=smac, dst=dmac, type=0x88b5) / body)))
# A well-formed UDP datagram to our port whose payload is not velo: the
# packet layer passes it, the session layer drops it (short / bad magic).
cases.append(("proto_garbage", "pkt.udp_rx", good))

for name, ctr, frame in cases:
    sendp([Raw(frame)] * count, iface=iface)
    print(name, ctr, count)
