"""`pact sample` on a run trained briefly on the bundled performances: files, summary and checks.

Option checks run against a copy of the run without checkpoints: a check that happened only
after the model loaded would fail there with "no checkpoints yet" instead of its own message.
"""

import io
import shutil
import wave
from pathlib import Path

import pretty_midi
import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from pact.cli import _output
from pact.cli.main import app
from pact.config import apply_overrides, get_preset
from pact.dataset_writer import encode_dataset
from pact.errors import PactError
from pact.quickstart import bundled_midi_files, stage_input
from pact.train import train_and_evaluate

runner = CliRunner()

# A small model trained for 30 steps: enough to leave uniform predictions, fast to compile.
TRAIN_OVERRIDES = [
    "model.max_context=256", "model.num_latents=32", "model.num_channels=64", "model.num_heads=2",
    "model.num_layers=2", "train.steps=30", "train.eval_every=30", "train.checkpoint_every=30",
    "train.eval_batches=1", "train.learning_rate=3e-3",
]
CONTEXT = 256
PRIME = "chopin_etude_op_10_5.mid"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundled")
    summary = encode_dataset(stage_input(folder / "input"), folder / "data", name="bundled", workers=1,
                             show_progress=False)
    config = apply_overrides(get_preset("tiny"), [f"data.dataset={summary.path}", *TRAIN_OVERRIDES])
    train_and_evaluate(config, folder / "run", progress=False)
    return folder / "run"


