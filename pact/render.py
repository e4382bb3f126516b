"""Render MIDI files to WAV audio with the FluidSynth program and a General MIDI soundfont.

`find_renderer` locates the `fluidsynth` program on PATH and a soundfont: the one given, else
the first that exists among the usual system paths, else the `TimGM6mb.sf2` that pretty_midi
ships. It raises `RenderError` with install instructions when either is missing, so a caller
can check before spending time on generation.

`Renderer.render` runs `fluidsynth -ni -F OUT -T wav -O s32 -r 44100 SOUNDFONT MIDI`: fast
render to a file, with no shell and no MIDI input (flags of FluidSynth 2.3). FluidSynth 2.3
renders about 3 s of silence after the last event, so the audio is cut at the file's end plus
a 0.5 s release tail. It is then peak-normalised to -1 dBFS, because FluidSynth's default gain
leaves piano around -30 dBFS, and written atomically as 16-bit PCM.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from pact.atomic_files import atomic_output
from pact.encodings import smf
from pact.errors import MidiReadError, RenderError

SAMPLE_RATE = 44_100
# Sound after the file's last event: note releases and reverb, faded out over the last 50 ms.
TAIL_SECONDS = 0.5
FADE_SECONDS = 0.05
PEAK_LEVEL = 10 ** (-1 / 20)  # -1 dBFS
# Seconds of rendering allowed per second of music, plus a fixed start-up allowance: a generous
# limit, because FluidSynth renders piano tens of times faster than real time.
TIMEOUT_PER_SECOND = 1.0
TIMEOUT_START = 60.0

# General MIDI soundfonts where Debian/Ubuntu (fluid-soundfont-gm, timgm6mb-soundfont),
# Fedora, Arch and Homebrew install them, in order of preference.
SYSTEM_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
INSTALL_HINT = (
    "install it with `apt-get install --no-install-recommends fluidsynth fluid-soundfont-gm` "
    "(about 160 MB; `brew install fluid-synth` on macOS)"
)


@dataclasses.dataclass(frozen=True)
class RenderedAudio:
    path: Path
    seconds: float  # length of the written audio
    peak: float  # peak amplitude of FluidSynth's output before normalisation, 0 to 1


@dataclasses.dataclass(frozen=True)
class Renderer:
    """The FluidSynth program and the soundfont it renders with."""

    program: Path
    soundfont: Path

    def render(self, midi_path: str | os.PathLike, wav_path: str | os.PathLike) -> RenderedAudio:
        """Render one MIDI file to a stereo 44.1 kHz 16-bit WAV file, atomically.

        Raises `RenderError` when FluidSynth fails, times out or renders silence from a file
        that has notes, and `MidiReadError` when the MIDI file cannot be read.
        """
        midi_path, wav_path = Path(midi_path), Path(wav_path)
        end_seconds, num_notes = _midi_end_and_notes(midi_path)

        with atomic_output(wav_path) as rendered:
            errors = self._run(midi_path, rendered, timeout=TIMEOUT_START + TIMEOUT_PER_SECOND * end_seconds)
            samples = _read_wav(rendered)  # [frames, channels] float64 in [-1, 1]
            peak = float(np.abs(samples).max(initial=0.0))
            if num_notes and peak == 0.0:
                output = f" (fluidsynth output: {'; '.join(errors)})" if errors else ""
                raise RenderError(
                    f"fluidsynth rendered silence from {midi_path}, which has {num_notes} notes{output}; "
                    f"check that the soundfont {self.soundfont} has General MIDI instruments, "
                    "or pass another with --soundfont"
                )
            samples = _trim(samples, end_seconds + TAIL_SECONDS)
            if peak > 0.0:
                samples = samples * (PEAK_LEVEL / peak)
            _write_wav(rendered, samples)
        return RenderedAudio(wav_path, len(samples) / SAMPLE_RATE, peak)

    def _run(self, midi_path: Path, output: Path, timeout: float) -> list[str]:
        """Run FluidSynth and return the error lines it printed; raise `RenderError` if it failed."""
        command = [
            str(self.program), "-ni", "-F", str(output), "-T", "wav", "-O", "s32",
            "-r", str(SAMPLE_RATE), str(self.soundfont), str(midi_path),
        ]
        try:
            finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RenderError(f"fluidsynth timed out after {timeout:.0f} s rendering {midi_path}") from None
        except OSError as error:
            raise RenderError(f"fluidsynth could not be started ({self.program}): {error}") from None
        # FluidSynth 2.3 exits with 0 even when it skips an unreadable file, so error lines in
        # its output and a missing output file count as failures too.
        errors = [line for line in (finished.stdout + finished.stderr).splitlines() if "error" in line.lower()]
        if finished.returncode != 0 or not output.is_file():
            detail = "; ".join(errors) or finished.stderr.strip() or f"exit status {finished.returncode}"
            raise RenderError(f"fluidsynth failed to render {midi_path}: {detail}")
        return errors


def find_renderer(soundfont: str | os.PathLike | None = None) -> Renderer:
    """Locate `fluidsynth` and a soundfont (`soundfont`, else the usual paths, else pretty_midi's).

    Raises `RenderError` naming what is missing and how to install it.
    """
    program = shutil.which("fluidsynth")
    if program is None:
        raise RenderError(f"the fluidsynth program was not found on PATH, and --render needs it; {INSTALL_HINT}")
    if soundfont is not None:
        path = Path(soundfont)
        _check_soundfont(path)
        return Renderer(Path(program), path)
    for candidate in default_soundfonts():
        if candidate.is_file():
            _check_soundfont(candidate)
            return Renderer(Path(program), candidate)
    searched = ", ".join(str(path) for path in default_soundfonts())
    raise RenderError(f"no General MIDI soundfont found (searched {searched}); {INSTALL_HINT}, "
                      "or pass one with --soundfont PATH")


def default_soundfonts() -> list[Path]:
    """Soundfonts searched when none is given: the system paths, then pretty_midi's TimGM6mb.sf2."""
    paths = [Path(path) for path in SYSTEM_SOUNDFONTS]
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec("pretty_midi")
    if spec is not None and spec.submodule_search_locations:
        paths.append(Path(next(iter(spec.submodule_search_locations))) / "TimGM6mb.sf2")
    return paths


def _check_soundfont(path: Path) -> None:
    """Raise `RenderError` unless `path` is a readable SoundFont 2 file (a RIFF "sfbk" chunk)."""
    if not path.is_file():
        raise RenderError(f"soundfont {path} not found; pass an existing .sf2 file with --soundfont")
    try:
        with open(path, "rb") as file:
            header = file.read(12)
    except OSError as error:
        raise RenderError(f"soundfont {path} cannot be read: {error.strerror or error}") from None
    if header[:4] != b"RIFF" or header[8:12] != b"sfbk":
        raise RenderError(f"{path} is not a SoundFont 2 file (no RIFF sfbk header); pass an .sf2 file with --soundfont")


def _midi_end_and_notes(path: Path) -> tuple[float, int]:
    """Seconds to the last event of any track, and the number of note-ons, of a MIDI file."""
    contents = smf.read_smf(path)
    if not contents.num_tracks:
        raise MidiReadError(path, "the file has no tracks to render")
    end_tick = int(contents.track_end_ticks.max())
    end_seconds = float(contents.tempo_map.seconds(np.array([end_tick]))[0])
    events = contents.events
    num_notes = int(((events.status >> 4 == 0x9) & (events.data2 > 0)).sum())
    return end_seconds, num_notes


def _read_wav(path: Path) -> np.ndarray:
    """Samples of a 32-bit PCM WAV file as float64 in [-1, 1]; [frames, channels]."""
    try:
        with wave.open(str(path), "rb") as file:
            if file.getsampwidth() != 4 or file.getframerate() != SAMPLE_RATE:
                raise RenderError(
                    f"fluidsynth wrote {8 * file.getsampwidth()}-bit audio at {file.getframerate()} Hz, "
                    f"expected 32-bit at {SAMPLE_RATE} Hz; is `fluidsynth -O s32 -r {SAMPLE_RATE}` supported?"
                )
            channels = file.getnchannels()
            data = file.readframes(file.getnframes())
    except (wave.Error, EOFError) as error:
        raise RenderError(f"fluidsynth wrote an unreadable WAV file: {error}") from None
    return np.frombuffer(data, dtype="<i4").reshape(-1, channels) / 2.0**31


def _trim(samples: np.ndarray, seconds: float) -> np.ndarray:
    """Cut samples [frames, channels] to `seconds`, fading out the last FADE_SECONDS."""
    frames = min(len(samples), round(seconds * SAMPLE_RATE))
    samples = samples[:frames].copy()
    fade = min(frames, round(FADE_SECONDS * SAMPLE_RATE))
    if fade:
        samples[frames - fade:] *= np.linspace(1.0, 0.0, fade)[:, None]
    return samples


def _write_wav(path: Path, samples: np.ndarray) -> None:
    """Write samples [frames, channels] in [-1, 1] as 16-bit PCM at SAMPLE_RATE."""
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(samples.shape[1])
        file.setsampwidth(2)
        file.setframerate(SAMPLE_RATE)
        file.writeframes(pcm.tobytes())
