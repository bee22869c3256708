"""``modelops serve`` with garbage-collector pause accounting (the probe behind the p99 finding).

    .venv/bin/python bench/profiles/gc_pauses_serve.py serve --model-name M --model-base-path D --port P ...

Same arguments as ``modelops serve``. ``kill -USR1 <pid>`` prints one ``GCSTATS`` line (collections
per generation, longest and total pause in ms since the last print); ``kill -USR2 <pid>`` runs a
full collection and ``gc.freeze()`` (what the server could do once its models are loaded).
"""

import gc
import json
import signal
import sys
import time

pauses: list[tuple[int, float]] = []
_started = [0.0]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        pauses.append((info["generation"], time.perf_counter() - _started[0]))


def _print_stats(*_: object) -> None:
    by_generation: dict[int, list[float]] = {}
    for generation, seconds in pauses:
        by_generation.setdefault(generation, []).append(seconds)
    summary = {
        g: {"n": len(v), "max_ms": round(1000 * max(v), 3), "total_ms": round(1000 * sum(v), 3)}
        for g, v in sorted(by_generation.items())
    }
    print("GCSTATS", json.dumps(summary), flush=True)
    pauses.clear()


def _freeze(*_: object) -> None:
    gc.collect()
    gc.freeze()
    print("GC FROZEN", gc.get_freeze_count(), "objects", flush=True)


gc.callbacks.append(_on_gc)
signal.signal(signal.SIGUSR1, _print_stats)
signal.signal(signal.SIGUSR2, _freeze)

if __name__ == "__main__":
    from modelops.cli import main

    sys.exit(main(sys.argv[1:]))
