"""Fill a port's connection cap from one address with idle connections that send a byte
now and then (under idleTimeoutMs); then a legitimate call. usage: conn_cap_hog.py PORT N KIND
KIND: rpc | syslog"""
import sys, os, socket, time
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from thriftraw import *
port, n, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
hog = []
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port)); hog.append(c)
    c.send(b"\x80" if kind == "rpc" else b"<1")        # a message head begun, never finished
time.sleep(1)
t0 = time.time()
try:
    if kind == "rpc":
        from flume_og.node.codec import encode_events; from node.event import Event
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(append_packed(encode_events([Event(b"legit", 1, 0, host="h")]), 1))
        r = read_reply(c, 5); print("legit call with", n, "hog connections:", r[-30:] or "no answer (closed)")
    else:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"<13>legit line\n"); c.settimeout(2)
        try: print("legit syslog sender:", "closed by server" if c.recv(10) == b"" else "open")
        except socket.timeout: print("legit syslog sender: accepted (open)")
except OSError as e:
    print("legit client error:", e)
for c in hog: c.close()
