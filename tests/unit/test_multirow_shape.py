"""Which single-row INSERTs engine/_multirow.py rewrites as multi-row ones,
the statements it writes, and the pieces a run goes out in (pure logic: the
rewritten statements meet Postgres in test_engine_multirow.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from psycopg import sql

from engine._multirow import MAX_PARAMS, MAX_ROWS, Shape, _shape, pieces, shape

# -- shape(): what qualifies ----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "table", "names", "two_rows"),
    [
        (
            "INSERT INTO t (a, b) VALUES (%s, %s)",
            "t",
            None,
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)",
        ),
        (
            "INSERT INTO public.events (workflow_id, key) VALUES (%s, %s)",
            "public.events",
            None,
            "INSERT INTO public.events (workflow_id, key) VALUES ($1, $2), ($3, $4)",
        ),
        (
            'INSERT INTO "My ""Schema"""."a table" ("the ""a""", b) VALUES (%s, %s)',
            '"My ""Schema"""."a table"',
            None,
            'INSERT INTO "My ""Schema"""."a table" ("the ""a""", b) VALUES ($1, $2), ($3, $4)',
        ),
        (
            "INSERT INTO t VALUES (%s)",
            "t",
            None,
            "INSERT INTO t VALUES ($1), ($2)",
        ),
        (
            "INSERT INTO t (a, b) VALUES (%(a)s, %(b)s)",
            "t",
            ("a", "b"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)",
        ),
        (
            "INSERT INTO t (a, b, c) VALUES (%t, %t, %s)",
            "t",
            None,
            "INSERT INTO t (a, b, c) VALUES ($1, $2, $3), ($4, $5, $6)",
        ),
        (
            "INSERT INTO t (a, b, c) VALUES (%s::int, %s :: text[], %s::jsonb)",
            "t",
            None,
            "INSERT INTO t (a, b, c) VALUES ($1::int, $2 :: text[], $3::jsonb),"
            " ($4::int, $5 :: text[], $6::jsonb)",
        ),
        (
            "INSERT INTO t (a, b) VALUES (%(x)s::bigint, %(y)t::TEXT [ ])",
            "t",
            ("x", "y"),
            "INSERT INTO t (a, b) VALUES ($1::bigint, $2::TEXT [ ]), ($3::bigint, $4::TEXT [ ])",
        ),
        (
            "INSERT INTO t (a, b, c, d, e, f, g) VALUES (%s, 1, 2.5, NULL, TRUE, false, DEFAULT)",
            "t",
            None,
            "INSERT INTO t (a, b, c, d, e, f, g) VALUES ($1, 1, 2.5, NULL, TRUE, false, DEFAULT),"
            " ($2, 1, 2.5, NULL, TRUE, false, DEFAULT)",
        ),
        (
            "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING",
            "t",
            None,
            "INSERT INTO t (a) VALUES ($1), ($2) ON CONFLICT DO NOTHING",
        ),
        (
            "INSERT INTO t (a, b) VALUES (%s, %s) ON CONFLICT (a, b) DO NOTHING",
            "t",
            None,
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT (a, b) DO NOTHING",
        ),
        (
            "INSERT INTO t (a) VALUES (%s);",
            "t",
            None,
            "INSERT INTO t (a) VALUES ($1), ($2)",
        ),
        (
            "\n  insert into s.t(a)values(%s) on conflict(a) do nothing ;\n",
            "s.t",
            None,
            "\n  insert into s.t(a)values ($1), ($2) on conflict(a) do nothing",
        ),
    ],
)
def test_a_qualifying_insert_is_written_for_many_rows(
    query: str, table: str, names: tuple[str, ...] | None, two_rows: str
) -> None:
    found = shape(query)

    assert found is not None
    assert found.table == table
    assert found.names == names
    assert found.width == two_rows.count("$") // 2
    assert found.query(2) == two_rows


