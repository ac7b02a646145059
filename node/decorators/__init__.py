"""Decorators. Each module registers its decorators with ``@decorator``; listed explicitly."""
from . import (acked_write_ahead, attributes, balance, batch, choke, collector,  # noqa: F401
               delay, digest, disk_failover, exdate, flakey, format, gzip,
               insistent_append, insistent_open, lazy_open, regex, roll, samplers,
               stubborn_append)
