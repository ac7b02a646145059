"""AgentTable (node/e2e/collector.py) with a simulated clock: AGENTS legitimate E2E agents
behind ONE address (a NAT), each sending a group every PERIOD s (a group is taken at once,
so not busy afterwards). How many groups are refused per minute, steady state and after a
collector restart?  usage: nat_new_agents.py AGENTS PERIOD MINUTES"""
import sys, os
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
from flume_og.node.e2e.collector import AgentTable, AgentLimits
agents, period, minutes = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
now = [0.0]; tab = AgentTable(clock=lambda: now[0]); lim = AgentLimits()
nxt = {f"agent-{i}": i * period / agents for i in range(agents)}   # staggered
per_min = {}; first_ok = {}
step = 0.5
while now[0] < minutes * 60:
    for a, t in nxt.items():
        if t <= now[0]:
            r = tab.admit(a, "10.0.0.1", lim, busy=set)
            m = int(now[0] // 60); ok, bad = per_min.get(m, (0, 0))
            if r is None: per_min[m] = (ok + 1, bad); nxt[a] = now[0] + period; first_ok.setdefault(a, now[0])
            else: per_min[m] = (ok, bad + 1); nxt[a] = now[0] + 5       # agent retries in 5 s
    now[0] += step
print(f"{agents} agents behind one address, one group every {period:.0f} s each (retry 5 s on refusal)")
for m, (ok, bad) in sorted(per_min.items()): print(f"  minute {m}: taken {ok}, refused {bad}")
print(f"agents never admitted: {agents - len(first_ok)}; last first admission at {max(first_ok.values()):.0f} s")
