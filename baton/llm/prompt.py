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
PROMPT_TEMPLATE = 2
# Enough to see what went wrong with a reply; a degenerate one ran to 3,695
# tokens, which history, the trail and the repair prompt need not carry.
RAW_REPLY_LIMIT = 4000
# How OpenAI(-compatible) servers and Anthropic say a reply hit max_tokens.
CUT_REASONS = frozenset({"length", "max_tokens"})
# A decimal in a string as the validator reads it, so that the grammar of a
# constrained decoder refuses "€ 3,664.50" instead of the validator. Digits
# are bounded: under an unbounded pattern a small model wrote "1000000…"
# until the token limit (tests/test_real_model.py).
DECIMAL_PATTERN = r"^-?[0-9]{1,15}(\.[0-9]{1,8})?$"


def prompt_version(instructions: str, output_schema: dict[str, Any]) -> str:
    """The version of what a task asks: the template, the node's instructions
    and the schema of its answer, digested (recorded in `ai.inference`)."""
    asked = json.dumps(
        {"template": PROMPT_TEMPLATE, "instructions": instructions, "schema": output_schema},
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{PROMPT_TEMPLATE}.{hashlib.sha256(asked.encode()).hexdigest()[:12]}"


def bounded_reply(reply: str) -> str:
    if len(reply) <= RAW_REPLY_LIMIT:
        return reply
    return f"{reply[:RAW_REPLY_LIMIT]}… [cut here: the reply had {len(reply)} characters]"


def _strict(schema: Any) -> Any:
    """``schema`` as strict as pydantic's validation of it: no properties
    but the declared ones, every property required (an optional one is
    nullable, so the model says null), decimals in strings as digits only,
    and no defaults, which a model must not lean on."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "default":
            continue
        if key in ("properties", "$defs"):
            strict[key] = {name: _strict(sub) for name, sub in value.items()}
        else:
            strict[key] = _strict(value)
    any_of = strict.get("anyOf")
    if isinstance(any_of, list) and {"type": "number"} in any_of:
        # Pydantic's Decimal: a number, or any string it then may refuse.
        strict["anyOf"] = [
            {"type": "string", "pattern": DECIMAL_PATTERN} if s == {"type": "string"} else s
            for s in any_of
        ]
    if strict.get("type") == "object" and "properties" in strict:
        strict["additionalProperties"] = False
        strict["required"] = list(strict["properties"])
    return strict


def answer_schema(output_schema: dict[str, Any]) -> dict[str, Any]:
    """The output schema, made strict, wrapped with a self-reported
    confidence. Pydantic's shared definitions move to the top so their
    `#/$defs/...` references still resolve."""
    schema = _strict(output_schema)
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
    repair_errors = request.repair_errors
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
            # As written: a cut or malformed reply parses to nothing.
            request.previous_reply or json.dumps(request.previous_output, ensure_ascii=False),
            "Correct it.",
        ]
    return system, "\n\n".join(p for p in parts if p)


def read_reply(
    reply: str | dict[str, Any], *, finish_reason: str, max_tokens: int
) -> tuple[dict[str, Any], float | None, list[str]]:
    """(answer, self-reported confidence, format errors) from a model's reply.
    A reply cut at the token limit is refused as such even when it parses:
    the tool input of a cut Anthropic reply is a partial object."""
    if finish_reason in CUT_REASONS:
        return {}, None, [f"the reply was cut at the token limit ({max_tokens} tokens)"]
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
