"""The log sidecar against real PostgreSQL: exactly once through kill -9, outages and bad lines."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from support.postgres import ThrowawayCluster
from support.scoring_log import has_scoring_log_table, record, table_counts, write_records

from modelops.integrations.scoring_log import count_records
from modelops.scoring.records import encode_record
from modelops.scoring.sidecar import LogShipper, ShipperSettings
from modelops.scoring.spool import DEAD_LETTER_DIR, SHIPPED_DIR

MODELOPS = str(Path(sys.executable).parent / "modelops")


def ship_once(dsn: str, spool: Path, **settings) -> LogShipper:
    shipper = LogShipper(dsn, ShipperSettings(spool_dir=spool, give_up_after_s=30, **settings))
    shipper.run(once=True)
    return shipper


def test_ships_everything_once_and_rotates_finished_files(postgres_url, tmp_path):
    ids = write_records(tmp_path, 2500, per_file=1000)
    shipper = ship_once(postgres_url, tmp_path, batch_rows=700)
    assert table_counts(postgres_url) == (2500, 2500)
    assert shipper.stats.rows_inserted == 2500 and shipper.stats.files_rotated == 3
    assert sorted(p.name for p in tmp_path.glob("scores-*")) == []
    assert len(list((tmp_path / SHIPPED_DIR).glob("scores-*.jsonl"))) == 3
    # shipping again finds nothing; re-shipping the very same files inserts nothing twice
    for path in (tmp_path / SHIPPED_DIR).glob("scores-*.jsonl"):
        shutil.copy(path, tmp_path / path.name.replace("scores-", "scores-copy-"))
    again = ship_once(postgres_url, tmp_path, rotate="delete")
    assert table_counts(postgres_url) == (2500, 2500)
    assert again.stats.rows_inserted == 0 and again.stats.duplicates_skipped == 2500
    assert list(tmp_path.glob("scores-*")) == []
    assert count_records(postgres_url, "hmeq-risk") == 2500
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT request_id::text FROM modelops.scoring_log")
        assert {row[0] for row in cursor.fetchall()} == set(ids)
        cursor.execute("SELECT count(*) FROM modelops.spool_offsets")
        assert cursor.fetchone() == (0,), "offsets of rotated files are forgotten"
    connection.close()


def test_only_complete_lines_are_shipped(postgres_url, tmp_path):
    first, second = encode_record(record(1)), encode_record(record(2))
    path = tmp_path / "scores-20260101T000000Z-test-1-000001-abcd.jsonl.open"
    path.write_bytes(first + second[:40])  # a writer caught in the middle of a line
    shipper = ship_once(postgres_url, tmp_path)
    assert table_counts(postgres_url) == (1, 1) and shipper.stats.dead_letters == 0
    assert path.exists(), "an unfinished file stays in the spool"
    with path.open("ab") as handle:
        handle.write(second[40:])
    path.rename(path.with_name(path.name.removesuffix(".open")))  # the writer finishes it
    ship_once(postgres_url, tmp_path)
    assert table_counts(postgres_url) == (2, 2)
    assert len(list((tmp_path / SHIPPED_DIR).iterdir())) == 1


def test_malformed_lines_go_to_the_dead_letter_file_and_the_rest_ships(postgres_url, tmp_path):
    good = [record(i) for i in range(6)]
    bad = {
        b"{not json": "not valid JSON",
        b"[1, 2]": "must be a JSON object",
        encode_record(
            {k: v for k, v in record(7).items() if k != "score"}
        ).strip(): "missing fields ['score']",
        encode_record(record(8, score="high")).strip(): "field 'score' must be a number",
        encode_record(record(9, request_id="42")).strip(): "request_id must be a UUID",
        encode_record(record(10, label=2)).strip(): "field 'label' must be 0 or 1",
        encode_record(record(11, scored_at="2026-01-01T00:00:00")).strip(): "must carry a time zone",
        encode_record(record(12, features=[1, 2])).strip(): "features must be a JSON object",
        encode_record(record(13, period="Q1")).strip(): "period must be an integer",
    }
    lines = [encode_record(good[0]), *(line + b"\n" for line in bad), *(encode_record(r) for r in good[1:])]
    path = tmp_path / "scores-20260101T000000Z-test-1-000001-abcd.jsonl"
    path.write_bytes(b"".join(lines))
    shipper = ship_once(postgres_url, tmp_path)

    assert table_counts(postgres_url) == (6, 6)
    assert shipper.stats.dead_letters == len(bad)
    dead = [
        json.loads(line)
        for line in (tmp_path / DEAD_LETTER_DIR / "dead-letter.jsonl").read_text().splitlines()
    ]
    assert len(dead) == len(bad)
    offsets = {}
    position = 0
    for line in lines:
        offsets[line.rstrip(b"\n").decode()] = position
        position += len(line)
    for entry, (line, reason) in zip(dead, bad.items(), strict=True):
        assert reason in entry["reason"], entry
        assert entry["source_file"] == path.name
        assert entry["offset"] == offsets[line.decode()], "the offset points at the line in its source file"
        assert entry["line"] == line.decode()
    assert not path.exists(), "a file with dead letters is still shipped and rotated"


def test_duplicate_request_ids_inside_one_batch_insert_once(postgres_url, tmp_path):
    same = record(1)
    path = tmp_path / "scores-20260101T000000Z-test-1-000001-abcd.jsonl"
    path.write_bytes(encode_record(same) * 3 + encode_record(record(2)))
    shipper = ship_once(postgres_url, tmp_path)
    assert table_counts(postgres_url) == (2, 2)
    assert shipper.stats.duplicates_skipped == 2


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(postgres_url, tmp_path):
    spool = tmp_path / "spool"
    rng = random.Random(7)
    ids: list[str] = []
    command = [MODELOPS, "ship", "--spool", str(spool), "--database-url", postgres_url, "--batch-rows", "100",
               "--poll", "0.05"]  # fmt: skip
    killed_mid_work = 0
    for round_number in range(6):
        ids += write_records(
            spool, 16000, per_file=4000, finish=round_number % 2 == 0
        )  # new work keeps coming
        before = table_counts(postgres_url)[0] if has_scoring_log_table(postgres_url) else 0
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(
            lambda before=before: (
                has_scoring_log_table(postgres_url) and table_counts(postgres_url)[0] > before
            ),
            60,
        )
        time.sleep(rng.uniform(0.0, 0.1))  # somewhere inside the shipping of a batch, or between batches
        process.send_signal(signal.SIGKILL)
        process.wait()
        shipped, distinct = table_counts(postgres_url)
        assert shipped == distinct, f"round {round_number}: duplicates after kill -9"
        killed_mid_work += shipped < len(ids)
    assert killed_mid_work >= 3, "the kills should land while there is still work to ship"
    final = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert table_counts(postgres_url) == (len(ids), len(ids))
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT request_id::text FROM modelops.scoring_log")
        assert {row[0] for row in cursor.fetchall()} == set(ids)
    connection.close()


@pytest.mark.slow
def test_database_outage_keeps_the_spool_and_catches_up(tmp_path, port):
    cluster = ThrowawayCluster(port)
    spool = tmp_path / "spool"
    log_path = tmp_path / "sidecar.log"
    process = None
    try:
        cluster.start()
        ids = write_records(spool, 2000)
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                [MODELOPS, "ship", "--spool", str(spool), "--database-url", cluster.dsn, "--poll", "0.1",
                 "--backoff-max", "1", "--batch-rows", "500"],
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
            _wait_for(lambda: has_scoring_log_table(cluster.dsn) and table_counts(cluster.dsn)[0] == 2000, 60)

            cluster.stop()
            ids += write_records(spool, 3000, per_file=1000)
            _wait_for(lambda: "unreachable" in log_path.read_text(), 30)
            time.sleep(1.5)
            assert len(list(spool.glob("scores-*.jsonl"))) == 3, (
                "the spool is kept while the database is down"
            )
            assert process.poll() is None, "the sidecar keeps running through the outage"

            cluster.start()
            _wait_for(lambda: table_counts(cluster.dsn)[0] >= 5000, 60)
            time.sleep(0.5)
            assert table_counts(cluster.dsn) == (5000, 5000)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        text = log_path.read_text()
        assert "retrying in" in text and "PostgreSQL is back" in text
        with psycopg2.connect(cluster.dsn) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT request_id::text FROM modelops.scoring_log")
            assert {row[0] for row in cursor.fetchall()} == set(ids)
        connection.close()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        cluster.remove()


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except psycopg2.OperationalError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout} s")


def test_sigterm_drains_the_spool_before_exit(postgres_url, tmp_path):
    spool = tmp_path / "spool"
    ids = write_records(spool, 20_000, per_file=5000)
    process = subprocess.Popen(
        [MODELOPS, "ship", "--spool", str(spool), "--database-url", postgres_url, "--batch-rows", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(lambda: has_scoring_log_table(postgres_url) and table_counts(postgres_url)[0] > 0, 60)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "draining the spool" in err
    assert table_counts(postgres_url) == (len(ids), len(ids))
    assert json.loads(out.splitlines()[-1])["shipped"]["files_rotated"] == 4


def test_a_row_postgresql_refuses_is_dead_lettered_and_the_batch_still_ships(postgres_url, tmp_path):
    # 1e300 passes the spool check (a finite number) but overflows the real column latency_ms
    records = [record(i) for i in range(5)] + [record(5, latency_ms=1e300)]
    path = tmp_path / "scores-20260101T000000Z-test-1-000001-abcd.jsonl"
    path.write_bytes(b"".join(encode_record(r) for r in records))
    shipper = ship_once(postgres_url, tmp_path)
    assert table_counts(postgres_url) == (5, 5)
    assert shipper.stats.rows_inserted == 5 and shipper.stats.dead_letters == 1
    (entry,) = [
        json.loads(x) for x in (tmp_path / DEAD_LETTER_DIR / "dead-letter.jsonl").read_text().splitlines()
    ]
    assert entry["stage"] == "database" and "rejected by PostgreSQL" in entry["reason"]
    assert "out of range" in entry["reason"] and entry["source_file"] == path.name
    assert entry["offset"] == sum(len(encode_record(r)) for r in records[:5])
