"""Tools: activities a model may call, and a task's routing may try before
any model.

A tool is an ``async def`` taking one pydantic model and returning one,
decorated with :func:`tool`: that makes it a Temporal activity (named after
the function unless ``name=`` says otherwise) and attaches its
:class:`ToolSpec`, what a model is told about it. Processes hand the
decorated functions to ``Agent(tools=...)`` or ``Ask(tools=...)``; each call
is one activity execution in the run's history and one ``tool.call`` audit
event.

    class Lookup(BaseModel):
        customer_id: str

    @tool(description="The customer's contract as the CRM holds it")
    async def read_contract(args: Lookup) -> Contract: ...

A tool whose ``side_effects`` is true writes to the world: an Agent opens a
gate before each call of it, and the call runs only once a person approved.
A tool that cannot answer (a tool tier's lookup that found nothing) returns
None (declare ``-> Result | None``) or raises :class:`CannotAnswer`.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

A = TypeVar("A", bound=BaseModel, contravariant=True)
R = TypeVar("R", bound=BaseModel, covariant=True)

CANNOT_ANSWER = "CannotAnswer"


class ToolSpec(BaseModel):
    """What a model is told about a tool: its name (the activity's), what it
    does, and the JSON schema of its arguments."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]
    side_effects: bool = False


class Tool(Protocol, Generic[A, R]):
    """A function decorated with :func:`tool`."""

    spec: ToolSpec
    __name__: str

    def __call__(self, args: A, /) -> Awaitable[R]: ...


class CannotAnswer(ApplicationError):
    """What a tool raises when it has no answer for these arguments (a lookup
    that found nothing): a tool tier passes on to the models, an Agent's
    model is told why. Not retried."""

    def __init__(self, why: str) -> None:
        super().__init__(why, type=CANNOT_ANSWER, non_retryable=True)


def tool(
    *, description: str, side_effects: bool = False, name: str | None = None
) -> Callable[[Callable[[Any], Awaitable[Any]]], Tool[Any, Any]]:
    """Make ``async def f(args: ArgsModel) -> ResultModel`` a tool: a
    Temporal activity named ``name`` (default: the function's name) with
    ``f.spec``. Fails at import when ``f`` is not one model in, one out."""

    def make(fn: Callable[[Any], Awaitable[Any]]) -> Tool[Any, Any]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"tool {fn.__name__}: must be an async def")
        args, _ = tool_models(fn)
        defined = activity.defn(name=name or fn.__name__)(fn)
        spec = ToolSpec(
            name=name or fn.__name__,
            description=description,
            parameters=args.model_json_schema(),
            side_effects=side_effects,
        )
        defined.spec = spec  # type: ignore[attr-defined]
        return typing.cast(Tool[Any, Any], defined)

    return make


def spec_of(fn: Callable[..., Any]) -> ToolSpec:
    """The spec :func:`tool` attached to ``fn``; a TypeError naming the
    function when it is not a tool."""
    spec = getattr(fn, "spec", None)
    if not isinstance(spec, ToolSpec):
        raise TypeError(
            f"{getattr(fn, '__name__', fn)!r} is not a tool: decorate it with "
            "@baton.tools.tool(description=...)"
        )
    return spec


# Cached: the workflow validates arguments against a tool's models on every call.
@functools.cache
def tool_models(fn: Callable[..., Any]) -> tuple[type[BaseModel], type[BaseModel]]:
    """(arguments model, result model) of a tool function."""
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters)
    arg = hints.get(params[0]) if len(params) == 1 else None
    ret = _without_none(hints.get("return"))
    if not (_is_model(arg) and _is_model(ret)):
        raise TypeError(
            f"tool {getattr(fn, '__name__', fn)}: must take one pydantic model and return one "
            "(one model in, one out)"
        )
    return arg, ret


def _without_none(annotation: Any) -> Any:
    """``Result | None`` -> ``Result``: a tool may answer nothing."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _is_model(value: Any) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(value, type) and issubclass(value, BaseModel)
