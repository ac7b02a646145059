"""CPU per /api/validate request at the spec bound (1 MiB): many definitions, each an
unknown source; and many valid definitions. Meanwhile a small PUT-like validate from a
second client: how long does it wait? usage: validate_cpu.py MASTER_URL [KB]"""
import sys, time, json, httpx, threading
url = sys.argv[1] + "/api/validate"; kb = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
for name, unit in (("bad defs", "a{i}: nosuch{i} | null; "), ("good defs", "a{i}: null | null; ")):
    spec = ""; i = 0
    parts = []
    size = 0
    while size < kb * 1000:
        p = unit.format(i=i); parts.append(p); size += len(p); i += 1
    spec = "".join(parts)
    small = []
    def probe():
        time.sleep(1); t = time.time()
        r = httpx.post(url, json={"spec": "x: null | null;"}, timeout=300); small.append((r.status_code, time.time() - t))
    th = threading.Thread(target=probe); th.start()
    t = time.time()
    r = httpx.post(url, json={"spec": spec}, timeout=300)
    th.join()
    print(f"{name}: {len(spec)} B, {i} definitions -> {r.status_code}, {len(r.content)} B in {time.time()-t:.1f} s; "
          f"a 1-line validate sent meanwhile -> {small[0][0]} after {small[0][1]:.2f} s")
