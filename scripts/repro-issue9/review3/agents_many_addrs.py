"""maxAgents (10,000 live) against an attacker with many addresses: NADDR addresses x PER
new one-event groups each (under maxNewAgentsPerMinute=100), then a new legitimate agent
from a fresh address. Optionally keep them live (re-send each id every KEEP s) for SECONDS.
usage: agents_many_addrs.py PORT NADDR PER [KEEP SECONDS]"""
import sys, os, socket, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
from thriftraw import append_group, read_reply
from flume_og.node.codec import encode_events; from node.event import Event
port, naddr, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
keep, secs = (float(sys.argv[4]), float(sys.argv[5])) if len(sys.argv) > 5 else (0, 0)
payload = encode_events([Event(b"x", 1, 0, host="h")])
t0 = time.time(); taken = 0; seq = 1
def round_(seq):
    n = 0
    for a in range(naddr):
        c = socket.socket(); c.settimeout(15); c.bind((f"127.0.{10 + a // 250}.{1 + a % 250}", 0)); c.connect(("127.0.0.1", port))
        for i in range(per):
            c.sendall(append_group(f"fake-{a}-{i}", seq, payload, 1)); r = read_reply(c, 15); n += b"taken" in r
        c.close()
    return n
taken = round_(1)
print(f"{naddr * per} fake agents from {naddr} addresses in {time.time()-t0:.1f} s, taken {taken}")
def legit(tag):
    c = socket.socket(); c.settimeout(15); c.bind(("127.0.0.250", 0)); c.connect(("127.0.0.1", port))
    c.sendall(append_group(f"web-{tag}.example.com", 1, payload, 1)); print(f"  legit new agent ({tag}):", read_reply(c, 15)[-90:]); c.close()
legit("a")
t_end = time.time() + secs
while time.time() < t_end:
    time.sleep(max(0, keep - 1)); seq += 1; t1 = time.time(); n = round_(seq)
    print(f"  kept live: round {seq} re-sent {naddr*per} in {time.time()-t1:.1f} s, taken {n}")
if secs: legit("b")
