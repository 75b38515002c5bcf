"""The reviewer's work: the inbox of gates waiting for one of their roles, a gate's page,
and deciding or stopping there. Each act is signed in the browser by the user's passkey in
two steps (`prepare`, then the act with the passkey's answer), and the run, not the inbox,
judges who may do what.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from baton.accounts import Account
from baton.client import DecisionRefused, NoWorkerError, deliver, inbox, run_status
from baton.document_store import DocumentError, DocumentRef, decode_text, document_store
from baton.gates import Decision, GateState, StopRequest
from baton.runner import RunStatus
from baton.signing import Passkey, subject_digest
from baton.web import passkeys, present
from baton.web.pages import (
    GATE,
    PageError,
    PageGroup,
    Pages,
    checked_form,
    gate_path,
    json_errors,
    signed_in,
)
from workflows import PROCESSES

FIELD_PREFIX = "field."


@dataclasses.dataclass(frozen=True)
class Feedback:
    """What a gate's page says back after an act that did not go through: the
    run's refusal or why the override's values cannot be read, with what the
    person typed, kept for them to correct rather than type again."""

    refused: str | None = None
    override_error: str | None = None
    typed: dict[str, str] | None = None
    comment: str = ""
    stop_reason: str = ""


def typed_override(form: FormData) -> dict[str, str] | None:
    """The override form's values as typed; None when the form is no override."""
    if not form.get("override"):
        return None
    return {
        key.removeprefix(FIELD_PREFIX): str(value)
        for key, value in form.multi_items()
        if key.startswith(FIELD_PREFIX)
    }


