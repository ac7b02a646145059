"""Anonymous client (no credential) on the managed ZooKeeper: the tree outside /flume is open.
usage: zk_anon_root.py ZKPORT"""
import sys
from kazoo.client import KazooClient
zk = KazooClient(f"127.0.0.1:{sys.argv[1]}"); zk.start(10)
print("ACL of / :", zk.get_acls("/")[0])
for p in ("/anon-junk", "/zookeeper/anon"):
    try:
        zk.create(p, b"a" * 1_000_000); print("ALLOWED anonymous create of 1 MB at", p)
        zk.delete(p)
    except Exception as e: print("refused", p, type(e).__name__)
try: print("anon read /flume:", zk.get("/flume"))
except Exception as e: print("anon read /flume refused:", type(e).__name__)
zk.stop()
