"""The master's errors, as the REST API answers them: CommandError 400, NotFound 404,
CommandFailed 409 (with SpecError 400 and ZkError 503 from node/ and zk/)."""
from __future__ import annotations

from flume_og.node.errors import FlumeError


class CommandError(FlumeError):
    """A command was given wrongly: unknown name, wrong argument count or a bad value."""


class CommandFailed(FlumeError):
    """A valid command could not be performed (the record says FAILED with this message)."""


class NotFound(CommandFailed):
    """A command or request named something that does not exist."""
