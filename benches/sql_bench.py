"""Measures paperclip's SQL server as a Python analyst reaches it, through psycopg.

  sql_bench.py compare --port PORT --table NAME --parquet FILE [FILE ...]
      Runs each query of QUERIES on the server and on DuckDB (in process) over the same
      Parquet files. Checks that both return the same rows, and prints the median times
      and their ratio as a Markdown table.

  sql_bench.py load --port PORT --table NAME [--clients 32] [--seconds 60] [--server-pid PID]
      Runs LOAD_QUERIES from many clients at once for a bounded time. Prints the queries
      per second, every error, and the server's resident memory over time when its
      process id is given. Exits 1 on any error or when the memory grew.

Connects only to 127.0.0.1.
"""

import argparse
import statistics
import sys
import threading
import time

import psycopg

# The analyst's questions: counts, groups, a point lookup, a text search, a top-k and a
# page of whole rows. `{t}` is the samples table, `{proposal}` one of its proposal ids.
QUERIES = {
    "count": "SELECT count(*) FROM {t}",
    "by split": (
        "SELECT split, count(*) AS n, avg(length(caption)) AS caption_chars "
        "FROM {t} GROUP BY split ORDER BY split"
    ),
    "proposals per cycle": (
        "SELECT cycle, count(DISTINCT proposal_id) AS proposals FROM {t} "
        "GROUP BY cycle ORDER BY cycle"
    ),
    "point lookup": "SELECT key, caption FROM {t} WHERE proposal_id = {proposal} ORDER BY key",
    "text search": "SELECT count(*) FROM {t} WHERE lower(caption) LIKE '%galax%'",
    "top proposals": (
        "SELECT proposal_id, count(*) AS n FROM {t} GROUP BY proposal_id "
        "ORDER BY n DESC, proposal_id LIMIT 10"
    ),
    "page of rows": "SELECT * FROM {t} ORDER BY key LIMIT 1000",
}

# The mix for the load test: short queries of the kind dashboards and notebooks repeat.
LOAD_QUERIES = ["count", "by split", "point lookup", "top proposals", "text search"]


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="analyst",
        dbname="datafusion",
        connect_timeout=10,
        autocommit=True,
    )


def some_proposal(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT min(proposal_id) FROM {table}").fetchone()[0]


def normalized(rows):
    """Rows as comparable tuples: floats rounded, everything else as text."""
    out = []
    for row in rows:
        out.append(
            tuple(round(v, 6) if isinstance(v, float) else str(v) for v in row)
        )
    return sorted(out)


def timed(run, repeats: int):
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def compare(args) -> int:
    import duckdb

    duck = duckdb.connect()
    files = ", ".join(f"'{path}'" for path in args.parquet)
    duck.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet([{files}])")
    conn = connect(args.port)
    proposal = some_proposal(conn, args.table)
    rows_total = conn.execute(f"SELECT count(*) FROM {args.table}").fetchone()[0]
    print(f"samples: {rows_total} rows in {len(args.parquet)} Parquet file(s)")
    print(f"duckdb {duckdb.__version__}, psycopg {psycopg.__version__}, "
          f"{args.repeats} timed runs per query after one warm-up, medians\n")
    print("| query | paperclip server (ms) | DuckDB in process (ms) | paperclip / DuckDB |")
    print("|---|---:|---:|---:|")
    failed = 0
    for name, template in QUERIES.items():
        ours = template.format(t=args.table, proposal=proposal)
        theirs = template.format(t="samples", proposal=proposal)
        ours_secs, ours_rows = timed(lambda: conn.execute(ours).fetchall(), args.repeats)
        duck_secs, duck_rows = timed(lambda: duck.execute(theirs).fetchall(), args.repeats)
        same = normalized(ours_rows) == normalized(duck_rows)
        if not same:
            failed += 1
            print(f"different rows for {name}: {ours_rows[:3]} against {duck_rows[:3]}",
                  file=sys.stderr)
        print(f"| {name} | {ours_secs * 1e3:.1f} | {duck_secs * 1e3:.1f} | "
              f"{ours_secs / duck_secs:.1f}{'' if same else ' (rows differ)'} |")
    return 1 if failed else 0


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def load(args) -> int:
    deadline = time.monotonic() + args.seconds
    proposal = some_proposal(connect(args.port), args.table)
    statements = [QUERIES[name].format(t=args.table, proposal=proposal) for name in LOAD_QUERIES]
    done = [0] * args.clients
    errors = []
    lock = threading.Lock()

    def client(index: int) -> None:
        try:
            conn = connect(args.port)
        except Exception as error:  # noqa: BLE001 - every failure is counted
            with lock:
                errors.append(f"client {index} cannot connect: {error}")
            return
        n = index
        while time.monotonic() < deadline:
            statement = statements[n % len(statements)]
            n += 1
            try:
                conn.execute(statement).fetchall()
                done[index] += 1
            except Exception as error:  # noqa: BLE001
                with lock:
                    errors.append(f"client {index}: {statement}: {error}")
        conn.close()

    memory = []
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if args.server_pid:
            memory.append((time.monotonic() - started, resident_kib(args.server_pid)))
        time.sleep(1)
    elapsed = time.monotonic() - started

    total = sum(done)
    print(f"{args.clients} clients, {elapsed:.0f} s: {total} queries, "
          f"{total / elapsed:.1f} queries/s, {len(errors)} errors")
    for error in errors[:10]:
        print(f"  {error}")
    grew = False
    if memory:
        print("server resident memory (MiB) by second: "
              + ", ".join(f"{t:.0f}s {kib / 1024:.0f}" for t, kib in memory[:: max(1, len(memory) // 12)]))
        # Flat: the last quarter's peak is within 20% of the peak of the second quarter,
        # when the caches are warm.
        quarter = max(1, len(memory) // 4)
        warm = max(kib for _, kib in memory[quarter:2 * quarter] or memory)
        late = max(kib for _, kib in memory[-quarter:])
        grew = late > warm * 1.2
        print(f"peak in the second quarter {warm / 1024:.0f} MiB, in the last quarter "
              f"{late / 1024:.0f} MiB: {'grew' if grew else 'flat'}")
    return 1 if errors or grew else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("compare", "load"):
        command = sub.add_parser(name)
        command.add_argument("--port", type=int, required=True)
        command.add_argument("--table", required=True)
    sub.choices["compare"].add_argument("--parquet", nargs="+", required=True)
    sub.choices["compare"].add_argument("--repeats", type=int, default=5)
    sub.choices["load"].add_argument("--clients", type=int, default=32)
    sub.choices["load"].add_argument("--seconds", type=float, default=60)
    sub.choices["load"].add_argument("--server-pid", type=int)
    args = parser.parse_args()
    return compare(args) if args.command == "compare" else load(args)


if __name__ == "__main__":
    sys.exit(main())
