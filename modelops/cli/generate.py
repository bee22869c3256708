"""``modelops generate``: write HMEQ-like training data, drifting production periods and their schema."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from modelops.cli.errors import UserError
from modelops.data.generator import generate_period, generate_training
from modelops.data.schema import HMEQ_SCHEMA


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write into (created if absent)")
    parser.add_argument("--rows", type=int, default=20000, help="training rows (default 20000)")
    parser.add_argument(
        "--period-rows", type=int, default=5000, help="rows per production period (default 5000)"
    )
    parser.add_argument(
        "--periods", type=int, default=4, help="production periods (default 4, like the seed)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--drift",
        type=float,
        default=1.0,
        help="drift strength: 0 none, 1 the seed's four quarters (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    if args.rows < 1 or args.period_rows < 1:
        raise UserError("--rows and --period-rows must be at least 1")
    if args.periods < 0:
        raise UserError(f"--periods must be >= 0, got {args.periods}")
    if args.drift < 0:
        raise UserError(f"--drift must be >= 0, got {args.drift}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "schema.yaml").write_text(yaml.safe_dump(HMEQ_SCHEMA.to_dict(), sort_keys=False))
    frames = [("train.csv", generate_training(rows=args.rows, seed=args.seed))]
    for period in range(1, args.periods + 1):
        frames.append(
            (
                f"period_{period}.csv",
                generate_period(period, rows=args.period_rows, seed=args.seed, drift=args.drift),
            )
        )
    for name, frame in frames:
        frame.to_csv(args.out / name, index=False, float_format="%.10g")
        print(
            f"{args.out / name}: {len(frame)} rows, BAD rate {frame['BAD'].mean():.3f}, "
            f"mean LOAN {frame['LOAN'].mean():,.0f}",
            flush=True,
        )
    print(f"{args.out / 'schema.yaml'}: target {HMEQ_SCHEMA.target}, {len(HMEQ_SCHEMA.features)} features")
    return 0
