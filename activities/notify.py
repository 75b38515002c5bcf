"""`notify_reviewers`: queue a reminder, escalation or hold notice for a gate's roles."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from baton.gates import Notice
from baton.runner import NOTIFY_ACTIVITY
from systems.outbox import Outbox


class NoticeReceipt(BaseModel):
    notice_id: int
    created: bool


@activity.defn(name=NOTIFY_ACTIVITY)
def notify_reviewers(notice: Notice) -> NoticeReceipt:
    info = activity.info()
    notice_id, created = Outbox().queue(
        idempotency_key=f"{info.workflow_id}/{info.activity_id}",
        notice=notice.model_dump(mode="json"),
    )
    return NoticeReceipt(notice_id=notice_id, created=created)
