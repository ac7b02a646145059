"""Events with hostile host names into collectorSink("file:///tmp/rv/out/%{host}/", "ev").
usage: hostile_hosts.py RPCPORT"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flume_og.node.rpc import RpcClient
from flume_og.node.event import Event
hosts = ["..", ".", "../../etc", "a/b", "~root", "\uff0e\uff0e\uff0fx", "x" * 300, "%2e%2e", "", "a\\b", "C:", "\u202etxt.exe", "a\nb"]
c = RpcClient("127.0.0.1", int(sys.argv[1]), timeout=10)
print(c.append_packed([Event(f"body-{i}".encode(), 1, 0, host=h) for i, h in enumerate(hosts)]))
c.close()
