"""What the node credential can do in ZooKeeper. usage: zk_node_cred.py ZKPORT MASTER_DATA_DIR"""
import sys
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl, OPEN_ACL_UNSAFE
port, d = sys.argv[1], sys.argv[2]
cred = open(d + "/zk-auth-node").read().split("node=", 1)[1].split()[0]
zk = KazooClient(f"127.0.0.1:{port}", auth_data=[("digest", cred)]); zk.start(10)
R = "/flume"
def t(what, f):
    try:
        r = f(); print("ALLOWED ", what, "->", str(r)[:100])
    except Exception as e:
        print("refused ", what, "->", type(e).__name__)
t("read logical", lambda: zk.get_children(R + "/logical"))
t("create logical/x", lambda: zk.create(R + "/logical/x", b"{}"))
t("delete mappings/n1", lambda: zk.delete(R + "/mappings/n1"))
t("set chokes", lambda: zk.create(R + "/chokes/n1", b"{}"))
t("ports child", lambda: zk.create(R + "/ports/x", b""))
t("read commands", lambda: zk.get_children(R + "/commands"))
t("transaction logical", lambda: (lambda tx: (tx.create(R + "/logical/y", b"{}"), tx.commit())[1])(zk.transaction()))
t("create physical/evil world-ALL", lambda: zk.create(R + "/physical/evil", b"{}", acl=OPEN_ACL_UNSAFE))
t("world read of it (anon)", lambda: (lambda a: (a.start(5), a.get(R + "/physical/evil"))[1])(KazooClient(f"127.0.0.1:{port}")))
t("create status/evil w/ ACL excluding master", lambda: zk.create(R + "/status/evil", b"x", acl=[make_digest_acl(cred.split(':')[0], cred.split(':')[1], all=True)]))
t("set_acls on commits", lambda: zk.set_acls(R + "/commits", OPEN_ACL_UNSAFE))
t("set_acls on own physical/evil", lambda: zk.set_acls(R + "/physical/evil", OPEN_ACL_UNSAFE))
t("create commits/x 1MB", lambda: zk.create(R + "/commits/x", b"a" * 1000000))
t("create physical/p/child (sub-tree)", lambda: zk.create(R + "/physical/evil/sub", b""))
t("overwrite root data (masters list)", lambda: zk.set(R, b'{"masters": []}'))
t("create / (outside root)", lambda: zk.create("/flume2", b""))
t("create /zookeeper/x", lambda: zk.create("/zookeeper/x", b""))
for p in ("/physical/evil/sub", "/physical/evil", "/status/evil", "/commits/x"):
    try: zk.delete(R + p)
    except Exception: pass
zk.stop()
