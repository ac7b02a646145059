"""Sinks. Each module registers its sinks with ``@sink``; listed explicitly here.

``fanout``, ``failover`` and ``shared`` are the spec language's own constructs
(``[...]``, ``<...>``, ``let``), built directly by the builder."""
from . import (agent, agent_e2e, collect, collector_sink, console, counter,  # noqa: F401
               dfs, failover, fanout, logical, null_fail, rpc, shared, syslog_tcp, text)
