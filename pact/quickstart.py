"""The first run: pact's own music in a minute, and the whole workflow in a few.

`pact quickstart` continues the opening of a bundled performance that the bundled model never
saw (`continue_prime`): a MIDI file, its piano roll, and a WAV file when FluidSynth is
installed.

`pact quickstart --train` runs the workflow instead (`train_from_scratch`): it encodes the
seven bundled MAESTRO performances (six for training, one for validation), trains the `tiny`
config briefly, continues the first seconds of the validation piece, and prints where
everything went. Each step is the library call that the matching command (`pact encode
dataset`, `pact train`, `pact sample`) makes.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUNDLED_MIDI = "assets/midi"
BUNDLED_PRIME = "assets/prime/bach_prelude_bwv_873.mid"
VALIDATION_PIECE = "bach_fugue_bwv_854.mid"
DATASET_NAME = "quickstart_piano"


@dataclasses.dataclass
class QuickstartResult:
    dataset: Path
    run_dir: Path
    samples: list[Path]
    validation_nll: float | None
    train_seconds: float


def bundled_midi_files() -> list[Path]:
    """Paths of the bundled performances (see pact/assets/midi/README.md for their licence)."""
    folder = resources.files("pact") / BUNDLED_MIDI
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".mid"))


def stage_input(folder: Path) -> Path:
    """Copy the bundled files into train/ and validation/ folders, the layout `encode_dataset` reads."""
    for split in ("train", "validation"):
        (folder / split).mkdir(parents=True, exist_ok=True)
    for path in bundled_midi_files():
        split = "validation" if path.name == VALIDATION_PIECE else "train"
        target = folder / split / path.name
        if not target.exists():
            shutil.copyfile(path, target)
    return folder


@dataclasses.dataclass
class ContinuationResult:
    prime: Path
    sample: Any  # pact.generate.SampleOutput
    run: Any  # pact.generate.SampleRun
    audio_note: str | None  # why no audio was written, if none was


def bundled_prime() -> Path:
    """Return the held-out performance that the first run continues (see pact/assets/prime/README.md)."""
    return Path(str(resources.files("pact") / BUNDLED_PRIME))


def continue_prime(out_dir: str | Path, *, seconds: float = 20.0, prime_seconds: float = 10.0,
                   seed: int = 0, on_progress=None) -> ContinuationResult:
    """Continue the first `prime_seconds` of the bundled prime for `seconds` with the bundled model.

    Writes `sample_0.mid` and its piano roll into `out_dir`, and `sample_0.wav` when the
    fluidsynth program and a soundfont are found. The number continues after the samples
    already in `out_dir`.
    """
    from pact.errors import RenderError
    from pact.generate import SampleRequest, generate_samples
    from pact.render import find_renderer
    from pact.sampling import SamplingConfig

    audio_note = None
    try:
        find_renderer()
    except RenderError as error:
        audio_note = str(error)
    request = SampleRequest(
        num_samples=1, seconds=seconds, prime=bundled_prime(), prime_seconds=prime_seconds, seed=seed,
        sampling=SamplingConfig(temperature=1.0, top_p=0.95, allow_eos=False), render=audio_note is None,
    )
    log.info("continuing the first %.0f s of %s for %.0f s with the bundled model",
             prime_seconds, bundled_prime().name, seconds)
    run = generate_samples(None, out_dir, request, on_progress=on_progress)
    return ContinuationResult(prime=bundled_prime(), sample=run.outputs[0], run=run, audio_note=audio_note)


def train_from_scratch(out_dir: str | Path, *, steps: int = 300, sample_seconds: float = 20.0,
                   prime_seconds: float = 10.0, progress: bool = True) -> QuickstartResult:
    import jax

    from pact.config import apply_overrides, get_preset
    from pact.dataset_writer import encode_dataset
    from pact.generate import SampleRequest, generate_samples
    from pact.sampling import SamplingConfig
    from pact.train import train_and_evaluate

    out_dir = Path(out_dir)

    # 1. Encode.
    log.info("1/3 encoding the bundled performances into %s", out_dir / "data")
    input_folder = stage_input(out_dir / "input")
    summary = encode_dataset(input_folder, out_dir / "data", name=DATASET_NAME, tokenizer="performance",
                             show_progress=progress)

    # 2. Train; a second quickstart into the same folder resumes and extends the run.
    log.info("2/3 training the tiny config for %d steps into %s", steps, out_dir / "run")
    config = apply_overrides(get_preset("tiny"), [
        f"data.dataset={summary.path}", f"train.steps={steps}",
        f"train.eval_every={max(steps // 3, 1)}", f"train.checkpoint_every={max(steps // 3, 1)}",
    ])
    # One device: the tiny model gains nothing from more, and its batch of 8 need not divide
    # the device count of the machine.
    trained = train_and_evaluate(config, out_dir / "run", progress=progress, devices=jax.local_devices()[:1])

    # 3. Continue the first seconds of the held-out piece.
    log.info("3/3 continuing the first %.0f s of %s for %.0f s", prime_seconds, VALIDATION_PIECE, sample_seconds)
    request = SampleRequest(
        num_samples=1, seconds=sample_seconds, prime=input_folder / "validation" / VALIDATION_PIECE,
        prime_seconds=prime_seconds, seed=0, sampling=SamplingConfig(temperature=1.0, top_p=0.95, allow_eos=False),
    )
    sampled = generate_samples(out_dir / "run", out_dir / "samples", request)

    return QuickstartResult(
        dataset=summary.path,
        run_dir=out_dir / "run",
        samples=[output.path for output in sampled.outputs],
        validation_nll=None if trained.validation is None else trained.validation["nll"],
        train_seconds=trained.seconds,
    )