@pytest.fixture(scope="module")
def untrained_copy(trained_run, tmp_path_factory) -> Path:
    """The run's config and tokenizer without checkpoints."""
    copy = tmp_path_factory.mktemp("untrained") / "run"
    copy.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(trained_run / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def prime() -> Path:
    return next(path for path in bundled_midi_files() if path.name == PRIME)


def _sample(*args: str, env: dict | None = None):
    return runner.invoke(app, ["sample", *args], env=env)


def _error(result) -> str:
    """The message of the `PactError` that ended the command (`main` prints it as one line)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, PactError), repr(result.exception)
    return str(result.exception)


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-0.5"], "temperature=-0.5 is invalid: use a finite value above 0, or 0 for greedy"),
    (["--top-p", "0"], "top-p=0.0 is invalid: it must be in (0, 1]"),
    (["--top-p", "1.5"], "top-p=1.5 is invalid: it must be in (0, 1]"),
    (["--min-p", "1"], "min-p=1.0 is invalid: it must be in [0, 1)"),
    (["--top-k", "-1"], "top-k=-1 is invalid: use 0 (off) or a positive count"),
    (["--num-samples", "0"], "--num-samples=0 is invalid: generate at least 1 sample"),
    (["--events", "10", "--seconds", "5"], "--events and --seconds both set"),
    (["--seconds", "0"], "--seconds=0.0 is invalid: use a finite length above 0 s"),
    (["--prime-seconds", "5"], "--prime-seconds needs --prime FILE"),
    (["--prime", "missing.mid"], "prime file missing.mid not found"),
    (["--latents", "0"], "--latents=0 is invalid: use 1 or more latents"),
    (["--latents", "33"], "--latents=33 is invalid: the run was trained with 32 latents, so use 1 to 32"),
    (["--soundfont", "gm.sf2"], "--soundfont is set without --render"),
])
def test_invalid_option_rejected_before_loading(untrained_copy, tmp_path, args, message):
    result = _sample(str(untrained_copy), "--out", str(tmp_path / "out"), *args)
    assert message in _error(result)
    assert not (tmp_path / "out").exists()


def test_valid_options_reach_model_loading(untrained_copy, tmp_path):
    result = _sample(str(untrained_copy), "--out", str(tmp_path), "--temperature", "0", "--top-p", "1",
                     "--min-p", "0", "--latents", "32")
    assert "has no checkpoints yet" in _error(result)


def test_unreadable_prime_names_file(untrained_copy, tmp_path):
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(b"MThd\x00\x00")
    result = _sample(str(untrained_copy), "--out", str(tmp_path / "out"), "--prime", str(corrupt))
    assert str(corrupt) in _error(result)


def test_long_prime_suggests_prime_seconds(untrained_copy, prime, tmp_path):
    message = _error(_sample(str(untrained_copy), "--out", str(tmp_path), "--prime", str(prime)))
    assert f"is {_events(prime)} events long, but the model's context is {CONTEXT} events" in message
    suggested = message.split("--prime-seconds ")[1].split()[0]

    # The suggested length passes every check; a hundredth of a second more does not.
    fits = _sample(str(untrained_copy), "--out", str(tmp_path), "--prime", str(prime), "--prime-seconds", suggested)
    assert "has no checkpoints yet" in _error(fits)
    longer = f"{float(suggested) + 0.01:.2f}"
    too_long = _sample(str(untrained_copy), "--out", str(tmp_path), "--prime", str(prime), "--prime-seconds", longer)
    assert f"use --prime-seconds {suggested} or less" in _error(too_long)


def test_render_without_fluidsynth_rejected_first(untrained_copy, tmp_path):
    result = _sample(str(untrained_copy), "--out", str(tmp_path / "out"), "--render", env={"PATH": str(tmp_path)})
    message = _error(result)
    assert "fluidsynth program was not found" in message
    assert "apt-get install --no-install-recommends fluidsynth fluid-soundfont-gm" in message


def test_sample_writes_midi_png_wav_and_summary(trained_run, prime, tmp_path):
    render = shutil.which("fluidsynth") is not None
    out = tmp_path / "out"
    args = [str(trained_run), "--out", str(out), "-n", "2", "--seconds", "3", "--prime", str(prime),
            "--prime-seconds", "2", "--seed", "1"]
    result = _sample(*args, *(["--render"] if render else []))
    assert result.exit_code == 0, result.output

    names = {"sample_0.mid", "sample_1.mid", "sample_0.png", "sample_1.png"}
    if render:
        names |= {"sample_0.wav", "sample_1.wav"}
    assert {path.name for path in out.iterdir()} == names  # no temporary files left

    summary = " ".join(result.stdout.split())
    for index in range(2):
        midi = pretty_midi.PrettyMIDI(str(out / f"sample_{index}.mid"))
        notes = len(midi.instruments[0].notes)
        seconds = midi.get_end_time()
        assert 2.0 < seconds <= 5.0 + 1e-6
        audio = f" sample_{index}.wav" if render else " -"
        assert f"sample_{index}.mid {seconds:.1f} {notes} " in summary
        assert f"sample_{index}.png{audio}" in summary
        if render:
            with wave.open(str(out / f"sample_{index}.wav")) as file:
                assert abs(file.getnframes() / file.getframerate() - seconds) < 1.0
    assert "Compiled in" in summary
    assert "First event" in summary
    assert "events/s over 2 variation(s) with 32 latents" in summary
    assert f"Written to {out}" in summary


def test_sample_prints_merge_notice(trained_run, shared_data, tmp_path):
    # POP909 arrangements keep melody, bridge and piano on separate tracks.
    song = sorted((shared_data / "pop909").glob("*.mid"))[0]
    result = _sample(str(trained_run), "--out", str(tmp_path), "--prime", str(song), "--prime-seconds", "2",
                     "--events", "8", "--latents", "16", "--no-piano-roll")
    assert result.exit_code == 0, result.output
    assert "Notice: merged 3 tracks" in " ".join(result.output.split())
    assert "with 16 latents" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sample_0.mid"]


def test_sampling_again_keeps_earlier_samples(trained_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not a sample")
    first = _sample(str(trained_run), "--out", str(tmp_path), "-n", "2", "--events", "16", "--seed", "1")
    assert first.exit_code == 0, first.output
    earlier = {name: (tmp_path / name).read_bytes()
               for name in ("sample_0.mid", "sample_1.mid", "sample_0.png", "sample_1.png")}

    second = _sample(str(trained_run), "--out", str(tmp_path), "--events", "16", "--seed", "2")
    assert second.exit_code == 0, second.output
    assert "sample_2.mid" in second.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "notes.txt", "sample_0.mid", "sample_0.png", "sample_1.mid", "sample_1.png", "sample_2.mid", "sample_2.png"]
    for name, data in earlier.items():
        assert (tmp_path / name).read_bytes() == data, f"{name} was replaced"


def test_progress_shows_events_per_second():
    clock = iter([0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0])
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    column = _output._speed_column("events")
    with Progress(column, console=console, get_time=lambda: next(clock)) as progress:
        task = progress.add_task("sampling", total=1000)
        progress.update(task, completed=100)
        progress.update(task, completed=400)
        progress.update(task, completed=700)
        text = column.render(progress.tasks[0]).plain
    assert text == "300 events/s"


def _events(path: Path) -> int:
    from pact.encodings.performance import PerformanceTokenizer

    return len(PerformanceTokenizer().encode_file(path))


def test_exported_model_samples_like_its_run(trained_run, tmp_path):
    exported = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(trained_run), str(exported)])
    assert result.exit_code == 0, result.output
    assert "Exported step 30" in result.output
    assert sorted(path.name for path in exported.iterdir()) == [
        "config.json", "export.json", "metrics.jsonl", "params.npz", "tokenizer.json"]

    # The same seed gives the same piece from the run's checkpoint and from the export.
    pieces = []
    for source, folder in ((trained_run, tmp_path / "from_run"), (exported, tmp_path / "from_export")):
        result = _sample(str(source), "--events", "40", "--out", str(folder), "--no-piano-roll")
        assert result.exit_code == 0, result.output
        pieces.append((folder / "sample_0.mid").read_bytes())
    assert pieces[0] == pieces[1]


def test_exported_model_info_and_step(trained_run, tmp_path):
    from pact.run import load_model

    exported = tmp_path / "exported"
    assert runner.invoke(app, ["export", str(trained_run), str(exported)]).exit_code == 0
    result = runner.invoke(app, ["info", str(exported), "--json"])
    assert result.exit_code == 0, result.output
    assert '"checkpoint_steps": [\n    30\n  ]' in result.output or '"checkpoint_steps": [30]' in result.output
    with pytest.raises(PactError, match="contains step 30 only, not step 10"):
        load_model(exported, step=10)


def test_exported_params_of_other_model_rejected(trained_run, tmp_path):
    import json

    from pact.run import load_model

    exported = tmp_path / "exported"
    assert runner.invoke(app, ["export", str(trained_run), str(exported)]).exit_code == 0
    config = json.loads((exported / "config.json").read_text())
    config["model"]["num_layers"] = 3
    (exported / "config.json").write_text(json.dumps(config))
    with pytest.raises(PactError, match=r"params.npz contains another model than its config.json describes"):
        load_model(exported)


def test_out_that_is_a_file_rejected_first(untrained_copy, tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    message = _error(_sample(str(untrained_copy), "--out", str(existing)))
    assert message == f"--out {existing} is a file, not a folder: give a folder for the samples"
    assert existing.read_text() == "keep me"