def test_a_bytes_query_qualifies_like_its_text() -> None:
    text = "INSERT INTO t (a, b) VALUES (%s, %s)"

    assert shape(text.encode()) == shape(text)
    assert shape(text.encode()) is not None
    assert shape(b"INSERT INTO t (a) VALUES (%s) \xff") is None  # not UTF-8


def test_only_text_qualifies() -> None:
    # A Composable is made text by the caller (DeferringConnection), which
    # needs a connection to do it.
    assert shape(sql.SQL("INSERT INTO t (a) VALUES (%s)")) is None
    assert shape(None) is None


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO t (a) VALUES (%s) RETURNING a",
        "INSERT INTO t (a) VALUES (%s) RETURNING *",
        "INSERT INTO t (a) VALUES (%s) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a",
        "INSERT INTO t (a) VALUES (%s) ON CONFLICT ON CONSTRAINT t_pkey DO NOTHING",
        "INSERT INTO t (a) VALUES ((SELECT max(a) FROM t))",
        "INSERT INTO t (a, b) VALUES (%s, (SELECT max(b) FROM t))",
        "INSERT INTO t (a) SELECT %s",
        "INSERT INTO t (a, b) VALUES (%s, now())",
        "INSERT INTO t (a, b) VALUES (%s, nextval(%s))",
        "INSERT INTO t (a, b) VALUES (%s, 'x')",
        "INSERT INTO t (a, b) VALUES (%s, $$x$$)",
        "INSERT INTO t (a, b) VALUES (%s, E'x')",
        "INSERT INTO t (a) VALUES (%s) -- a comment",
        "INSERT INTO t (a) VALUES (%s /* a comment */)",
        "INSERT INTO t (a) VALUES (%s); INSERT INTO t (a) VALUES (%s)",
        "INSERT INTO t (a) VALUES (%s); DELETE FROM t",
        "INSERT INTO t (a) VALUES (%s), (%s)",
        "INSERT INTO t (a, b) VALUES (%(a)s, %s)",
        "INSERT INTO t (a, b) VALUES (1, 2)",
        "INSERT INTO t (a) VALUES (DEFAULT)",
        "INSERT INTO t DEFAULT VALUES",
        "INSERT INTO t (a) VALUES (%s + 1)",
        "INSERT INTO t (a) VALUES (-%s)",
        "INSERT INTO t (a) VALUES (%s::varchar(10))",
        "INSERT INTO t (a) VALUES (%s::double precision)",
        'INSERT INTO t (a) VALUES (%s::"MyType")',
        "INSERT INTO t (a) VALUES (%(a b)s)",
        "INSERT INTO t (a) OVERRIDING SYSTEM VALUE VALUES (%s)",
        "INSERT INTO t AS x (a) VALUES (%s)",
        "INSERT INTO d.s.t (a) VALUES (%s)",
        "WITH x AS (SELECT 1) INSERT INTO t (a) VALUES (%s)",
        "UPDATE t SET a = %s",
        "SELECT %s",
        "",
    ],
)
def test_anything_else_does_not_qualify(query: str) -> None:
    assert shape(query) is None


# -- Shape.query() and Shape.flat() ----------------------------------------------


def test_rows_are_numbered_in_order() -> None:
    found = shape("INSERT INTO t (a, b, c) VALUES (%s, DEFAULT, %s::int)")
    assert found is not None

    assert found.query(3) == (
        "INSERT INTO t (a, b, c) VALUES ($1, DEFAULT, $2::int), ($3, DEFAULT, $4::int),"
        " ($5, DEFAULT, $6::int)"
    )
    big = found.query(MAX_ROWS)
    assert big.count("$") == 2 * MAX_ROWS
    assert big.endswith(f"(${2 * MAX_ROWS - 1}, DEFAULT, ${2 * MAX_ROWS}::int)")


def test_positional_parameters_are_flattened_row_by_row() -> None:
    found = shape("INSERT INTO t (a, b) VALUES (%s, %s)")
    assert found is not None

    assert found.flat([(1, "a"), (2, "b"), [3, None]]) == [1, "a", 2, "b", 3, None]
    assert found.flat([]) == []


