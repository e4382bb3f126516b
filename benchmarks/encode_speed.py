"""Parse + encode speed of pact's performance tokenizer against note-seq, on the same real files.

Both pipelines read each MIDI file from disk and produce performance event ids:

* note-seq 0.0.5: midi_file_to_note_sequence -> apply_sustain_control_changes ->
  quantize_note_sequence_absolute(ns, 100) -> Performance(num_velocity_bins=32,
  max_shift_steps=100) -> PerformanceOneHotEncoding;
* pact: PerformanceTokenizer().encode_file.

Speed is events (ids) per second of wall time, summed over the files. pact runs `--repeats`
times and the fastest run counts; note-seq runs once because it is slow. Imports and one
warm-up file per pipeline are not timed.

Usage:
    .venv/bin/python benchmarks/encode_speed.py                  # 50 MAESTRO files
    .venv/bin/python benchmarks/encode_speed.py --files 0        # every file
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("PACT_SHARED", PROJECT_ROOT.parent / "shared")) / "data" / "maestro-asap"


def note_seq_ids(path: Path) -> list[int]:
    import note_seq
    from note_seq import performance_lib, sequences_lib
    from note_seq.performance_encoder_decoder import PerformanceOneHotEncoding

    sequence = note_seq.midi_file_to_note_sequence(str(path))
    sequence = sequences_lib.apply_sustain_control_changes(sequence)
    quantized = sequences_lib.quantize_note_sequence_absolute(sequence, 100)
    performance = performance_lib.Performance(quantized, num_velocity_bins=32, max_shift_steps=100)
    encoding = PerformanceOneHotEncoding(num_velocity_bins=32)
    return [encoding.encode_event(event) + 2 for event in performance]


def cpu_name() -> str:
    """Return the CPU model from /proc/cpuinfo where it exists, else the machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def time_pipeline(encode, files: list[Path]) -> tuple[float, int, list]:
    """Return (seconds, total events, ids per file) for one pass over the files."""
    results = []
    start = time.perf_counter()
    for path in files:
        results.append(encode(path))
    seconds = time.perf_counter() - start
    return seconds, sum(len(ids) for ids in results), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of YEAR/*.midi files")
    parser.add_argument("--files", type=int, default=50, help="number of files, spread over the set; 0 = all")
    parser.add_argument("--repeats", type=int, default=3, help="pact passes; the fastest counts")
    args = parser.parse_args()

    files = sorted(args.data.glob("*/*.midi"))
    if not files:
        raise SystemExit(f"error: no */*.midi files under {args.data}; pass --data or set PACT_SHARED")
    if args.files:
        files = files[:: max(1, len(files) // args.files)][: args.files]

    warnings.filterwarnings("ignore")  # pydub warns about ffmpeg when note_seq is imported
    from pact.encodings.performance import PerformanceTokenizer

    tokenizer = PerformanceTokenizer()
    tokenizer.encode_file(files[0])
    note_seq_ids(files[0])

    pact_runs = [time_pipeline(tokenizer.encode_file, files) for _ in range(args.repeats)]
    pact_seconds, pact_events, pact_ids = min(pact_runs, key=lambda run: run[0])
    note_seq_seconds, note_seq_events, reference_ids = time_pipeline(note_seq_ids, files)
    identical = sum(ids.tolist() == reference for ids, reference in zip(pact_ids, reference_ids, strict=True))

    pact_rate = pact_events / pact_seconds
    note_seq_rate = note_seq_events / note_seq_seconds
    print(f"{len(files)} files from {args.data}; ids identical on {identical} of them")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| pipeline | events | seconds | events/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    print(f"| note-seq 0.0.5 | {note_seq_events} | {note_seq_seconds:.2f} | {note_seq_rate:,.0f} | 1.0 |")
    print(f"| pact | {pact_events} | {pact_seconds:.2f} | {pact_rate:,.0f} | {pact_rate / note_seq_rate:.1f} |")


if __name__ == "__main__":
    main()
