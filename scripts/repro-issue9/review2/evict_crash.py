"""Kill a syslogTcp/netcat server thread from one address: open N (> maxConnectionsPerPeer
=128) connections, each sending a few bytes at once. The server evicts an idle connection
whose bytes are in the same select() batch, reads the closed socket, and
_close() -> selector.unregister(fd -1) raises ValueError: the selector thread ends. The
logical node stays ACTIVE with no last_error; nothing is accepted on the port any more.
It is a race: the script repeats the round (up to 10) until the errors counter moves.
usage: evict_crash.py PORT STATUSPORT LOGICAL [N]"""
import socket, sys, time, json, urllib.request
port, sport, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 200
def status():
    d = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sport}/status.json", timeout=5))["logical"][name]
    return d["state"], d["last_error"], d["counters"].get("events_in", 0), d["counters"].get("errors", 0)
print("before:", status())
e0 = status()[3]
for rnd in range(1, 11):
    cs = []
    for i in range(n):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=2); c.send(b"<13>x\n"); cs.append(c)
        except OSError as e:
            print("connect", i, "failed:", e); break
    time.sleep(1)
    for c in cs: c.close()
    time.sleep(1)
    ok = 0
    for i in range(20):      # a legitimate sender afterwards: 20 lines on fresh connections
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=2); c.sendall(b"<13>legit line\n"); c.close(); ok += 1
        except OSError:
            pass
    time.sleep(2)
    print(f"after {n} connections from one address: {ok}/20 legit connects sent; status:", status())
    if status()[3] > e0:
        print("server thread died in round", rnd); break
