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
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from baton.signing import Signature, digest

# An event's data is news, not a document: kept small so a run's history and
# status stay small whatever a sender sends.
EVENT_DATA_LIMIT = 4096
# The acts a user signs on a run that is under way, named as their signatures
# state them and as the run's updates and signals that take them.
Act = Literal["decide", "stop", "event"]


class SignedAct(BaseModel):
    """An act a user signs on a run: a decision, a stop, an event.

    The signature covers the fields ``signed`` names as they are, and those
    ``digested`` names by their digest ("" for None): what the signer binds
    stays small however large an edited output or an event's data is. Each
    act declares its own ``signature`` field, after its other fields: a field
    declared here would come first in every act's schema and JSON."""

    action: ClassVar[Act]
    # What the run answers an accepted act with.
    answer: ClassVar[type[BaseModel]]
    signed: ClassVar[tuple[str, ...]]
    digested: ClassVar[tuple[str, ...]] = ()

    def signed_fields(self) -> dict[str, Any]:
        """What the user's signature covers of the act itself."""
        fields = {name: getattr(self, name) for name in self.signed}
        for name in self.digested:
            value = getattr(self, name)
            fields[f"{name}_digest"] = "" if value is None else digest(value)
        return fields


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


class ExternalEvent(SignedAct):
    """What a sender hands a run through the ``event`` update or signal."""

    action = "event"
    answer = ReceivedEvent
    signed = ("event", "user", "key")
    digested = ("data",)

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
