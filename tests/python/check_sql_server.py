"""Checks the paperclip SQL server with psycopg 3, as a Python analyst would use it.

Usage: check_sql_server.py PORT PASSWORD

psycopg sends parameters with the extended protocol (Parse, Bind, Execute), so the
parameterized query below is a prepared statement on the server. Exits non-zero with a
message on the first failed check.
"""

import sys

import psycopg


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

            try:
                cur.execute("DELETE FROM paperclip.runs")
            except psycopg.errors.ReadOnlySqlTransaction as error:
                assert "read-only" in str(error), str(error)
            else:
                raise AssertionError("DELETE was accepted")

    try:
        psycopg.connect(**login, password="wrong")
    except psycopg.OperationalError as error:
        assert "authentication failed" in str(error), str(error)
    else:
        raise AssertionError("a wrong password was accepted")
    print("psycopg checks passed")


if __name__ == "__main__":
    main()
