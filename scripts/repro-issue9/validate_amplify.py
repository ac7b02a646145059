"""POST /api/validate (token-free even when the master has a write token) with specs made to
produce many errors on one long line: response size and time. usage: validate_amplify.py MASTER_URL"""
import sys, time, json, httpx
url = sys.argv[1] + "/api/validate"
for n in (100, 1000, 5000):
    for name, spec in (
        ("one line, n bad defs", "".join(f"a{i}: nosuch{i} | null; " for i in range(n))),
        ("one line, n bad args", "a: null | { " + " => ".join(f"nodeco{i}" for i in range(min(n, 999))) + " => null };"),
    ):
        t = time.time()
        try:
            r = httpx.post(url, json={"spec": spec}, timeout=120)
            body = r.content
            print(f"{name:22s} n={n:5d}: request {len(spec):8d} B -> {r.status_code} response {len(body):10d} B "
                  f"({len(body)/len(spec):.0f}x) in {time.time()-t:.2f} s; errors={len(json.loads(body).get('errors', []))}")
        except Exception as e:
            print(name, n, "failed", e, f"{time.time()-t:.1f} s")
