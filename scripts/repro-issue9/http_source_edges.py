"""httpSource edge cases. usage: http_source_edges.py PORT"""
import sys, socket, time
port = int(sys.argv[1])
def raw(data, wait=3, half=False):
    c = socket.create_connection(("127.0.0.1", port), timeout=wait)
    c.sendall(data)
    if half: c.shutdown(socket.SHUT_WR)
    out = b""; t = time.time()
    try:
        while time.time() - t < wait:
            b = c.recv(65536)
            if not b: break
            out += b
    except OSError: pass
    c.close()
    return out
def codes(out): return [l.split(b" ")[1].decode() for l in out.split(b"\r\n") if l.startswith(b"HTTP/1.")]
cases = {
 "chunked, no CL": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
 "CL + chunked (smuggle)": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
 "CL 1_000": b"POST / HTTP/1.1\r\nContent-Length: 1_0\r\n\r\nline one\n\n",
 "CL arabic digits": "POST / HTTP/1.1\r\nContent-Length: \u0663\r\n\r\nabc".encode("utf-8"),
 "two CL": b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 100\r\n\r\nabc",
 "pipelined 50": (b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nx\n") * 50,
 "CL huge": b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
 "expect 100 big": b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\nExpect: 100-continue\r\n\r\n",
 "json deep": b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n" + b"[" * 2000 + b"]" * 2000,
 "json huge number": b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100020\r\n\r\n" + b'[{"body":"a","timestamp":' + b"9" * 100000 + b"}]",
 "header bomb": b"POST / HTTP/1.1\r\n" + b"X: " + b"a" * 60000 + b"\r\n" * 1 + b"Content-Length: 1\r\n\r\na",
}
SEP = b'\r\n\r\n'
def tail(out): return out.split(SEP, 1)[-1][:90]
for k, v in cases.items():
    t = time.time(); out = raw(v, half=k.startswith("pipelined"))
    print(f"{k:22s} -> {codes(out)[:6]}{'...' if len(codes(out))>6 else ''} ({len(codes(out))} answers, {time.time()-t:.2f} s) {tail(out)!r}")
