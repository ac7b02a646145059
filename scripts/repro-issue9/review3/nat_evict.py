"""A legitimate address (127.0.0.1, e.g. a NAT or one agent with several logical nodes) holds
LEGIT connections to collectorSource: one uploads an appendPacked of MIB MiB at KBPS kB/s,
the others stay open and idle between small batches (as agents do). An attacker with many
addresses (127.0.1.x, 127.0.2.x, ...) keeps opening connections from them, each holding a begun message, filling the
port (past the per-address cap too). Is the legit upload, or its idle connection, evicted?
usage: nat_evict.py PORT NADDR SECONDS LEGIT MIB KBPS [UPLOADS=1]   (needs ulimit -n > NADDR+100)"""
import sys, os, socket, time, selectors, threading
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
from thriftraw import append_packed, read_reply
from flume_og.node.codec import encode_events; from node.event import Event
port, naddr, secs, nlegit, mib, kbps = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                        int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
rate = kbps * 1024
uploads = int(sys.argv[7]) if len(sys.argv) > 7 else 1
def addr(i): return f"127.0.{1 + i // 250}.{1 + i % 250}"
small = append_packed(encode_events([Event(b"legit", 1, 0, host="h")]), 1)
idle = []
for _ in range(nlegit - uploads):
    c = socket.create_connection(("127.0.0.1", port), timeout=5); c.sendall(small); read_reply(c, 5); idle.append(c)
res = {}
def upload(k):
    n = int(mib * 1024 * 1024 / 1000)
    msg = append_packed(encode_events([Event(b"x" * 980, i, 0, host="slowsite") for i in range(n)]), n)
    c = socket.create_connection(("127.0.0.1", port)); t0 = time.time(); sent = 0
    try:
        while sent < len(msg):
            chunk = msg[sent:sent + int(rate / 10)]; c.sendall(chunk); sent += len(chunk)
            time.sleep(max(0, t0 + sent / rate - time.time()))
        r = read_reply(c, 10); res[k] = f"sent all {len(msg)} B in {time.time()-t0:.1f} s; answer {'OK' if r else 'none (closed)'}"
    except OSError as e:
        res[k] = f"CUT after {time.time()-t0:.1f} s, {sent} of {len(msg)} B: {e}"
ts = [threading.Thread(target=upload, args=(k,)) for k in range(uploads)]
for t in ts: t.start()
time.sleep(1)
sel = selectors.DefaultSelector(); nxt = [0]; opened = closed = 0
def hog():
    global opened
    i = nxt[0]; nxt[0] += 1
    c = socket.socket(); c.settimeout(3); c.bind((addr(i % naddr), 0))
    try: c.connect(("127.0.0.1", port)); c.send(b"\x80"); sel.register(c, selectors.EVENT_READ); opened += 1
    except OSError: c.close()
for _ in range(max(naddr, 600)): hog()      # past the 512 slots
t_end = time.time() + secs
while time.time() < t_end and any(t.is_alive() for t in ts):
    for key, _ in sel.select(0.05):
        c = key.fileobj
        try: d = c.recv(100)
        except OSError: d = b""
        if not d: sel.unregister(c); c.close(); closed += 1; hog()
    hog()       # a fresh address: the port is full, something must give
    if nxt[0] % 50 == 0: pass
alive = 0
for c in idle:
    try: c.sendall(small); alive += 1 if read_reply(c, 5) else 0
    except OSError: pass
for t in ts: t.join(timeout=120)
print(f"attacker: {naddr} addresses held, {opened} opened, {closed} closed by the server")
print(f"legit uploads: {[res.get(k, 'still running') for k in range(uploads)]}; legit idle connections still working: {alive} of {len(idle)}")
