"""KS-check benchmark: the ks_check flow's read + decision against a binary-COPY-into-NumPy floor.

    .venv/bin/python -m bench.ks_window [--scales 10000,100000,1000000] [--repeat 3] [--json out.json]

A scratch database gets one model version's scoring log: ``max(scales) * 1.1`` labelled rows (so
even the largest window is "the latest N" of a longer history), bulk-loaded by a binary COPY of
three generated columns into an unlogged staging table, expanded server-side, then ``ANALYZE``.
For every scale N, interleaved and best of ``--repeat``:

* **measured**: what the ``ks_check`` flow does: ``performance_store.read_labelled_window`` with a
  count window of N, then ``ks_decision.decide_ks`` (KS + AUC);
* **floor**: one binary ``COPY (SELECT score, label … WHERE scored_at > <bound>)`` of the two columns
  into NumPy, the bound of the newest N found beforehand and not timed, and a two-sample KS in NumPy
  (sort + searchsorted, as scipy does).

Also prints the ``EXPLAIN`` of the window queries to show the (model, version, scored_at) index is
used. Goal: measured <= 2x the floor at 1 M rows, and time linear in N.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import uuid
from typing import Any

import numpy as np
import psycopg2

from bench.report import Row, progress
from modelops.config import WindowSettings
from modelops.integrations.database import apply_migrations
from modelops.integrations.performance_store import read_labelled_window
from modelops.monitoring.ks_decision import decide_ks

SERVER_DSN = os.environ.get("MODELOPS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MODEL, VERSION, SCHEMA = "bench-ks", "1", "modelops"
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"


# -- data ------------------------------------------------------------------------------------------


def _binary_copy(seq: np.ndarray, score: np.ndarray, label: np.ndarray) -> bytes:
    """A PostgreSQL binary COPY stream of (bigint, float8, int2) rows, built by NumPy in one go."""
    row = np.dtype(
        [
            ("n", ">i2"),
            ("l1", ">i4"),
            ("seq", ">i8"),
            ("l2", ">i4"),
            ("score", ">f8"),
            ("l3", ">i4"),
            ("label", ">i2"),
        ]
    )
    rows = np.empty(len(seq), dtype=row)
    rows["n"], rows["l1"], rows["l2"], rows["l3"] = 3, 8, 8, 2
    rows["seq"], rows["score"], rows["label"] = seq, score, label
    return _COPY_HEADER + rows.tobytes() + b"\xff\xff"


def generated_window(rows: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a model with KS about 0.4: 20 % events scored higher than non-events."""
    rng = np.random.default_rng(seed)
    label = (rng.random(rows) < 0.2).astype(np.int16)
    score = 1 / (1 + np.exp(-(rng.normal(size=rows) + 1.1 * label - 1.4)))
    return score.round(6), label


def load_scoring_log(dsn: str, rows: int, chunk: int = 2_000_000) -> float:
    """``rows`` labelled records of MODEL/VERSION, one per 10 ms, ending now; returns seconds taken."""
    started = time.perf_counter()
    connection = psycopg2.connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE UNLOGGED TABLE bench_staging (seq bigint, score float8, label int2)")
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                score, label = generated_window(n, seed=start)
                seq = np.arange(start, start + n, dtype=np.int64)
                cursor.copy_expert(
                    "COPY bench_staging FROM STDIN WITH (FORMAT binary)",
                    io.BytesIO(_binary_copy(seq, score, label)),
                )
                progress(f"  staged {start + n:,}/{rows:,} rows")
            progress(f"  INSERT … SELECT into scoring_log (index maintenance: ~{rows / 150_000:.0f} s here)")
            # uuid from the sequence number (unique, valid), features kept tiny: this is not what is read
            cursor.execute(
                f"""
                INSERT INTO {SCHEMA}.scoring_log
                    (request_id, scored_at, model_name, model_version, features, score, decision,
                     label, period)
                SELECT lpad(to_hex(seq), 32, '0')::uuid,
                       now() - (%s - seq) * interval '10 milliseconds',
                       %s, %s, '{{}}'::jsonb, score, (score >= 0.5)::int::int2, label, 1
                FROM bench_staging
                """,
                (rows, MODEL, VERSION),
            )
            cursor.execute("DROP TABLE bench_staging")
        connection.autocommit = True
        with connection.cursor() as cursor:
            progress("  ANALYZE + VACUUM (visibility map for index-only scans)")
            cursor.execute(f"VACUUM ANALYZE {SCHEMA}.scoring_log")
    finally:
        connection.close()
    return time.perf_counter() - started


# -- measured and floor ----------------------------------------------------------------------------


