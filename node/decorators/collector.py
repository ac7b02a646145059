"""``collector([rollmillis]) { sink }``: the generic collector.

A roll (time trigger, checked every 250 ms) that will acknowledge E2E groups once the inner
instance holding their events has durably closed. The acknowledgement part is not written
yet: :meth:`CollectorRollSink.on_inner_closed` is where it goes.
"""
from __future__ import annotations

from ..component import SinkFactory
from ..registry import decorator
from .roll import RollSink


@decorator("collector")
class CollectorRollSink(RollSink):
    """A roll every ``rollmillis`` whose closes will acknowledge the E2E groups written to
    the closed instance (acknowledgements: not implemented yet)."""

    def __init__(self, inner_factory: SinkFactory, rollmillis: int = 30000):
        super().__init__(inner_factory, rollmillis)

    def on_inner_closed(self, tag: bytes, durable: bool) -> None:
        """The instance tagged ``tag`` was closed. When ``durable``, the E2E groups whose
        events went to it may be acknowledged; when not, they must not be (the agent resends
        them). E2E acknowledgement: to be added here."""
