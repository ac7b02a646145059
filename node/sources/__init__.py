"""Sources. Each module registers its sources with ``@source``; listed explicitly here."""
from . import (console, exec_source, http, logical, memory, netcat, null_fail,  # noqa: F401
               rpc, spooldir, synth, syslog, tail, text)