def measured(dsn: str, size: int) -> dict[str, Any]:
    started = time.perf_counter()
    window = read_labelled_window(dsn, MODEL, VERSION, WindowSettings(kind="count", size=size), schema=SCHEMA)
    read_s = time.perf_counter() - started
    decision = decide_ks(window.scores, window.labels, threshold=0.3, min_sample=200)
    total_s = time.perf_counter() - started
    return {
        "seconds": total_s,
        "read_s": read_s,
        "compute_s": total_s - read_s,
        "n": window.n,
        "ks": decision.ks,
    }


def window_cutoff(dsn: str, size: int) -> str | None:
    """The scored_at just below the newest ``size`` records (None: the window is the whole log)."""
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT scored_at::text FROM {SCHEMA}.scoring_log"
                " WHERE model_name = %s AND model_version = %s"
                " ORDER BY scored_at DESC OFFSET %s LIMIT 1",
                (MODEL, VERSION, size),
            )
            row = cursor.fetchone()
    finally:
        connection.close()
    return row[0] if row else None


def floor_query(cutoff: str | None) -> str:
    """The same rows with the least work: the time bound is known beforehand, no order, no view."""
    bound = f" AND scored_at > '{cutoff}'" if cutoff else ""
    return (
        f"SELECT score, label FROM {SCHEMA}.scoring_log WHERE model_name = '{MODEL}' "
        f"AND model_version = '{VERSION}' AND label IS NOT NULL" + bound
    )


def numpy_ks(scores: np.ndarray, labels: np.ndarray) -> float:
    events, non_events = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    both = np.concatenate([events, non_events])
    cdf_events = np.searchsorted(events, both, side="right") / len(events)
    cdf_non_events = np.searchsorted(non_events, both, side="right") / len(non_events)
    return float(np.max(np.abs(cdf_events - cdf_non_events)))


