"""One byte of request head every STEP s; how long until the server closes? usage: slow_head.py PORT [STEP] [MAX]"""
import sys, socket, time
port = int(sys.argv[1]); step = float(sys.argv[2]) if len(sys.argv) > 2 else 2; mx = float(sys.argv[3]) if len(sys.argv) > 3 else 40
c = socket.create_connection(("127.0.0.1", port)); t0 = time.time()
head = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 10000
i = 0
try:
    while time.time() - t0 < mx:
        c.send(head[i:i+1]); i += 1
        c.settimeout(step)
        try:
            if c.recv(100) == b"": print(f"closed by server after {time.time()-t0:.1f} s"); break
            else: print("answer"); break
        except socket.timeout: pass
    else: print(f"still open after {mx} s ({i} bytes sent)")
except OSError as e: print(f"error after {time.time()-t0:.1f} s: {e}")
