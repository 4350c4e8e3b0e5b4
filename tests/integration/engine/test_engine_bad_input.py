"""Bad input and bad configuration: one clear error that says what to do."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

import engine


class Opaque:
    """Not JSON, not a pydantic model, not bytes."""


@pytest.mark.parametrize("bad", [Opaque(), "nul \x00 inside"], ids=["object", "nul-character"])
def test_argument_that_cannot_be_stored_is_refused_at_start(engine_factory: Any, bad: Any) -> None:
    eng = engine_factory()

    @eng.workflow()
    def wf(value: Any) -> Any:
        return value

    eng.launch()
    with pytest.raises(engine.SerializationError, match="the input of") as caught:
        eng.start(wf, bad, workflow_id="bad")

    assert "cannot be stored" in str(caught.value) or "cannot store" in str(caught.value)
    with pytest.raises(engine.WorkflowNotFoundError):
        eng.get_workflow("bad")
    assert eng.list_workflows() == []


@pytest.mark.parametrize("bad", [Opaque(), "nul \x00 inside"], ids=["object", "nul-character"])
def test_result_that_cannot_be_stored_ends_the_workflow_in_error(
    engine_factory: Any, bad: Any
) -> None:
    eng = engine_factory()

    @eng.step(name="fine")
    def fine() -> str:
        return "fine"

    @eng.step(name="returns_bad")
    def returns_bad() -> Any:
        return bad

    @eng.workflow(name="bad_result")
    def bad_result() -> Any:
        fine()
        return bad

    @eng.workflow(name="bad_step")
    def bad_step() -> Any:
        return returns_bad()

    @eng.workflow(name="healthy")
    def healthy() -> str:
        return fine()

    eng.launch()
    handles = [eng.start(wf, workflow_id=wf.name) for wf in (bad_result, bad_step, healthy)]
    assert handles[2].result(timeout=10) == "fine"  # a bad neighbour harms no other workflow
    for handle, what in zip(
        handles, ["the result of workflow", "the result of step"], strict=False
    ):
        with pytest.raises(engine.WorkflowFailedError) as caught:
            handle.result(timeout=10)
        assert caught.value.error["type"] == "engine._errors.SerializationError"
        assert what in caught.value.error["message"]
        status = eng.get_workflow(handle.workflow_id)
        assert (status.status, status.output) == (engine.Status.ERROR, None)

    assert [(s.name, s.output, s.error) for s in eng.get_steps("bad_result")] == [
        ("fine", "fine", None)
    ]
    (step,) = eng.get_steps("bad_step")  # recorded as failed, with no output
    assert step.output is None and step.error is not None
    assert step.error["type"] == "engine._errors.SerializationError"


def test_error_message_holding_a_nul_is_still_recorded(engine_factory: Any) -> None:
    eng = engine_factory()

    @eng.workflow()
    def wf() -> None:
        raise ValueError("bad byte \x00 here")

    eng.launch()
    with pytest.raises(engine.WorkflowFailedError) as caught:
        eng.start(wf, workflow_id="wf").result(timeout=10)
    assert caught.value.error["message"] == "bad byte \\x00 here"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_missing_database(database_url: str) -> None:
    url = make_conninfo(database_url, dbname="onceflow_no_such_database")
    for attempt in (lambda: engine.Engine(url).launch(), lambda: engine.migrate_database(url)):
        with pytest.raises(engine.DatabaseUnavailableError) as caught:
            attempt()
        assert "onceflow_no_such_database" in str(caught.value)
        assert "does not exist" in str(caught.value) and "createdb" in str(caught.value)


def test_unreachable_server_and_password_kept_out_of_the_message() -> None:
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/db"
    for attempt in (lambda: engine.Engine(url).launch(), lambda: engine.migrate_database(url)):
        with pytest.raises(engine.DatabaseUnavailableError) as caught:
            attempt()
        message = str(caught.value)
        assert "cannot reach Postgres" in message and "check that the server is running" in message
        assert "s3cret" not in message


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"database_url": "not a url"}, "expected postgresql://user:password@host:port/dbname"),
        ({"database_url": None}, "set ONCEFLOW_DATABASE_URL"),
        (
            {"database_url": "postgresql://h/db", "lease": 1, "heartbeat": 2},
            "must be shorter than lease",
        ),
        ({"database_url": "postgresql://h/db", "workers": 0}, "workers"),
        ({"database_url": "postgresql://h/db", "schema": "Bad-Name"}, "ONCEFLOW_SCHEMA.*pattern"),
    ],
    ids=["not-a-url", "no-url", "heartbeat-over-lease", "no-workers", "bad-schema"],
)
def test_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], says: str
) -> None:
    monkeypatch.delenv("ONCEFLOW_DATABASE_URL", raising=False)
    url = settings.pop("database_url")
    with pytest.raises(engine.ConfigurationError, match=says):
        engine.Engine(url, **settings)
