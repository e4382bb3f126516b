"""WAV rendering through the real fluidsynth program, and its errors; atomic file output."""

import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from pact import render
from pact.atomic_files import atomic_output
from pact.encodings.performance import PerformanceTokenizer
from pact.errors import RenderError
from pact.quickstart import bundled_midi_files

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None,
    reason="the fluidsynth program is not installed: install it with "
           "`apt-get install --no-install-recommends fluidsynth` (.ci/run does where apt-get is available)",
)


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory) -> Path:
    """The first 12 s of a bundled real performance, written as `pact sample` writes MIDI."""
    tokenizer = PerformanceTokenizer()
    path = tmp_path_factory.mktemp("midi") / "excerpt.mid"
    ids = tokenizer.truncate_ids(tokenizer.encode_file(bundled_midi_files()[0]), 12.0)
    tokenizer.decode_to_file(ids, path)
    return path


def _samples(path: Path) -> tuple[np.ndarray, wave.Wave_read]:
    with wave.open(str(path), "rb") as file:
        data = np.frombuffer(file.readframes(file.getnframes()), dtype="<i2").reshape(-1, file.getnchannels())
        return data, file


@needs_fluidsynth
def test_render_wav_matches_midi_duration(excerpt, tmp_path):
    renderer = render.find_renderer()
    audio = renderer.render(excerpt, tmp_path / "excerpt.wav")

    samples, file = _samples(audio.path)
    midi_seconds = pretty_midi.PrettyMIDI(str(excerpt)).get_end_time()
    assert file.getframerate() == 44_100
    assert file.getnchannels() == 2
    assert file.getsampwidth() == 2
    assert abs(len(samples) / 44_100 - midi_seconds) < 1.0
    assert audio.seconds == pytest.approx(len(samples) / 44_100)
    assert audio.seconds >= midi_seconds

    # Sound throughout the piece, peak-normalised to -1 dBFS, and nothing left but the WAV.
    peak = np.abs(samples.astype(np.int64)).max()
    assert peak == pytest.approx(32767 * render.PEAK_LEVEL, abs=2)
    middle = samples[int(2 * 44_100):int((midi_seconds - 1) * 44_100)].astype(np.float64)
    assert np.sqrt(np.mean(middle**2)) > 100
    assert list(tmp_path.iterdir()) == [audio.path]


@needs_fluidsynth
def test_render_with_pretty_midi_soundfont(excerpt, tmp_path):
    soundfont = render.default_soundfonts()[-1]
    assert soundfont.name == "TimGM6mb.sf2"
    renderer = render.find_renderer(soundfont)
    assert renderer.soundfont == soundfont
    audio = renderer.render(excerpt, tmp_path / "excerpt.wav")
    assert audio.peak > 0


@needs_fluidsynth
def test_render_timeout_leaves_no_file(excerpt, tmp_path, monkeypatch):
    # A render stopped part-way (here by its time limit) must leave neither a WAV nor a temporary file.
    monkeypatch.setattr(render, "TIMEOUT_START", 0.0)
    monkeypatch.setattr(render, "TIMEOUT_PER_SECOND", 0.0)
    with pytest.raises(RenderError, match="timed out"):
        render.find_renderer().render(excerpt, tmp_path / "excerpt.wav")
    assert list(tmp_path.iterdir()) == []


def test_missing_fluidsynth_names_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError) as error:
        render.find_renderer()
    message = str(error.value)
    assert "fluidsynth program was not found" in message
    assert "apt-get install --no-install-recommends fluidsynth fluid-soundfont-gm" in message


@needs_fluidsynth
def test_missing_soundfont_rejected(tmp_path):
    with pytest.raises(RenderError, match=f"soundfont {tmp_path / 'none.sf2'} not found"):
        render.find_renderer(tmp_path / "none.sf2")


@needs_fluidsynth
def test_non_soundfont_file_rejected(excerpt):
    with pytest.raises(RenderError, match="is not a SoundFont 2 file"):
        render.find_renderer(excerpt)


def test_pretty_midi_soundfont_is_last_fallback():
    fallback = render.default_soundfonts()[-1]
    assert fallback == Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    assert fallback.is_file()
    render._check_soundfont(fallback)


def test_atomic_output_replaces_on_success(tmp_path):
    target = tmp_path / "piece.mid"
    target.write_bytes(b"old")
    with atomic_output(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".piece.mid.")
        temporary.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [target]
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def test_atomic_output_keeps_old_file_on_interrupt(tmp_path):
    target = tmp_path / "piece.png"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half a fi")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
