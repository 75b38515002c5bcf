"""One model turn of an Agent: the transcript so far in, either tool calls or
a final answer out.

The workflow keeps the transcript and runs the tools; a provider only turns
one request into one answer (``agent_turn`` activity, activities/agent.py).
The model gives its final answer by calling :data:`FINAL_ANSWER`, a tool
whose parameters are the output schema (a reply of plain JSON text is read
as a final answer too). Pure models: the workflow imports this module.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from baton.llm import ModelRequest, Served
from baton.tools import ToolSpec

FINAL_ANSWER = "final_answer"


class ToolCall(BaseModel):
    """A call the model asked for. ``arguments`` is what it sent, parsed;
    ``arguments_error`` says why it could not be parsed (then it is {})."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    arguments_error: str = ""


class TurnMessage(BaseModel):
    """One entry of an Agent's transcript after the task itself: a model
    turn (``assistant``: its text and tool calls), a tool's result
    (``tool``: the call it answers, its content as JSON text), or Baton
    telling the model why its answer was refused (``user``)."""

    role: Literal["assistant", "tool", "user"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str = ""
    name: str = Field(default="", description="The tool a `tool` message answers for")
    is_error: bool = False


class TurnRequest(ModelRequest):
    """One model turn of an Agent: the transcript so far and the tools."""

    messages: list[TurnMessage] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)

    def specs(self) -> list[ToolSpec]:
        """The tools the model is shown: the node's, then the answer."""
        answer = ToolSpec(
            name=FINAL_ANSWER,
            description=f"Give the final answer to the task '{self.task}'.",
            parameters=self.output_schema,
        )
        return [*self.tools, answer]

    def system_prompt(self) -> str:
        """What every provider tells the model before the transcript."""
        parts = [
            f"You are working on the task '{self.task}'.",
            self.instructions,
            "Call the tools you need, then give your answer by calling "
            f"'{FINAL_ANSWER}' with arguments that fit its schema.",
        ]
        return "\n\n".join(p for p in parts if p)

    def task_message(self) -> str:
        """The transcript's first user message: the inputs of the task."""
        return "Inputs:\n" + json.dumps(self.inputs, indent=2, sort_keys=True, default=str)


class TurnAnswer(BaseModel):
    """What the model did with its turn: called tools, or answered
    (``output``, with ``format_errors`` when the reply was not a JSON object)."""

    tool_calls: list[ToolCall] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    format_errors: list[str] = Field(default_factory=list)
    text: str = Field(default="", description="What the model said besides its calls")
    provider: str
    model: str
    response_id: str = ""
    finish_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


def parse_arguments(raw: str | dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """A tool call's arguments as the wire carried them -> (object, error)."""
    if isinstance(raw, dict):
        return raw, ""
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as err:
        return {}, f"the arguments are not valid JSON ({err.msg} at {err.pos}): {raw!r:.200}"
    if not isinstance(value, dict):
        return {}, f"the arguments must be a JSON object, not {type(value).__name__}"
    return value, ""


def turn_answer(calls: list[ToolCall], text: str, served: Served) -> TurnAnswer:
    """A provider's reply as a turn: the tools it called, or its answer,
    given by calling the answer tool or, without any call, as JSON text."""
    calls, output, errors = read_final(calls)
    if not calls and output is None:
        output, errors = read_text_answer(text)
    return TurnAnswer(tool_calls=calls, output=output, format_errors=errors, text=text, **served)


def read_final(calls: list[ToolCall]) -> tuple[list[ToolCall], dict[str, Any] | None, list[str]]:
    """Split a turn's calls into the tool calls and the final answer, if the
    model gave one: (tool calls, output, format errors)."""
    final = [c for c in calls if c.name == FINAL_ANSWER]
    rest = [c for c in calls if c.name != FINAL_ANSWER]
    if not final or rest:
        return calls, None, []
    call = final[0]
    return [], call.arguments, [call.arguments_error] if call.arguments_error else []


def read_text_answer(text: str) -> tuple[dict[str, Any] | None, list[str]]:
    """A reply without tool calls read as a final answer in JSON text."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    output, error = parse_arguments(stripped or None)
    if error or not stripped:
        return {}, [
            f"no tool call and no JSON answer: call '{FINAL_ANSWER}' to answer"
            + (f" ({error})" if stripped else "")
        ]
    return output, []
