"""Use up a collector's maxAgents (10,000 distinct agent ids per node lifetime) from one
unauthenticated peer with valid one-event groups; afterwards a new legitimate E2E agent is
refused for as long as the node runs, and every fake agent left persistent znodes.
usage: e2e_agent_exhaust.py PORT N"""
import sys, os, socket, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
from thriftraw import append_group, read_reply
from flume_og.node.codec import encode_events; from node.event import Event
port, n = int(sys.argv[1]), int(sys.argv[2])
payload = encode_events([Event(b"x", 1, 0, host="h")])
c = socket.create_connection(("127.0.0.1", port), timeout=15); t0 = time.time(); last = b""
for i in range(n):
    c.sendall(append_group(f"fake-{i:06d}-" + "A" * 110, 1, payload, 1, seqid=i)); last = read_reply(c, 15)
print(f"{n} fake agents in {time.time()-t0:.1f} s; last answer {last[-60:]!r}")
c2 = socket.create_connection(("127.0.0.1", port), timeout=15)
c2.sendall(append_group("web01.example.com", 1, payload, 1)); print("new legitimate agent:", read_reply(c2, 15)[-120:])
