"""Hold N half-sent request heads from ONE address (127.0.0.2), re-opening each as the
server's header timeout closes it; a legitimate GET from 127.0.0.1 every 2 s.
Works against the master REST API (--bind any, token or not: the token is read after
the head) and the node status page. usage: http_head_hog.py PORT N SECONDS PATH"""
import socket, time, sys, selectors, urllib.request, urllib.error
port, n, secs, path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
sel = selectors.DefaultSelector(); reopened = 0
def hog():
    c = socket.socket(); c.bind(("127.0.0.2", 0)); c.connect(("127.0.0.1", port))
    c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"); sel.register(c, selectors.EVENT_READ)
for _ in range(n): hog()
codes = {}; t_end = time.time() + secs; nxt = time.time() + 1
while time.time() < t_end:
    for k, _ in sel.select(0.2):
        try: d = k.fileobj.recv(4096)
        except OSError: d = b""
        if not d: sel.unregister(k.fileobj); k.fileobj.close(); hog(); reopened += 1
    if time.time() >= nxt:
        nxt += 2
        try: code = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
        except urllib.error.HTTPError as e: code = e.code
        except OSError as e: code = type(e).__name__
        codes[code] = codes.get(code, 0) + 1
print(f"{n} slow heads from 127.0.0.2 for {secs:.0f} s (re-opened {reopened}): legit GET {path} -> {codes}")
