#!/usr/bin/env python3
# session_seeds.py — write the seed corpus of fuzz_session (op scripts, see
# the header of fuzz_session.c) into tests/fuzz/corpus/session/.
# Run from anywhere: python3 tests/fuzz/session_seeds.py
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "session")

T = dict(LOGON=1, LOGOUT=4, TEST_REQUEST=5, RETRANSMIT_REQUEST=7, FRAGMENT=9,
         INFER=16, CANCEL=17, STATUS_REQUEST=18)
F_CTRL = 0x04


def pad8(b):
    return b + b"\0" * (-len(b) % 8)


def msg(tid, block, body=b""):
    raw = struct.pack("<HHHBB", 0, len(block), tid, 1, 1) + block + body
    raw = pad8(raw)
    return struct.pack("<H", len(raw)) + raw[2:]


def var(b):
    return struct.pack("<H", len(b)) + b


def group(stride, entries):
    return struct.pack("<HH", stride, len(entries)) + b"".join(entries)


def infer(rid, prompt=b"hello", max_tokens=8, tokens=None, temp=0.5):
    flags = 0x0002 if tokens is not None else 0x0004
    block = struct.pack("<QQQIIIIffffffIIBBBBI", rid, 0, 42, 0, max_tokens, 0, 0,
                        temp, 0.9, 0.0, 1.0, 0.0, 0.0, 40, flags, 0, 0, 0, 0, 0)
    assert len(block) == 80
    body = group(4, [struct.pack("<I", t) for t in (tokens or [])])
    body += group(4, [struct.pack("<I", 2)])          # stop tokens
    body += group(8, [])                              # logit bias
    body += group(0, [])                              # stop sequences
    body += group(4, [])                              # chat messages
    body += var(b"tiny") + var(b"") + var(prompt if tokens is None else b"")
    return msg(T["INFER"], block, body)


def op(code, payload):
    return struct.pack("<BH", code, len(payload)) + payload


def logon(f=0, flags=3, ts=0, mtu=0, hb=0, name=b"seed"):
    return op(1, struct.pack("<BBhHH", f, flags, ts, mtu, hb) + name)


def sess(f, msgs, ctrl=False, count=None, pkt=0):
    body = b"".join(msgs)
    if count is None:
        count = len(msgs)
    return op(2, struct.pack("<BBHB", f, F_CTRL if ctrl else 0, count, pkt) + body)


def test_request(cid):
    return msg(T["TEST_REQUEST"], struct.pack("<QQ", cid, 123456789))


def retransmit(frm, count):
    return msg(T["RETRANSMIT_REQUEST"], struct.pack("<QII", frm, count, 0))


def cancel(rid):
    return msg(T["CANCEL"], struct.pack("<Q", rid))


def logout():
    return msg(T["LOGOUT"], struct.pack("<HHHH", 0, 0, 0, 0), var(b"bye"))


def fragments(frag_id, whole, n):
    piece = -(-len(whole) // n)
    out = []
    for i in range(n):
        off = i * piece
        data = whole[off:off + piece]
        fl = (1 if i == 0 else 0) | (2 if off + len(data) == len(whole) else 0)
        out.append(msg(T["FRAGMENT"], struct.pack("<IHHII", frag_id, i, fl,
                                                  len(whole), off), var(data)))
    return out


ENGINE = op(6, b"")
TICK = op(7, b"")


def clock(ms):
    return op(5, struct.pack("<H", ms))


seeds = {
    "basic": logon() + sess(0, [test_request(1)], ctrl=True) +
    sess(0, [infer(1)]) + ENGINE + sess(0, [infer(1)]) +
    sess(0, [msg(T["STATUS_REQUEST"], b"")]) +
    sess(0, [retransmit(1, 2)], ctrl=True) + sess(0, [logout()], ctrl=True),
    "tokens": logon(1) + sess(1, [infer(5, tokens=[1, 2, 3, 999])]) +
    sess(1, [infer(6, tokens=[5000])]) + ENGINE,
    "fragments": logon() + b"".join(
        sess(0, [p]) for p in reversed(fragments(3, infer(9, b"x" * 900), 3))) +
    ENGINE + clock(100) + TICK,
    "frag_timeout": logon() + sess(0, [fragments(4, infer(10, b"y" * 700), 2)[0]]) +
    clock(300) + TICK + sess(0, [fragments(4, infer(10, b"y" * 700), 2)[1]]),
    "table_full": logon(0) + logon(1) + logon(2) + logon(0) + logon(1, ts=-40) +
    logon(2, flags=0x80),
    "replays": logon(2) + op(3, b"") + op(4, b"") + sess(2, [test_request(7)], ctrl=True) +
    op(3, b"") + op(4, b"") + op(0, b"VELO" + b"\0" * 60),
    "credit": logon() + b"".join(sess(0, [infer(i, max_tokens=500)]) for i in range(1, 6)) +
    sess(0, [cancel(2), cancel(99)]) + ENGINE + ENGINE + sess(0, [infer(3)]),
    "timeout": logon() + clock(60) + TICK + clock(60) + TICK + clock(500) + TICK +
    sess(0, [test_request(2)], ctrl=True),
    "heartbeat_end": logon() + sess(0, [], ctrl=True, count=0) +
    sess(0, [], ctrl=True, count=0xffff),
    "batch": logon() + sess(0, [msg(T["STATUS_REQUEST"], b"")] * 6) +
    sess(0, [retransmit(0, 100)], ctrl=True) + sess(0, [retransmit(3, 1)], ctrl=True),
    "dedup": logon() + b"".join(sess(0, [infer(i)]) + ENGINE for i in range(1, 12)) +
    sess(0, [infer(2)]) + sess(0, [infer(5000)]) + ENGINE + sess(0, [infer(3)]),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, "seed-" + name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
