"""Decorated workflows, steps and transactions, registered on one Engine."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ._errors import ConfigurationError, UnknownWorkflowError
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._engine import Engine

P = ParamSpec("P")
R = TypeVar("R")


def default_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


class Workflow(Generic[P, R]):
    """A registered workflow. Call it to run it durably and wait for its result;
    `Engine.start` to run it under an ID of your choice without waiting."""

    def __init__(self, engine: Engine, fn: Callable[P, R], name: str) -> None:
        self.engine = engine
        self.fn = fn
        self.name = name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        from ._context import current

        if current() is not None:
            # Called from another workflow: its steps become the caller's steps.
            return self.fn(*args, **kwargs)
        return self.engine.start(self, *args, **kwargs).result()

    def __repr__(self) -> str:
        return f"<onceflow workflow {self.name}>"


@dataclass(frozen=True)
class StepSpec:
    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy
    transactional: bool


class Registry:
    """Workflows by name. One per Engine: two engines never see each other's."""

    def __init__(self) -> None:
        self._workflows: dict[str, Workflow[Any, Any]] = {}
        self._step_names: set[str] = set()

    def add_workflow(self, wf: Workflow[Any, Any]) -> None:
        existing = self._workflows.get(wf.name)
        if existing is not None and existing.fn is not wf.fn:
            raise ConfigurationError(
                f"two workflows are named {wf.name!r}; give one another name with "
                "@engine.workflow(name=...)"
            )
        self._workflows[wf.name] = wf

    def workflow(self, name: str) -> Workflow[Any, Any]:
        try:
            return self._workflows[name]
        except KeyError:
            raise UnknownWorkflowError(name) from None

    def knows(self, name: str) -> bool:
        return name in self._workflows

    def names(self) -> list[str]:
        return sorted(self._workflows)