def floor(dsn: str, cutoff: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    connection = psycopg2.connect(dsn)
    buffer = io.BytesIO()
    try:
        with connection.cursor() as cursor:
            cursor.copy_expert(f"COPY ({floor_query(cutoff)}) TO STDOUT WITH (FORMAT binary)", buffer)
    finally:
        connection.close()
    data = buffer.getvalue()
    row = np.dtype([("n", ">i2"), ("l1", ">i4"), ("score", ">f8"), ("l2", ">i4"), ("label", ">i2")])
    body = len(data) - 19 - 2
    records = np.frombuffer(data, dtype=row, offset=19, count=body // row.itemsize)
    read_s = time.perf_counter() - started
    ks = numpy_ks(records["score"].astype(np.float64), records["label"])
    total_s = time.perf_counter() - started
    return {"seconds": total_s, "read_s": read_s, "compute_s": total_s - read_s, "n": len(records), "ks": ks}


def explain(dsn: str, size: int) -> dict[str, str]:
    """Plans of the queries read_labelled_window issues for a count window of ``size`` (and the floor's)."""
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            bound = (
                f"SELECT scored_at FROM {SCHEMA}.scoring_log WHERE model_name = '{MODEL}'"
                " AND model_version = "
                f"'{VERSION}' ORDER BY scored_at DESC OFFSET {int(size)} LIMIT 1"
            )
            cursor.execute(bound)
            (cutoff,) = cursor.fetchone() or (None,)
            window = cursor.mogrify(
                f"SELECT score, label::int2, scored_at FROM {SCHEMA}.labelled_scores "
                "WHERE model_name = %s AND model_version = %s AND scored_at > %s",
                (MODEL, VERSION, cutoff),
            ).decode()
            plans = {}
            for name, query in (
                ("window bound", bound),
                ("window rows", window),
                ("floor", floor_query(cutoff)),
            ):
                cursor.execute(f"EXPLAIN {query}")
                plans[name] = "\n".join(line for (line,) in cursor.fetchall())
    finally:
        connection.close()
    return plans


# -- the run ---------------------------------------------------------------------------------------


def run(scales: list[int], repeat: int = 3, database_url: str = SERVER_DSN) -> dict[str, Any]:
    name = f"modelops_bench_ks_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    dsn = f"{database_url.rpartition('/')[0]}/{name}"
    try:
        apply_migrations(dsn, SCHEMA)
        total = int(max(scales) * 1.1)
        progress(f"KS: loading {total:,} labelled rows into a scratch database")
        load_s = load_scoring_log(dsn, total)
        progress(f"KS: loaded in {load_s:.1f} s ({total / load_s:,.0f} rows/s)")
        results = []
        for size in sorted(scales):
            runs = 1 if size >= 5_000_000 else repeat
            ours, base = [], []
            cutoff = window_cutoff(dsn, size)  # the floor knows its time bound for free
            for _ in range(runs):
                base.append(floor(dsn, cutoff))
                ours.append(measured(dsn, size))
            best_ours = min(ours, key=lambda r: r["seconds"])
            best_floor = min(base, key=lambda r: r["seconds"])
            if (
                best_ours["n"] != size
                or best_floor["n"] != size
                or abs(best_ours["ks"] - best_floor["ks"]) > 1e-9
            ):
                raise RuntimeError(
                    f"KS bench at {size:,} rows: measured and floor disagree "
                    f"(n {best_ours['n']} vs {best_floor['n']}, KS {best_ours['ks']} vs {best_floor['ks']})"
                )
            progress(
                f"KS {size:>10,} rows: check {best_ours['seconds']:.3f} s "
                f"(read {best_ours['read_s']:.3f} + compute {best_ours['compute_s']:.3f}), "
                f"floor {best_floor['seconds']:.3f} s (read {best_floor['read_s']:.3f}"
                f" + compute {best_floor['compute_s']:.3f})"
            )
            results.append({"rows": size, "runs": runs, "measured": best_ours, "floor": best_floor})
        # a window that is a small share of the history (the usual case) and the largest one
        plans = explain(dsn, min(scales))
        plans_largest = explain(dsn, max(scales))
        return {
            "loaded_rows": total,
            "load_s": load_s,
            "scales": results,
            "explain": plans,
            "explain_largest": plans_largest,
        }
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def rows(result: dict[str, Any], command: str) -> list[Row]:
    out = []
    by_size = {r["rows"]: r for r in result["scales"]}
    for r in result["scales"]:
        size, ours, base = r["rows"], r["measured"], r["floor"]
        at_goal = size == 1_000_000
        out.append(
            Row(
                "ks",
                f"KS check, {size:,} labelled rows",  # the same figure in every run: --repeat medians it
                ours["seconds"],
                "s",
                goal="<= 2x floor" if at_goal else "(context)",
                met=(ours["seconds"] <= 2 * base["seconds"]) if at_goal else None,
                floor=base["seconds"],
                command=command,
                note=f"read {ours['read_s']:.3f} s + compute {ours['compute_s']:.3f} s",
            )
        )
    sizes = sorted(by_size)
    if len(sizes) >= 2:
        small, large = sizes[-2], sizes[-1]
        per_row_small = by_size[small]["measured"]["seconds"] / small
        per_row_large = by_size[large]["measured"]["seconds"] / large
        out.append(
            Row(
                "ks",
                f"time per row at {large:,} vs at {small:,} (1.0 = linear)",
                per_row_large / per_row_small,
                "x",
                goal="<= 1.5 (linear growth)",
                met=per_row_large / per_row_small <= 1.5,
                command=command,
            )
        )
    plans, largest = result["explain"], result["explain_largest"]
    index_used = all(
        "Index" in plans[k] and "scoring_log_model" in plans[k] for k in ("window bound", "window rows")
    )
    out.append(
        Row(
            "ks",
            f"window queries for {sizes[0]:,} of {result['loaded_rows']:,} rows use the scoring_log index",
            float(index_used),
            "bool",
            goal="index scan in EXPLAIN",
            met=index_used,
            command=command,
            note=(
                f"at {sizes[0]:,}: bound {_first_scan(plans['window bound'])};"
                f" rows {_first_scan(plans['window rows'])}"
                f" | at {sizes[-1]:,}: rows {_first_scan(largest['window rows'])}"
                " (a window of most of the table:"
                " a sequential scan is the planner's right choice)"
            ),
        )
    )
    return out


def _first_scan(plan: str) -> str:
    for line in plan.splitlines():
        if "Scan" in line:
            return line.strip().lstrip("-> ").split("  (")[0]
    return plan.splitlines()[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="10000,100000,1000000", help="comma-separated window sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--database-url", default=SERVER_DSN, help="a server DSN; a scratch database is made on it"
    )
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    scales = [int(s.replace("_", "")) for s in args.scales.split(",") if s.strip()]
    result = run(scales, args.repeat, args.database_url)
    for name, plan in result["explain"].items():
        print(f"EXPLAIN ({name}, {min(scales):,} rows):\n{plan}\n")
    for row in rows(result, "python -m bench.ks_window --scales " + args.scales):
        ratio = ""
        if row.floor and row.value is not None:
            ratio = f"  ({row.value / row.floor:.2f}x floor {row.floor:.3f})"
        print(f"{row.figure}: {row.value:.3f} {row.unit}{ratio}  goal {row.goal}: {row.met}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
