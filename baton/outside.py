"""What arrives at a run from outside: a named event that an ``Await`` node
waits for (a goods receipt was booked, a customer replied, a contract came
back signed).

An event is a signed act like a decision: the sender is a directory user
(a system is a service user) holding one of the roles the awaiting node
accepts news from, and the signature binds the event to the run. The news
itself is a wake-up and a summary, not the truth: a process re-reads its
system of record after the event, so a forged or mistaken event can make a
run look again, never make it believe something the system does not hold.

Pure and deterministic: the runner judges events in its handlers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from baton.signing import Signature, digest

# An event's data is news, not a document: kept small so a run's history and
# status stay small whatever a sender sends.
EVENT_DATA_LIMIT = 4096


class ExternalEvent(BaseModel):
    """What a sender hands a run through the ``event`` update or signal."""

    event: str = Field(description="The event's name, as an Await node declares it")
    user: str = Field(description="The directory user (or service) sending it")
    key: str = Field(
        default="",
        description="What the event is about (a PO number, a ticket): an Await that declares "
        "a key takes only events with that key",
    )
    data: dict[str, Any] = Field(default_factory=dict)
    signature: Signature | None = Field(
        default=None, description="The sender's signature; an unsigned event is refused"
    )

    def signed_fields(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "user": self.user,
            "key": self.key,
            "data_digest": digest(self.data),
        }


class ReceivedEvent(BaseModel):
    """An accepted event, kept in the run's state until an Await takes it:
    news that arrives before the run reaches its Await is not lost."""

    event: str
    user: str
    sender: Literal["human", "service"] = Field(description="A person, or a system's service user")
    role: str
    key: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    received_at: datetime
    nonce: str = Field(description="Of the sender's signature: names the event in the trail")
    taken_by: str | None = Field(default=None, description="The Await node that took it")
