"""Sinks. Each module registers its sinks with ``@sink``; listed explicitly here.

``fanout``, ``failover`` and ``shared`` are the spec language's own constructs
(``[...]``, ``<...>``, ``let``), built directly by the builder."""
from . import (collect, console, counter, dfs, failover, fanout, logical,  # noqa: F401
               null_fail, shared, syslog_tcp, text)
