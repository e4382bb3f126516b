"""Test NLL per event type and position range, for one or more music runs.

    python benchmarks/nll_by_event_type.py runs/music-ctx256 runs/music-ctx2048 --min-position 512

Scores every target of the split as `pact eval benchmark` does, in blocks of the model's
latents. Prints a markdown table of the mean NLL in nats for each event type: the token name
without its trailing number, for example NOTE_ON or TIME_SHIFT. Only targets at document
positions from --min-position on are counted.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np


def nll_by_type(run_dir: str, split: str, min_position: int) -> tuple[dict[str, float], dict[str, int]]:
    """Mean NLL and count per event type over the targets at positions >= `min_position`."""
    from flax import nnx

    from pact.datasets import open_dataset
    from pact.evaluate import _batches, make_score_step
    from pact.run import load_model

    loaded = load_model(run_dir)
    config = loaded.config
    source = open_dataset(config.data.dataset).source(split)
    num_latents = config.model.num_latents
    score = make_score_step(loaded.model, num_latents)
    params = nnx.to_pure_dict(nnx.state(loaded.model))
    names = [loaded.tokenizer.id_to_token(i).rstrip("0123456789").rstrip("_")
             for i in range(loaded.tokenizer.vocab_size)]

    sums, counts = defaultdict(float), defaultdict(int)
    for batch in _batches(source, config.model.max_context, num_latents, 8):
        targets = batch["targets"][:, -num_latents:]
        nll, _ = score(params, batch["inputs"], targets)
        nll = np.asarray(nll, np.float64)
        positions = batch["positions"][:, -num_latents:]
        selected = positions >= max(min_position, 0)
        for token, value in zip(targets[selected], nll[selected]):
            sums[names[token]] += value
            counts[names[token]] += 1
    return {name: sums[name] / counts[name] for name in counts}, dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--split", default="test")
    parser.add_argument("--min-position", type=int, default=0, help="first document position counted")
    args = parser.parse_args()

    results = [nll_by_type(run_dir, args.split, args.min_position) for run_dir in args.run_dirs]
    counts = results[0][1]
    print("| event type | targets | " + " | ".join(args.run_dirs) + " |")
    print("|---|---:|" + "---:|" * len(args.run_dirs))
    for name in sorted(counts, key=counts.get, reverse=True):
        print(f"| {name} | {counts[name]:,} | " + " | ".join(f"{means[name]:.4f}" for means, _ in results) + " |")


if __name__ == "__main__":
    main()
