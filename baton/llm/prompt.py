"""What every model is asked, and how its reply is read: one place, so all
providers put the same question and judge replies the same way."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from baton.llm import AskRequest

CONFIDENCE_FIELD = "confidence"
ANSWER_FIELD = "answer"
# Raised whenever `prompt` or `answer_schema` words the question differently, so
# that the trail tells answers to one wording from answers to another.
PROMPT_TEMPLATE = 1


def prompt_version(instructions: str, output_schema: dict[str, Any]) -> str:
    """The version of what a task asks: the template, the node's instructions
    and the schema of its answer, digested (recorded in `ai.inference`)."""
    asked = json.dumps(
        {"template": PROMPT_TEMPLATE, "instructions": instructions, "schema": output_schema},
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{PROMPT_TEMPLATE}.{hashlib.sha256(asked.encode()).hexdigest()[:12]}"


def answer_schema(output_schema: dict[str, Any]) -> dict[str, Any]:
    """The output schema wrapped with a self-reported confidence. Pydantic's
    shared definitions move to the top so their `#/$defs/...` references
    still resolve."""
    schema = dict(output_schema)
    defs = schema.pop("$defs", None)
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {
            ANSWER_FIELD: schema,
            CONFIDENCE_FIELD: {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "How sure you are that the answer is right, from 0 to 1.",
            },
        },
        "required": [ANSWER_FIELD, CONFIDENCE_FIELD],
        "additionalProperties": False,
    }
    if defs:
        wrapped["$defs"] = defs
    return wrapped


def prompt(request: AskRequest) -> tuple[str, str]:
    """The system and user messages for one attempt."""
    task, instructions, inputs = request.task, request.instructions, request.inputs
    repair_errors, previous_output = request.repair_errors, request.previous_output
    system = (
        f"You perform the task '{task}' inside an audited business workflow. "
        "Reply only with a JSON object matching the given schema: the answer, and your "
        "honest confidence from 0 to 1. Report only what the input states; leave a field "
        "null rather than guess."
    )
    parts = [instructions.strip(), "Input:", json.dumps(inputs, ensure_ascii=False, indent=1)]
    if repair_errors:
        parts += [
            "Your previous answer was refused for these reasons:",
            *[f"- {error}" for error in repair_errors],
            "Previous answer:",
            json.dumps(previous_output, ensure_ascii=False),
            "Correct it.",
        ]
    return system, "\n\n".join(p for p in parts if p)


def read_reply(reply: str | dict[str, Any]) -> tuple[dict[str, Any], float | None, list[str]]:
    """(answer, self-reported confidence, format errors) from a model's reply."""
    if isinstance(reply, str):
        try:
            reply = json.loads(reply)
        except json.JSONDecodeError as err:
            return {}, None, [f"the reply is not valid JSON ({err.msg} at char {err.pos})"]
    if not isinstance(reply, dict):
        return {}, None, [f"the reply is a JSON {type(reply).__name__}, not an object"]
    answer = reply.get(ANSWER_FIELD)
    if not isinstance(answer, dict):
        return {}, None, [f"the reply has no '{ANSWER_FIELD}' object"]
    confidence = reply.get(CONFIDENCE_FIELD)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return answer, None, []
    return answer, min(1.0, max(0.0, float(confidence))), []