def test_named_parameters_are_taken_in_the_statements_order() -> None:
    found = shape("INSERT INTO t (a, b, c) VALUES (%(z)s, %(a)s, %(z)s)")
    assert found is not None
    assert found.names == ("z", "a", "z")

    rows = [{"a": 1, "z": "one", "unused": 0}, {"z": "two", "a": 2}]
    assert found.flat(rows) == ["one", 1, "one", "two", 2, "two"]
    assert found.query(1) == "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)"


@pytest.mark.parametrize("row", [(1,), (1, 2, 3), {"a": 1, "b": 2}], ids=str)
def test_positional_rows_that_do_not_fit_raise_value_error(row: Any) -> None:
    found = shape("INSERT INTO t (a, b) VALUES (%s, %s)")
    assert found is not None

    with pytest.raises(ValueError):
        found.flat([(1, 2), row])


def test_named_rows_must_be_mappings_with_every_name() -> None:
    found = shape("INSERT INTO t (a, b) VALUES (%(a)s, %(b)s)")
    assert found is not None

    with pytest.raises(ValueError):
        found.flat([{"a": 1, "b": 2}, (1, 2)])
    with pytest.raises(KeyError):  # DeferringConnection sends these unbatched too
        found.flat([{"a": 1}])


# -- pieces() ----------------------------------------------------------------------


def _sizes(rows: int, width: int) -> list[int]:
    return [size for _, size in pieces(rows, width)]


def test_pieces_cover_the_rows_in_powers_of_two_largest_first() -> None:
    for width in (1, 2, 7, 100, 511, 512, 600, 5_000, MAX_PARAMS):
        for rows in (*range(20), 63, 64, 65, 100, 127, 128, 129, 300, 1_000):
            got = list(pieces(rows, width))

            sizes = [size for _, size in got]
            assert sum(sizes) == rows, (rows, width)
            assert [start for start, _ in got] == [sum(sizes[:i]) for i in range(len(got))]
            assert all(size > 0 and size & (size - 1) == 0 for size in sizes), (rows, width)
            assert sizes == sorted(sizes, reverse=True), (rows, width)
            assert all(size <= MAX_ROWS and size * width <= MAX_PARAMS for size in sizes)


def test_pieces_are_as_few_as_the_limits_allow() -> None:
    assert _sizes(100, 2) == [64, 32, 4]
    assert _sizes(MAX_ROWS, 1) == [MAX_ROWS]
    assert _sizes(3 * MAX_ROWS + 1, 1) == [MAX_ROWS] * 3 + [1]
    # 520 parameters a row: 126 rows would fit, so 64 go together, never 128.
    assert _sizes(130, 520) == [64, 64, 2]
    assert _sizes(5, MAX_PARAMS) == [1] * 5
    assert _sizes(0, 3) == []


# -- Known bugs (reported, not fixed here) ---------------------------------------


def test_a_statement_that_does_not_qualify_is_told_apart_quickly() -> None:
    # Two 11-character column names and RETURNING: about a second (2^20
    # backtracking steps); each further character doubles it.
    query = "INSERT INTO orders (customer_id, order_total) VALUES (%s, %s) RETURNING id"
    _shape.cache_clear()
    started = time.perf_counter()

    assert shape(query) is None
    assert time.perf_counter() - started < 0.1


def test_a_percent_in_a_quoted_name_means_what_psycopg_makes_of_it() -> None:
    found = shape('INSERT INTO "100%%" (a) VALUES (%s)')

    assert found is None or (
        found.table == '"100%"' and found.query(2).startswith('INSERT INTO "100%" (a)')
    )


def test_the_shape_of_a_statement_is_worked_out_once() -> None:
    _shape.cache_clear()
    query = "INSERT INTO t (a) VALUES (%s)"
    first = shape(query)

    assert isinstance(first, Shape)
    assert shape(query) is first
    assert _shape.cache_info().hits == 1
