"""Fill collectorSource's 512 slots from two addresses (256 per address is the per-peer cap)
with messages begun and never finished; re-open each as soon as the 30 s message deadline
closes it. A legitimate sender from a third address tries every 2 s.
usage: conn_two_addresses.py PORT SECONDS [rpc|syslog]  (syslog: 128 per address, 256 in all)   (needs ulimit -n > 600)"""
import sys, os, socket, time, selectors
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
from thriftraw import append_packed, read_reply
from flume_og.node.codec import encode_events; from node.event import Event
port, secs = int(sys.argv[1]), float(sys.argv[2]); kind = sys.argv[3] if len(sys.argv) > 3 else "rpc"
per = 256 if kind == "rpc" else 128
sel = selectors.DefaultSelector(); reopened = 0
def hog(addr):
    c = socket.socket(); c.settimeout(3); c.bind((addr, 0)); c.connect(("127.0.0.1", port)); c.send(b"\x80" if kind == "rpc" else b"<1")
    sel.register(c, selectors.EVENT_READ, addr)
for addr in ("127.0.0.2", "127.0.0.3"):
    for _ in range(per): hog(addr)
ok = bad = 0; t_end = time.time() + secs; next_try = time.time() + 1
while time.time() < t_end:
    for key, _ in sel.select(0.2):
        c = key.fileobj
        try: d = c.recv(100)
        except OSError: d = b""
        if not d:
            sel.unregister(c); c.close(); hog(key.data); reopened += 1
    if time.time() >= next_try:
        next_try += 2
        try:
            c = socket.socket(); c.settimeout(5); c.bind(("127.0.0.1", 0)); c.connect(("127.0.0.1", port))
            if kind == "rpc":
                c.sendall(append_packed(encode_events([Event(b"legit", 1, 0, host="h")]), 1))
                r = read_reply(c, 5); ok += 1 if r else 0; bad += 0 if r else 1
            else:
                c.sendall(b"<13>legit line\n"); c.settimeout(1.5)
                try: r = c.recv(10)
                except socket.timeout: r = None      # still open: accepted
                ok += 1 if r is None else 0; bad += 0 if r is None else 1
        except OSError as e:
            bad += 1
        finally: c.close()
print(f"{kind}: {secs:.0f} s, {2*per} hog connections from 2 addresses (re-opened {reopened}): legit calls answered {ok}, refused/reset {bad}")