class ReviewPages(PageGroup):
    """The inbox, a gate, its decisions and the stop button."""

    @signed_in
    async def inbox(self, request: Request, account: Account) -> Response:
        rows, problems = await self._waiting_for(account)
        return self.pages.render(
            request,
            "inbox.html",
            rows=rows,
            problems=problems,
            now=datetime.now(UTC),
        )

    async def _waiting_for(self, account: Account) -> tuple[list[present.InboxRow], list[str]]:
        """Every gate waiting for one of the account's roles: runs found in
        Temporal visibility per role, then each run's own status for its gates
        (visibility lags a little behind the runs; the status does not)."""
        listed = await asyncio.gather(*(inbox(self.pages.client, role) for role in account.roles))
        items = {item.workflow_id: item for found in listed for item in found}
        statuses = await asyncio.gather(
            *(run_status(self.pages.client, workflow_id) for workflow_id in items),
            return_exceptions=True,
        )
        rows: list[present.InboxRow] = []
        problems: list[str] = []
        roles = set(account.roles)
        for item, status in zip(items.values(), statuses, strict=True):
            if isinstance(status, LookupError):
                continue  # ended since it was listed
            if isinstance(status, NoWorkerError):
                problems.append(f"{item.workflow_id}: {status}")
                # All that visibility knows of the gate; the run's start stands in for its opening.
                visible_gate = GateState(
                    gate=item.node, roles=item.roles, due_at=item.due_at, opened_at=item.started_at
                )
                rows.append(
                    present.InboxRow.for_gate(
                        item.workflow_id,
                        item.process,
                        visible_gate,
                        note="details unavailable: no worker answered",
                    )
                )
                continue
            if isinstance(status, BaseException):
                raise status
            rows += [
                present.InboxRow.for_gate(status.workflow_id, status.process, gate)
                for gate in present.open_for(status.gates, roles)
            ]
        return sorted(rows, key=present.InboxRow.sort_key), problems

    # -- one gate ---------------------------------------------------------------

    @signed_in
    async def gate(self, request: Request, account: Account) -> Response:
        status, gate = await self._gate_for(request, account)
        return self._gate_page(request, status, gate)

    @signed_in
    @json_errors
    async def prepare_decision(self, request: Request, account: Account) -> Response:
        """Step one of a decision: the decision the form asks for, with the
        context its passkey signature binds, for the page's script to have
        signed (see passkeys.request_options)."""
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        usable = self._usable_passkeys(request, account)
        shown = subject_digest(gate.shown, gate.edited_output)
        if form.get("shown_digest") != shown:
            # The signature would bind a view of the gate this person has not seen.
            raise PageError(
                409,
                "The gate changed",
                f"gate '{gate.gate}' changed since this page showed it (a decision or an edited "
                "output came in): reload the page, look at it again and decide anew",
            )
        try:
            decision = self._decision(form, account, status, gate, typed_override(form))
        except present.OverrideError as err:
            raise PageError(
                422, "Cannot read your values", f"Cannot read your values: {err}"
            ) from None
        context = passkeys.signing_context(status.workflow_id, status.run_id, gate.round, shown)
        return self._to_sign(decision.model_copy(update={"signature": context}), usable, account)

    @signed_in
    async def decide(self, request: Request, account: Account) -> Response:
        """Step two: deliver the decision its passkey signed. A form without
        a passkey's answer goes to the run unsigned, to be refused in the
        run's words: the inbox signs for nobody."""
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        comment = str(form.get("comment", ""))
        typed = typed_override(form)
        decision = self._signed_act(form, Decision, account, status.workflow_id, gate.gate)
        if decision is None:
            try:
                decision = self._decision(form, account, status, gate, typed)
            except present.OverrideError as err:
                feedback = Feedback(override_error=str(err), typed=typed, comment=comment)
                return self._gate_page(request, status, gate, feedback, status_code=422)
        try:
            await self._send(status.workflow_id, decision)
        except DecisionRefused as refused:
            # Shown on the gate as it is now: someone else may just have decided it.
            status, gate = await self._gate_for(request, account)
            feedback = Feedback(refused=refused.reason, typed=typed, comment=comment)
            return self._gate_page(request, status, gate, feedback, status_code=409)
        return RedirectResponse(gate_path(status.workflow_id, gate.gate), status_code=303)

    @signed_in
    @json_errors
    async def prepare_stop(self, request: Request, account: Account) -> Response:
        """Step one of the stop button, as for a decision."""
        form = await checked_form(request)
        status, _ = await self._gate_for(request, account)
        usable = self._usable_passkeys(request, account)
        stop = StopRequest(
            user=account.user,
            reason=str(form.get("reason", "")),
            signature=passkeys.signing_context(status.workflow_id, status.run_id),
        )
        return self._to_sign(stop, usable, account)

    @signed_in
    async def stop(self, request: Request, account: Account) -> Response:
        """The stop button: the run judges who may stop it, as with decisions."""
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        reason = str(form.get("reason", ""))
        stop = self._signed_act(form, StopRequest, account, status.workflow_id)
        try:
            await self._send(
                status.workflow_id, stop or StopRequest(user=account.user, reason=reason)
            )
        except DecisionRefused as refused:
            status, gate = await self._gate_for(request, account)
            feedback = Feedback(refused=refused.reason, stop_reason=reason)
            return self._gate_page(request, status, gate, feedback, status_code=409)
        return RedirectResponse(gate_path(status.workflow_id, gate.gate), status_code=303)

    def _decision(
        self,
        form: FormData,
        account: Account,
        status: RunStatus,
        gate: GateState,
        typed: dict[str, str] | None,
    ) -> Decision:
        """The decision the form asks for; an override's values are read back
        as the AI's types (OverrideError says which cannot be)."""
        output = None
        if typed is not None:
            review = present.review_of(gate.shown)
            names = self._editable_fields(status, gate)
            output = present.parse_override(names, review.output or {}, typed)
        try:
            return Decision.model_validate(
                {
                    "gate": gate.gate,
                    "user": account.user,
                    "outcome": form.get("outcome"),
                    "comment": str(form.get("comment", "")),
                    "output": output,
                }
            )
        except ValidationError:
            raise HTTPException(400, "Bad request: the form names no known outcome.") from None

    def _usable_passkeys(self, request: Request, account: Account) -> list[Passkey]:
        """The user's passkeys a browser here can sign with; PageError says
        why there are none."""
        registered = self.pages.passkeys_of(account.user)
        missing = passkeys.missing_passkey(registered, request.url)
        if missing is not None:
            raise PageError(409, "No passkey to sign with", missing)
        return passkeys.usable_passkeys(registered, request.url)

    def _to_sign(
        self, act: Decision | StopRequest, usable: list[Passkey], account: Account
    ) -> Response:
        token = self.pages.prepared.token(account.user, act)
        return Response(passkeys.request_options(act, usable, token), media_type="application/json")

    def _signed_act(
        self,
        form: FormData,
        kind: type[passkeys.Act],
        account: Account,
        workflow_id: str,
        gate: str = "",
    ) -> passkeys.Act | None:
        """The act the form's passkey answer signed; None without an answer."""
        try:
            return self.pages.prepared.signed(
                form, kind, user=account.user, workflow_id=workflow_id, gate=gate
            )
        except passkeys.PasskeyError as err:
            raise PageError(400, "The signed act cannot be delivered", str(err)) from None

    async def _send(self, workflow_id: str, act: Decision | StopRequest) -> None:
        """Hand ``act`` to the run as the browser made it, an unsigned one
        too: the inbox signs for nobody, and the run refuses it in its words."""
        await deliver(self.pages.client, workflow_id, act)

    async def _gate_for(self, request: Request, account: Account) -> tuple[RunStatus, GateState]:
        """The run and gate a URL names, if the account holds one of the gate's roles."""
        workflow_id = request.path_params["workflow_id"]
        gate_id = request.path_params["gate"]
        try:
            status = await run_status(self.pages.client, workflow_id)
        except LookupError as err:
            raise PageError(404, "No such run", str(err)) from None
        except NoWorkerError as err:
            raise PageError(503, "The run cannot answer now", str(err)) from None
        gate = next((g for g in status.gates if g.gate == gate_id), None)
        if gate is None:
            opened = ", ".join(g.gate for g in status.gates) or "none yet"
            raise PageError(
                404,
                "No such gate",
                f"run {workflow_id} has not opened a gate '{gate_id}' (gates opened: {opened})",
            )
        if not set(account.roles).intersection(gate.roles):
            raise PageError(
                403,
                "Not your gate",
                f"This gate is waiting for role(s) {', '.join(gate.roles)}; "
                f"you hold {', '.join(account.roles) or 'no roles'}.",
            )
        return status, gate

    def _editable_fields(self, status: RunStatus, gate: GateState) -> list[str]:
        """The fields an override may set: those of the output model the
        process lets this gate replace (none for a process this app does not
        know, or a gate that judges no AI output)."""
        process = PROCESSES.get(status.process)
        model = process.graph.editable_model(gate.gate) if process else None
        return list(model.model_fields) if model else []

    def _gate_page(
        self,
        request: Request,
        status: RunStatus,
        gate: GateState,
        feedback: Feedback = Feedback(),
        *,
        status_code: int = 200,
    ) -> Response:
        review = self._with_document_text(present.review_of(gate.shown))
        names = self._editable_fields(status, gate)
        process = PROCESSES.get(status.process)
        account = self.pages.account(request)
        assert account is not None
        may_stop = (
            process is not None
            and bool(set(account.roles) & set(process.graph.stop_roles))
            and status.state in ("running", "waiting")
        )
        return self.pages.render(
            request,
            "gate.html",
            status_code=status_code,
            status=status,
            gate=gate,
            review=review,
            clock=present.sla_clock(gate.due_at, datetime.now(UTC), holding=gate.holding),
            override=present.override_fields(names, review.output or {}, feedback.typed),
            overriding=feedback.typed is not None,
            field_prefix=FIELD_PREFIX,
            may_stop=may_stop,
            shown_digest=subject_digest(gate.shown, gate.edited_output),
            missing_passkey=passkeys.missing_passkey(
                self.pages.passkeys_of(account.user), request.url
            ),
            **dataclasses.asdict(feedback),
        )

    def _with_document_text(self, review: present.Review) -> present.Review:
        """The review with the text of the document it refers to, read from
        the document store: the run holds only the reference. Called only
        for a reviewer holding one of the gate's roles (see _gate_for)."""
        if review.document is not None or review.document_ref is None:
            return review
        try:
            ref = DocumentRef.model_validate(review.document_ref)
            # The process's store is looked up at each read: it follows
            # BATON_DOCUMENT_STORE and BATON_DATA_DIR as they are now.
            store = self.pages.documents or document_store()
            text, problem = decode_text(store.read(ref))
        except (ValidationError, DocumentError) as err:
            text, problem = "", f"the document cannot be shown: {err}"
        return dataclasses.replace(review, document=problem or text)


def review_routes(pages: Pages) -> list[Route]:
    review = ReviewPages(pages)
    return [
        Route("/", review.inbox, methods=["GET"]),
        Route(GATE, review.gate, methods=["GET"]),
        Route(f"{GATE}/decide/prepare", review.prepare_decision, methods=["POST"]),
        Route(f"{GATE}/decide", review.decide, methods=["POST"]),
        Route(f"{GATE}/stop/prepare", review.prepare_stop, methods=["POST"]),
        Route(f"{GATE}/stop", review.stop, methods=["POST"]),
    ]
