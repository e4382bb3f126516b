"""Validation NLL against training time and step, from a run's metrics.jsonl.

    python benchmarks/training_curve.py runs/maestro-small-20min --plot docs/images/curve.png

Prints a markdown table (step, minutes since the first logged step, validation NLL in nats and
bits per event, accuracy) and optionally plots NLL against minutes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--plot", type=Path, help="write a PNG of validation NLL against minutes")
    args = parser.parse_args()

    rows = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    start = min(row["time"] for row in rows)
    # Minutes count from the first logged step, so loading and compiling are left out.
    validation = [row for row in rows if row["split"] == "validation"]
    print("| step | minutes | validation NLL (nats/event) | bits/event | accuracy |")
    print("|---:|---:|---:|---:|---:|")
    for row in validation:
        minutes = (row["time"] - start) / 60
        print(f"| {row['step']} | {minutes:.1f} | {row['nll']:.3f} | {row['nll'] / math.log(2):.3f} | {row['accuracy']:.3f} |")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3.5))
        axis.plot([(row["time"] - start) / 60 for row in validation], [row["nll"] for row in validation], marker="o")
        axis.set_xlabel("minutes of training (after the first logged step)")
        axis.set_ylabel("validation NLL (nats/event)")
        axis.set_title(args.run_dir.name)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
