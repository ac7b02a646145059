"""Decorators. Each module registers its decorators with ``@decorator``; listed explicitly."""
from . import (attributes, balance, batch, choke, collector, delay, digest,  # noqa: F401
               exdate, flakey, format, gzip, insistent_append, insistent_open, lazy_open,
               regex, roll, samplers, stubborn_append)
