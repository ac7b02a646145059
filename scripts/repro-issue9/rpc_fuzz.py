"""Fuzz the bounded Thrift reader over the network: mutated valid messages and hand-made
malformed ones, one connection each, bounded in count and time; then checks the server
still answers and its thread count is back. usage: rpc_fuzz.py PORT NODEPID [N] [SECONDS]"""
import sys, os, socket, random, struct, time
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from thriftraw import *
from flume_og.node.codec import encode_events
from flume_og.node.event import Event
port, pid = int(sys.argv[1]), int(sys.argv[2])
N = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
T = float(sys.argv[4]) if len(sys.argv) > 4 else 60
rnd = random.Random(9)
pl = encode_events([Event(b"x" * 10, 1, 0, host="fuzz", attrs={"k": b"v"})])
ev = b"\x0a\x00\x01" + struct.pack(">q", 1) + b"\x0b\x00\x03" + s(b"body") + b"\x0d\x00\x06\x0b\x0b" + struct.pack(">i", 1) + s(b"k") + s(b"v") + b"\x00"
seeds = [append_packed(pl, 1), append_group("fz", 1, pl, 1),
         header("appendBatch") + b"\x0f\x00\x01\x0c" + struct.pack(">i", 2) + ev + ev + b"\x00",
         header("append", 4) + b"\x0c\x00\x01" + ev + b"\x00", header("close") + b"\x00"]
nasty = [
    header("appendPacked") + b"\x0d\x00\x09\x0d\x0d" + struct.pack(">i", 2**31 - 1),   # map of maps
    header("appendPacked") + b"\x0e\x00\x09\x02" + struct.pack(">i", 2**31 - 1),         # set of bool
    header("appendPacked") + (b"\x0c\x00\x09" * 20) + b"\x00" * 20,                      # deep structs
    header("appendPacked") + (b"\x0f\x00\x09\x0f" + struct.pack(">i", 1)) + (b"\x0f" + struct.pack(">i", 1)) * 20,
    header("appendBatch") + b"\x0f\x00\x01\x0c" + struct.pack(">i", -1),
    struct.pack(">i", 2**31 - 1),                                                       # old-style name 2 GiB
    struct.pack(">I", 0x80010001) + struct.pack(">i", -5),
    struct.pack(">I", 0x80010002) + s("appendPacked") + b"\0\0\0\0\0",                  # a REPLY
    header("appendGroup") + b"\x0b\x00\x01" + struct.pack(">i", -1),
    header("appendBatch") + b"\x0f\x00\x01\x0c" + struct.pack(">i", 1) + b"\x0d\x00\x06\x0b\x0b" + struct.pack(">i", 2**30),
    header("appendBatch") + b"\x0f\x00\x01\x0c" + struct.pack(">i", 1) + b"\x0d\x00\x06\x0c\x0c" + struct.pack(">i", 3) + b"\x00" * 6,
    header("appendBatch") + b"\x0f\x00\x01\x00" + struct.pack(">i", 5),
    header("appendBatch") + b"\x0f\x00\x01\x63" + struct.pack(">i", 5),
    header("append", 1) + b"\x0c\x00\x01\x0a\x00\x02" + b"\x00" * 8 + b"\x00\x00",
]
def mutate(m):
    b = bytearray(m)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.random(); i = rnd.randrange(len(b))
        if op < .5: b[i] = rnd.randrange(256)
        elif op < .7: b[i:i+4] = struct.pack(">i", rnd.choice([-1, 0, 2**31-1, -2**31, 65536, 7]))
        elif op < .85: del b[i:i + rnd.randint(1, 8)]
        else: b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
    return bytes(b)
print("before: threads", threads(pid), "RSS", rss_kb(pid)//1024, "MiB")
t0 = time.time(); cnt = 0; answered = 0
msgs = nasty + [mutate(rnd.choice(seeds)) for _ in range(N)]
for m in msgs:
    if time.time() - t0 > T: break
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
        c.sendall(m)
        if rnd.random() < .5: c.shutdown(socket.SHUT_WR)        # half-close
        c.settimeout(0.3)
        try:
            if c.recv(4096): answered += 1
        except OSError: pass
        c.close()
    except OSError:
        pass
    cnt += 1
time.sleep(1.5)
print(f"{cnt} messages in {time.time()-t0:.0f} s, {answered} answered; threads", threads(pid), "RSS", rss_kb(pid)//1024, "MiB")
c = socket.create_connection(("127.0.0.1", port), timeout=5); c.sendall(append_packed(pl, 1)); print("legit call after:", read_reply(c, 5)[-20:]); c.close()
