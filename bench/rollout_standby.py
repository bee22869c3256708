"""A local-target rollout started cold against one forked from the warm standby, side by side.

    python -m bench.rollout_standby --model-dir .modelops/serving/models/hmeq-risk/1 --rounds 5

Two local targets in temporary homes: one with a ready warm standby (the supervisor's, started the
same way), one without. Each round deploys the same SavedModel on both, in alternating order, and
records the deploy's wall time (copy, start, AVAILABLE, smoke test, open the public port) and the
new server's CPU-seconds when the deploy returns (its imports, the model load, the smoke test).
Prints the medians, their ratio and every round as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from modelops.config import load_config
from modelops.targets.local import LocalTarget

MODEL = "bench-rollout"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def target(home: Path, port: int) -> LocalTarget:
    config = load_config(environ={**os.environ, "MODELOPS_SERVING__PORT": str(port)})
    return LocalTarget(config, home=home)


def deploy_once(local: LocalTarget, version: int, model_dir: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    rollout = local.deploy(MODEL, str(version), model_dir)
    seconds = time.perf_counter() - t0
    pid = int(rollout.details["pid"])
    return {"seconds": round(seconds, 3), "server_cpu_s": process_cpu_s(pid), "parent": _parent(pid)}


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rollout_standby", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="a SavedModel folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ports", type=int, nargs=2, default=(18701, 18702))
    args = parser.parse_args(argv)
    if not (args.model_dir / "saved_model.pb").is_file():
        parser.error(f"--model-dir {args.model_dir} is not a SavedModel folder (no saved_model.pb)")
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as work:
        cold = target(Path(work) / "cold", args.ports[0])
        warm = target(Path(work) / "warm", args.ports[1])
        standby = warm.start_standby()
        try:
            while not standby.ready:
                time.sleep(0.1)
            rounds = []
            for round_number in range(1, args.rounds + 1):
                order = [("cold", cold), ("forked", warm)]
                if round_number % 2 == 0:
                    order.reverse()
                result = {name: deploy_once(local, round_number, args.model_dir) for name, local in order}
                assert result["cold"]["parent"] == os.getpid(), result  # started by this process
                assert result["forked"]["parent"] == standby.pid, result  # forked by the standby
                rounds.append(result)
                print(json.dumps({"round": round_number, **result}), flush=True)
        finally:
            for local in (cold, warm):
                local.stop(MODEL)
            os.killpg(standby.pid, signal.SIGTERM)
    summary = {}
    for name in ("cold", "forked"):
        summary[name] = {
            "seconds_median": statistics.median(r[name]["seconds"] for r in rounds),
            "server_cpu_s_median": statistics.median(r[name]["server_cpu_s"] for r in rounds),
        }
    summary["forked_over_cold_seconds"] = round(
        summary["forked"]["seconds_median"] / summary["cold"]["seconds_median"], 3
    )
    print(json.dumps({"summary": summary, "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
