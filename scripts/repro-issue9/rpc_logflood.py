"""Oneway `append` calls without an event: each one logs an unrated WARNING on the receiver
("rpc: one-event append failed: 'NoneType' object has no attribute 'body'").
usage: rpc_logflood.py PORT N LOGFILE"""
import sys, os, socket, time
sys.path.insert(0, os.path.dirname(__file__))
from thriftraw import header
port, n, logf = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
before = os.path.getsize(logf)
msg = header("append", 4) + b"\x00"           # oneway append, no field 1
c = socket.create_connection(("127.0.0.1", port))
t0 = time.time()
c.sendall(msg * n)
c.shutdown(socket.SHUT_WR); c.settimeout(30)
try: c.recv(1)
except OSError: pass
c.close()
time.sleep(1)
grown = os.path.getsize(logf) - before
print(f"sent {n} x {len(msg)} bytes = {n*len(msg)} bytes in {time.time()-t0:.1f} s; receiver log grew {grown} bytes ({grown/(n*len(msg)):.1f}x)")
