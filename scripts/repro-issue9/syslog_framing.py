"""SyslogFramer edge cases (in process): octet counts 2^63, negative, leading zeros, huge
counts that never arrive, byte-at-a-time feeding; time and what is kept buffered."""
import sys, os, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flume_og.node.sources.syslog import SyslogFramer
def run(name, chunks, limit=32768):
    f = SyslogFramer(limit); frames = []; cuts = 0; t = time.time()
    for c in chunks:
        fr, cu = f.feed(c); frames += fr; cuts += cu
    print(f"{name:34s} frames={[x[:20] for x in frames][:4]} n={len(frames)} cuts={cuts} buffered={len(f.buf)} skip={f.skip} {time.time()-t:.2f}s")
run("2^63 count", [b"9223372036854775808 hello\n"])
run("negative", [b"-5 hello\n"])
run("leading zeros", [b"0000000005 hello"])
run("zero length", [b"0 0 0 x\n"])
run("huge count, never arrives", [b"9999999999 " + b"a" * 100])
run("huge count, 1 MB then junk", [b"9999999999 " + b"a" * (1 << 20), b"<13>next\n"])
run("1-byte feeding of 100 kB line", [bytes([c]) for c in b"x" * 100000 + b"\n"])
run("digits without space 1-byte", [b"1"] * 50000)
