"""`notify_reviewers`: queue a reminder, escalation or hold notice for a gate's roles."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from baton.gates import Notice
from baton.idempotency import idempotency_key
from baton.runner import NOTIFY_ACTIVITY
from systems.outbox import Outbox


class NoticeReceipt(BaseModel):
    notice_id: int
    created: bool


@activity.defn(name=NOTIFY_ACTIVITY)
def notify_reviewers(notice: Notice) -> NoticeReceipt:
    notice_id, created = Outbox().queue(
        # A reused workflow id's notices are its own, not skipped as sent.
        idempotency_key=idempotency_key(),
        notice=notice.model_dump(mode="json"),
    )
    return NoticeReceipt(notice_id=notice_id, created=created)
