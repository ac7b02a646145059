"""Count children of a znode using the master credential. usage: zk_count.py ZKPORT AUTHFILE PATH"""
import sys
from kazoo.client import KazooClient
port, auth, path = sys.argv[1:4]
cred = dict(l.split("=", 1) for l in open(auth).read().split() if "=" in l)["master"]
zk = KazooClient(f"127.0.0.1:{port}", auth_data=[("digest", cred)]); zk.start(10)
kids = zk.get_children(path)
print(path, len(kids), "children; longest name", max((len(k) for k in kids), default=0))
zk.stop()
