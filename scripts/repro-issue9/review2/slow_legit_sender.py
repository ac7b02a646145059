"""A legitimate appendPacked of MIB MiB sent at RATE kB/s (a slow WAN link): does the
collector take it, or does the 30 s message deadline cut it (and every retry) off?
usage: slow_legit_sender.py PORT MIB RATE_KBPS"""
import sys, os, socket, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
from thriftraw import append_packed, read_reply
from flume_og.node.codec import encode_events; from node.event import Event
port, mib, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]) * 1024
n = int(mib * 1024 * 1024 / 1000)
msg = append_packed(encode_events([Event(b"x" * 980, i, 0, host="slowsite") for i in range(n)]), n)
print(f"message {len(msg)} bytes ({n} events), at {rate/1024:.0f} kB/s needs {len(msg)/rate:.0f} s")
c = socket.create_connection(("127.0.0.1", port)); t0 = time.time(); sent = 0
try:
    while sent < len(msg):
        chunk = msg[sent:sent + int(rate / 10)]; c.sendall(chunk); sent += len(chunk)
        time.sleep(max(0, t0 + sent / rate - time.time()))
    r = read_reply(c, 10); print(f"sent all in {time.time()-t0:.1f} s; answer: {r[-40:] if r else 'none (closed)'}")
except OSError as e:
    print(f"cut off after {time.time()-t0:.1f} s, {sent} of {len(msg)} bytes sent: {e}")
