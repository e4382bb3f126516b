"""Lay out the shared piano performances as one corpus with train/validation/test folders.

The embedded model trains on every real piano performance available: the MAESTRO-layout set
(with its own splits, assigned per composition) and the extra competition performances, which
have no index. An extra performance of a composition that MAESTRO holds out in validation or
test goes to that same split, so that no composition is in two splits; the rest go to train.
Files are linked, not copied.

    python scripts/prepare_piano_corpus.py ../shared/data/maestro-asap ../shared/data/piano-performances corpus/
    pact encode dataset corpus/ --data-dir ~/pact-data --name piano_corpus
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path


def composition_key(composer: str, title: str) -> str:
    """File-name prefix of a composition in the extra performances: Bach_Fugue_bwv_846."""
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{composer} {title}").strip("_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("maestro", type=Path, help="MAESTRO-layout folder with maestro-v3.0.0.csv")
    parser.add_argument("extra", type=Path, help="folder of extra .mid performances")
    parser.add_argument("out", type=Path, help="output folder (created)")
    args = parser.parse_args()

    rows = list(csv.DictReader(open(args.maestro / "maestro-v3.0.0.csv", newline="")))
    held_out = {
        composition_key(row["canonical_composer"], row["canonical_title"]): row["split"]
        for row in rows if row["split"] != "train"
    }
    counts: dict[str, int] = {}

    def link(source: Path, split: str, name: str) -> None:
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if not target.exists():
            os.symlink(source.resolve(), target)
        counts[split] = counts.get(split, 0) + 1

    for row in rows:
        source = args.maestro / row["midi_filename"]
        link(source, row["split"], "maestro_" + source.name.replace(".midi", ".mid"))
    for source in sorted(args.extra.glob("*.mid")):
        split = next((split for key, split in held_out.items() if source.name.startswith(key + "_")), "train")
        link(source, split, "extra_" + source.name)
    for split in ("train", "validation", "test"):
        print(f"{split}: {counts.get(split, 0)} files")


if __name__ == "__main__":
    main()
