"""The spool writer: rotation by records, size and age; whole lines even with many writer threads."""

from __future__ import annotations

import threading
import time

import orjson

from modelops.scoring.spool import SpoolWriter, list_spool_files, read_complete_lines, spool_key


def lines_of(n: int, tag: str = "x", pad: int = 0) -> list[bytes]:
    return [orjson.dumps({"i": i, "tag": tag, "pad": "p" * pad}) + b"\n" for i in range(n)]


def test_rotates_by_record_count_and_finishes_on_close(tmp_path):
    with SpoolWriter(tmp_path, max_records=10, max_age_s=3600) as writer:
        for line in lines_of(25):
            writer.write_lines([line])
        assert [f.finished for f in list_spool_files(tmp_path)] == [True, True, False]
    files = list_spool_files(tmp_path)
    assert [f.finished for f in files] == [True, True, True]
    assert [len(f.path.read_bytes().splitlines()) for f in files] == [10, 10, 5]
    assert all(spool_key(f.path) == f.key for f in files)


def test_rotates_by_size_and_by_age(tmp_path):
    with SpoolWriter(tmp_path / "size", max_bytes=1000, max_age_s=3600) as writer:
        for line in lines_of(20, pad=200):
            writer.write_lines([line])
    assert len(list_spool_files(tmp_path / "size")) >= 4
    writer = SpoolWriter(tmp_path / "age", max_age_s=0.2)
    writer.write_lines(lines_of(1))
    assert [f.finished for f in list_spool_files(tmp_path / "age")] == [False]
    time.sleep(0.3)
    writer.rotate_if_old()
    assert [f.finished for f in list_spool_files(tmp_path / "age")] == [True]
    writer.close()


def test_concurrent_writers_never_interleave_lines(tmp_path):
    writer = SpoolWriter(tmp_path, max_records=500, max_age_s=3600)

    def write(tag: str) -> None:
        for k in range(0, 400, 4):
            writer.write_lines(lines_of(4, tag=tag, pad=k))

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    records = [
        orjson.loads(line) for f in list_spool_files(tmp_path) for line in f.path.read_bytes().splitlines()
    ]
    assert len(records) == 6 * 400


def test_read_complete_lines_stops_at_the_last_newline(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert read_complete_lines(path, 0, 1 << 20) == b'{"a":1}\n{"b":2}\n'
    assert read_complete_lines(path, 8, 1 << 20) == b'{"b":2}\n'
    assert read_complete_lines(path, 16, 1 << 20) == b""
    assert read_complete_lines(path, 0, 3) == b'{"a":1}\n', (
        "a line longer than the read size is still read whole"
    )
