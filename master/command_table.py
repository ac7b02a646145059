"""The master's commands (OG's shell commands): the one table that the command service,
the REST API (``POST /api/commands``, ``GET /api/command-table``) and flumectl read.

Each entry gives the name recorded in the history, the aliases accepted besides it, the
arguments (``[NAME]`` is optional; only trailing optional arguments or, as in ``config NODE
[FLOW] SOURCE SINK``, one optional argument in the middle), whether the command changes
anything (every command but ``noop``: configs, mappings, chokes or a file on the master),
and a one-line help. Names are matched case-insensitively, with ``-`` and ``_`` ignored
(``unmap-all``, ``UNMAPALL`` and ``unmapAll`` are one command). This module imports nothing
but the standard library: flumectl reads it without the master's dependencies.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MasterCommand:
    """One command of the master."""

    name: str
    args: tuple[str, ...]
    help: str
    writes: bool = True
    aliases: tuple[str, ...] = ()
    args_help: str | None = None       # what flumectl says of the arguments, if anything

    @property
    def usage(self) -> str:
        return " ".join((self.name, *self.args))

    @property
    def arity(self) -> tuple[int, int]:
        """(fewest, most) arguments taken."""
        return sum(1 for a in self.args if not a.startswith("[")), len(self.args)

    def public(self) -> dict:
        """The entry as the REST API shows it."""
        return {"name": self.name, "aliases": list(self.aliases), "usage": self.usage,
                "writes": self.writes, "help": self.help}


COMMANDS: tuple[MasterCommand, ...] = (
    MasterCommand("config", ("NODE", "[FLOW]", "SOURCE", "SINK"),
                  "configure a logical node: config NODE [FLOW] SOURCE SINK",
                  args_help="the logical node, optionally its flow (kept when omitted; "
                            "default-flow for a new node), its source and its sink, each "
                            "one argument: quote them"),
    MasterCommand("multiconfig", ("SPEC",),
                  "configure many nodes from a spec ('name : source | sink ; ...'); @FILE "
                  "reads the spec from a local file, @- from stdin"),
    MasterCommand("unconfig", ("NODE",), "remove a logical node's configuration"),
    MasterCommand("map", ("PHYSICAL", "LOGICAL"),
                  "run logical node LOGICAL on physical node PHYSICAL",
                  aliases=("spawn",)),          # OG's deprecated synonym
    MasterCommand("unmap", ("PHYSICAL", "LOGICAL"), "stop running LOGICAL on PHYSICAL"),
    MasterCommand("unmapAll", (), "remove every logical node from every physical node"),
    MasterCommand("decommission", ("LOGICAL",),
                  "remove a logical node: its configuration and every mapping"),
    MasterCommand("refresh", ("NODE",), "restart a logical node's flow"),
    MasterCommand("refreshAll", (), "restart every logical node's flow"),
    MasterCommand("purge", ("PHYSICAL",),
                  "forget a physical node that is gone (its mapping and status)"),
    MasterCommand("purgeAll", (), "forget every physical node that is gone"),
    MasterCommand("save", ("FILE",),
                  "save every configuration as a spec file on the master (under its data "
                  "directory)"),
    MasterCommand("load", ("FILE",),
                  "load a spec file from the master's data directory (like multiconfig)"),
    MasterCommand("setChokeLimit", ("PHYSICAL", "CHOKE", "KBPS"),
                  "limit choke CHOKE on PHYSICAL to KBPS kilobytes per second"),
    MasterCommand("noop", ("[MS]",),
                  "do nothing (optionally for MS milliseconds): noop [MS]", writes=False,
                  args_help="milliseconds to spend (default 0)"),
)


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_BY_KEY = {_key(n): c for c in COMMANDS for n in (c.name, *c.aliases)}


def find(name) -> MasterCommand | None:
    """The command ``name`` stands for (any case, ``-`` and ``_`` ignored), or None."""
    return _BY_KEY.get(_key(name)) if isinstance(name, str) else None


def names() -> list[str]:
    return [c.name for c in COMMANDS]
