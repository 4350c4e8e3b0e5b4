"""What a call of a decorated step or transaction does: the wrappers that
Engine.step and Engine.transaction put around the user's function."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._context import _workflow
from ._inline import run_step as run_inline_step
from ._registry import StepSpec
from ._runner import call_step, call_transaction

if TYPE_CHECKING:
    from ._engine import Engine

P = ParamSpec("P")
R = TypeVar("R")


def step_wrapper(spec: StepSpec, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        # A step of an inline run, the commonest call, goes straight
        # to it (call_step decides the same, one call further down).
        ctx = _workflow.get()
        if ctx is not None and ctx.inline is not None and not ctx.step:
            number = ctx.next_step
            ctx.next_step = number + 1
            return run_inline_step(ctx, number, spec, args, kwargs)  # type: ignore[no-any-return]
        return call_step(spec, args, kwargs)  # type: ignore[no-any-return]

    return run


def transaction_wrapper(
    engine: Engine, spec: StepSpec, fn: Callable[..., Any]
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return call_transaction(engine, spec, args, kwargs)

    return run
