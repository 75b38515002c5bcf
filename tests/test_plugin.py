"""BatonPlugin's sandbox answers the SDK's serialization-context lookups
itself only where the worker's data converter ignores them: Baton's own
encrypted converter does, a codec that keys by workflow or activity does not
and keeps being told each payload's context."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from baton.plugin import BatonPlugin, BatonSandbox, context_free
from tests.conftest import DATA_CONVERTER
from tests.strict_sandbox_process import echo
from tests.test_strict_sandbox import AS_A_PROCESS_UNDER_WORKFLOWS, start_probe, worker
from worker import WORKFLOWS, build_replayer, build_worker


@dataclasses.dataclass
class ContextRecordingCodec(PayloadCodec, WithSerializationContext):
    """A codec that would key by context, as a per-tenant key would: it
    notes the context of every payload it encodes (None: given none)."""

    seen: list[SerializationContext | None] = dataclasses.field(default_factory=list)
    context: SerializationContext | None = None

    def with_context(self, context: SerializationContext) -> ContextRecordingCodec:
        return dataclasses.replace(self, context=context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.seen.extend(self.context for _ in payloads)
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def recording_converter(codec: ContextRecordingCodec) -> DataConverter:
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


def with_converter(client: Client, converter: DataConverter) -> Client:
    config = client.config()
    config["data_converter"] = converter
    return Client(**config)


def test_batons_converters_take_no_serialization_context() -> None:
    assert context_free(DATA_CONVERTER)
    assert context_free(pydantic_data_converter)
    assert not context_free(recording_converter(ContextRecordingCodec()))


async def test_a_baton_worker_answers_context_lookups_itself_only_for_a_context_free_converter(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    baton_client = time_skipping_env.client
    keyed_client = with_converter(baton_client, recording_converter(ContextRecordingCodec()))
    for client, answers_itself in ((baton_client, True), (keyed_client, False)):
        worker = build_worker(client, task_queue=f"unused-{uuid.uuid4().hex[:6]}")
        runner = worker.config(active_config=True)["workflow_runner"]
        assert isinstance(runner, BatonSandbox)
        assert runner.context_free is answers_itself
    replayer_runner = build_replayer(DATA_CONVERTER).config(active_config=True)["workflow_runner"]
    assert isinstance(replayer_runner, BatonSandbox) and replayer_runner.context_free
    keyed = recording_converter(ContextRecordingCodec())
    keyed_replayer = Replayer(workflows=[], plugins=[BatonPlugin(WORKFLOWS, data_converter=keyed)])
    keyed_runner = keyed_replayer.config(active_config=True)["workflow_runner"]
    assert isinstance(keyed_runner, BatonSandbox) and not keyed_runner.context_free


async def test_a_codec_that_takes_context_is_given_each_activitys_context(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    codec = ContextRecordingCodec()
    client = with_converter(time_skipping_env.client, recording_converter(codec))
    queue = f"context-{uuid.uuid4().hex[:6]}"
    async with worker(client, queue, AS_A_PROCESS_UNDER_WORKFLOWS):
        result = await (await start_probe(client, queue)).result()
    assert result.path == ["first", "second"]
    # Had the worker answered the lookups itself, the workflow's side would
    # have encoded with no context: each step's arguments, its commands, its result.
    assert None not in codec.seen
    echo_name = getattr(echo, "__temporal_activity_definition").name
    by_activity = [
        c
        for c in codec.seen
        if isinstance(c, ActivitySerializationContext) and c.activity_type == echo_name
    ]
    # Each step: its arguments, encoded by the workflow, and its result, by the activity.
    assert len(by_activity) == 4
