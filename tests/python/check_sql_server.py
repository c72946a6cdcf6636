"""Checks the paperclip SQL server with psycopg 3, as a Python analyst would use it.

Usage: check_sql_server.py PORT PASSWORD

psycopg sends parameters with the extended protocol (Parse, Bind, Execute), so the
parameterized query below is a prepared statement on the server. Exits non-zero with a
message on the first failed check.
"""

import datetime
import decimal
import sys

import psycopg

# Each expression with the Python value psycopg must decode it to, in text and in binary
# format alike.
TYPED_VALUES = [
    ("arrow_cast(-5, 'Int8')", -5),
    ("arrow_cast(70000, 'UInt32')", 70000),
    ("arrow_cast(1.5, 'Float16')", 1.5),
    ("TIMESTAMP '2024-01-02 03:04:05.123456'", datetime.datetime(2024, 1, 2, 3, 4, 5, 123456)),
    (
        "arrow_cast(TIMESTAMP '2024-01-02 03:04:05', 'Timestamp(Microsecond, Some(\"UTC\"))')",
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    ),
    ("DATE '2024-01-02'", datetime.date(2024, 1, 2)),
    ("make_array(0.25::real, -1.5::real)", [0.25, -1.5]),
    ("make_array('a', NULL, 'c')", ["a", None, "c"]),
    ("X'00ff10'", b"\x00\xff\x10"),
    ("map(['a'], [1])", "{a: 1}"),
    ("make_array(make_array(1, 2), make_array(3))", "[[1, 2], [3]]"),
    ("named_struct('a', NULL, 'b', 'x,y \"z\"')", '{a: , b: x,y "z"}'),
]


def main() -> None:
    port, password = int(sys.argv[1]), sys.argv[2]
    login = dict(
        host="127.0.0.1", port=port, user="analyst", dbname="datafusion", connect_timeout=10
    )
    with psycopg.connect(**login, password=password, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(
                'SELECT count(*) FROM "hst-paperclip".latest.samples WHERE proposal_id = %s',
                (90001,),
            )
            (count,) = cur.fetchone()
            assert count == 3, f"proposal 90001 has {count} samples, expected 3"

            # The same statement prepared once and run with several parameters.
            cur.execute(
                'SELECT count(*) FROM "hst-paperclip".latest.samples WHERE proposal_id = %s',
                (90002,),
                prepare=True,
            )
            assert cur.fetchone()[0] == 2

            cur.execute(
                'SELECT key, proposal_id, split FROM "hst-paperclip".v1.samples '
                "ORDER BY key LIMIT 2"
            )
            rows = cur.fetchall()
            assert len(rows) == 2, rows
            assert isinstance(rows[0][1], int), f"proposal_id came back as {type(rows[0][1])}"

            # A parameter keeps the type the client declares, whatever its neighbour's.
            cur.execute("SELECT 3 * %s", (decimal.Decimal("0.5"),), prepare=True)
            assert cur.fetchone()[0] == decimal.Decimal("1.5")
            cur.execute(
                'SELECT count(*) FROM "hst-paperclip".latest.samples WHERE sample_rank < %s',
                (2.5,),
                prepare=True,
            )
            (below,) = cur.fetchone()
            cur.execute(
                'SELECT count(*) FROM "hst-paperclip".latest.samples WHERE sample_rank <= 2'
            )
            assert below == cur.fetchone()[0], below

            cur.execute("SELECT started_at FROM paperclip.stages LIMIT 1")
            (started_at,) = cur.fetchone()
            assert isinstance(started_at, datetime.datetime), repr(started_at)

            for statement, error_class in [
                ("SELEC 1", psycopg.errors.SyntaxError),
                ("SELECT * FROM paperclip.nope", psycopg.errors.UndefinedTable),
                ("SELECT nope FROM paperclip.runs", psycopg.errors.UndefinedColumn),
            ]:
                try:
                    cur.execute(statement)
                except error_class:
                    pass
                else:
                    raise AssertionError(f"{statement} did not raise {error_class.__name__}")

            try:
                cur.execute("DELETE FROM paperclip.runs")
            except psycopg.errors.ReadOnlySqlTransaction as error:
                assert "read-only" in str(error), str(error)
            else:
                raise AssertionError("DELETE was accepted")

    with psycopg.connect(**login, password=password, autocommit=True) as conn:
        check_types(conn)
        check_statement_timeout(conn)
        check_pandas(conn)
    with psycopg.connect(**login, password=password) as conn:
        check_rollback_after_prepare(conn)

    try:
        psycopg.connect(**login, password="wrong")
    except psycopg.OperationalError as error:
        assert "authentication failed" in str(error), str(error)
    else:
        raise AssertionError("a wrong password was accepted")
    print("psycopg checks passed")


def check_types(conn: psycopg.Connection) -> None:
    """Decodes each of TYPED_VALUES in text and binary format, as a parameter-free query."""
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            for expression, expected in TYPED_VALUES:
                cur.execute(f"SELECT {expression} AS v")
                (value,) = cur.fetchone()
                assert value == expected, f"{expression} (binary={binary}): {value!r}"
            # Every column of the run log, maps and nested lists included.
            cur.execute("SELECT * FROM paperclip.runs")
            assert len(cur.fetchall()) == 1


def check_statement_timeout(conn: psycopg.Connection) -> None:
    """A client's statement_timeout stops a query that is still sending rows."""
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '1 s'")
        try:
            cur.execute("SELECT a.value FROM range(200000) a CROSS JOIN range(200000) b")
            cur.fetchall()
        except psycopg.errors.QueryCanceled as error:
            assert "statement timeout" in str(error), str(error)
        else:
            raise AssertionError("the query outlived its statement_timeout")
        cur.execute("SET statement_timeout = 0")
        try:
            cur.execute("SET statement_timeout = 'soon'")
        except psycopg.errors.InvalidParameterValue as error:
            assert "statement_timeout" in str(error), str(error)
        else:
            raise AssertionError("an invalid statement_timeout was accepted")


def check_rollback_after_prepare(conn: psycopg.Connection) -> None:
    """psycopg prepares a query it runs often and sends DEALLOCATE when it rolls back."""
    for _ in range(7):
        conn.execute("SELECT count(*) FROM paperclip.runs WHERE run_id <> %s", ("x",))
    conn.rollback()
    assert conn.execute("SELECT 1").fetchone() == (1,)


def check_pandas(conn: psycopg.Connection) -> None:
    """pandas reads a query into a data frame through the same connection."""
    import warnings

    import pandas

    with warnings.catch_warnings():
        # pandas prefers SQLAlchemy and warns about plain DB-API connections.
        warnings.simplefilter("ignore", UserWarning)
        frame = pandas.read_sql(
            "SELECT run_id, stage, started_at, elapsed_secs FROM paperclip.stages", conn
        )
    assert len(frame) == 5, frame
    assert str(frame["started_at"].dtype).startswith("datetime64"), frame.dtypes
    assert frame["elapsed_secs"].dtype == "float64", frame.dtypes


if __name__ == "__main__":
    main()
