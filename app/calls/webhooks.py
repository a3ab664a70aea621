"""RunPod's `webhook` on /run and /runsync: when a call ends, its /status body is POSTed there, signed.

The cloud POSTs the same information as `/status` when a request ends; lorapod does the same, signed the
Standard Webhooks way with LORAPOD_WEBHOOK_SECRET, retried with backoff, each attempt recorded on the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from app.calls.store import Call, CallStore, call_view
from core.db import session_scope
from core.errors import LorapodError, NotFound
from core.settings import Settings
from core.webhooks.delivery import deliver, new_message_id
from core.webhooks.jobs import MAX_RECORDED_ATTEMPTS, policy_of
from core.webhooks.targets import check_url

log = logging.getLogger("lorapod.runpod")


def checked_webhook(settings: Settings, value: Any) -> str | None:
    """The request's `webhook`, checked; LorapodError (400) naming the field when it cannot be honoured."""
    if value is None:
        return None
    if settings.webhook_secret is None:
        raise LorapodError("webhook: needs LORAPOD_WEBHOOK_SECRET set on the server, to sign it", field="webhook")
    try:
        return check_url(value, allow_private=settings.webhook_allow_private)
    except LorapodError as exc:
        raise LorapodError(exc.message, field="webhook") from None


class CallWebhooks:
    """Sends each ended call's webhook in the background."""

    def __init__(self, store: CallStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.tasks: set[asyncio.Task[None]] = set()

    def announce(self, call_id: str) -> None:
        """Deliver the call's webhook if it has one and has ended (call on the loop)."""
        with contextlib.suppress(NotFound):
            self.send(self.store.answer(call_id))

    def send(self, call: Call) -> None:
        """Deliver the webhook of this call as it is, if it has one and has ended (call on the loop)."""
        if call.webhook and call.final:
            task = asyncio.ensure_future(self._send(call))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, call: Call) -> None:
        key = self.settings.webhook_key()
        url = (call.webhook or {}).get("url")
        if key is None or not isinstance(url, str):
            return
        await deliver(
            url,
            call_view(call),
            key=key,
            policy=policy_of(self.settings),
            event=f"call.{call.status.lower()}",
            message_id=new_message_id(),
            record=lambda attempt: self._record(call.id, attempt),
        )

    def _record(self, call_id: str, attempt: dict[str, Any]) -> None:
        with session_scope(self.store.engine) as session:
            call = session.get(Call, call_id)
            if call is None or not call.webhook:
                return
            attempts = [*list(call.webhook.get("attempts") or []), attempt][-MAX_RECORDED_ATTEMPTS:]
            session.execute(
                update(Call).where(col(Call.id) == call_id).values(webhook={**call.webhook, "attempts": attempts})
            )
