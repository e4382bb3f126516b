"""`pact encode file` and `pact decode file` through typer's CliRunner and the installed entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pact.cli.main import app
from pact.encodings.midi import read_midi
from pact.errors import MidiReadError, TokenizerError, TokenizerMismatchError

runner = CliRunner()


def test_encode_prints_events(bugcases):
    result = runner.invoke(app, ["encode", "file", str(bugcases / "08_sustain_basic.mid")])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [
        "VELOCITY_25", "NOTE_ON_60", "TIME_SHIFT_30", "NOTE_ON_64", "TIME_SHIFT_70", "NOTE_OFF_60", "NOTE_OFF_64",
        "TIME_SHIFT_20", "NOTE_ON_67", "TIME_SHIFT_30", "NOTE_OFF_67",
    ]
    assert "11 events, 3 notes, 1.50 seconds" in result.stderr


def test_encode_json_file(bugcases, tmp_path):
    out = tmp_path / "tokens.json"
    result = runner.invoke(app, ["encode", "file", str(bugcases / "03_running_status.mid"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["tokenizer"]["name"] == "performance"
    assert document["tokenizer"]["vocab_size"] == 390
    assert document["events"][:2] == ["VELOCITY_23", "NOTE_ON_60"]
    assert document["ids"][:2] == [380, 62]
    assert len(document["ids"]) == len(document["events"]) == 8


def test_encode_notice_on_stderr(bugcases):
    result = runner.invoke(app, ["encode", "file", str(bugcases / "19_type0_multichannel.mid")])
    assert result.exit_code == 0, result.output
    assert "dropped 3 drum notes" in result.stderr
    assert "merged 1 track, 2 channels and 2 programs" in result.stderr
    assert "drum" not in result.stdout


def test_encode_include_drums(bugcases):
    result = runner.invoke(app, ["encode", "file", str(bugcases / "19_type0_multichannel.mid"), "--include-drums"])
    assert result.exit_code == 0, result.output
    assert "NOTE_ON_36" in result.stdout.split()
    assert "dropped" not in result.stderr


def test_encode_options_change_vocab(bugcases, tmp_path):
    out = tmp_path / "tokens.json"
    args = ["encode", "file", str(bugcases / "24_pitch_range_edges.mid"), "--min-pitch", "21", "--max-pitch", "108",
            "--steps-per-second", "50", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["tokenizer"]["options"]["min_pitch"] == 21
    assert document["tokenizer"]["options"]["steps_per_second"] == 50
    assert "dropped 4 notes outside the pitch range 21-108" in result.stderr


def test_encode_unreadable_file(bugcases):
    result = runner.invoke(app, ["encode", "file", str(bugcases / "26_truncated_file.bin")])
    assert result.exit_code == 1
    assert isinstance(result.exception, MidiReadError)
    assert "unexpected end of data in track 2" in str(result.exception)


def test_encode_invalid_option_value(bugcases):
    result = runner.invoke(app, ["encode", "file", str(bugcases / "03_running_status.mid"), "--velocity-bins", "200"])
    assert result.exit_code == 2
    assert "--velocity-bins" in result.stderr


def test_decode_json_from_encode(bugcases, tmp_path):
    tokens = tmp_path / "tokens.json"
    song = tmp_path / "song.mid"
    assert runner.invoke(app, ["encode", "file", str(bugcases / "08_sustain_basic.mid"), "--json", str(tokens)]).exit_code == 0
    result = runner.invoke(app, ["decode", "file", str(tokens), "--out", str(song)])
    assert result.exit_code == 0, result.output
    assert f"Wrote {song}: 3 notes, 1.50 seconds" in result.stdout
    assert read_midi(song).notes.as_tuples() == [(60, 0.0, 1.0, 97), (64, 0.3, 1.0, 97), (67, 1.2, 1.5, 97)]


@pytest.mark.parametrize(
    "document",
    [
        {"ids": [382, 62, 307, 190]},
        {"events": ["VELOCITY_25", "NOTE_ON_60", "TIME_SHIFT_50", "NOTE_OFF_60"]},
        {"tokens": ["VELOCITY_25", "NOTE_ON_60", "TIME_SHIFT_50", "NOTE_OFF_60"]},
        ["VELOCITY_25", "NOTE_ON_60", "TIME_SHIFT_50", "NOTE_OFF_60"],
    ],
)
def test_decode_accepts_ids_or_events(tmp_path, document):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(document))
    song = tmp_path / "song.mid"
    result = runner.invoke(app, ["decode", "file", str(tokens), "--out", str(song)])
    assert result.exit_code == 0, result.output
    assert read_midi(song).notes.as_tuples() == [(60, 0.0, 0.5, 97)]


def test_decode_case_notice(bugcases, tmp_path):
    song = tmp_path / "song.mid"
    result = runner.invoke(app, ["decode", "file", str(bugcases / "decode" / "D01_noteoff_without_noteon.json"),
                                 "--out", str(song)])
    assert result.exit_code == 0, result.output
    assert "ignored 2 NOTE_OFFs without a sounding note" in result.stderr
    assert "1 notes" not in result.stdout
    assert "1 note," in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"ids": [2, "x"]}', '"ids" must be a list of integers'),
        ('{"events": ["NOTE_ON_999"]}', "out of range"),
        ('{"other": 1}', 'no "ids" or "events" key'),
        ('{"ids": [2, 5000]}', "outside the vocabulary"),
        ("7", "expected a JSON object"),
        ('{"tokenizer": "performance", "ids": [2]}', '"tokenizer" must be a tokenizer spec'),
        ('{"tokenizer": {"name": "abc"}, "ids": [2]}', "unknown tokenizer 'abc'"),
    ],
)
def test_decode_bad_token_file(tmp_path, content, message):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(content)
    result = runner.invoke(app, ["decode", "file", str(tokens), "--out", str(tmp_path / "song.mid")])
    assert result.exit_code == 1
    assert isinstance(result.exception, TokenizerError)
    assert message in str(result.exception)
    assert not (tmp_path / "song.mid").exists()


def test_decode_other_tokenizer_version(tmp_path):
    tokens = tmp_path / "tokens.json"
    spec = {"name": "performance", "version": "0", "vocab_size": 390, "options": {}}
    tokens.write_text(json.dumps({"tokenizer": spec, "ids": [2]}))
    result = runner.invoke(app, ["decode", "file", str(tokens), "--out", str(tmp_path / "song.mid")])
    assert result.exit_code == 1
    assert isinstance(result.exception, TokenizerMismatchError)


def test_decode_missing_file(tmp_path):
    result = runner.invoke(app, ["decode", "file", str(tmp_path / "absent.json"), "--out", str(tmp_path / "x.mid")])
    assert result.exit_code == 1
    assert "file not found" in str(result.exception)


def help_text(*command: str) -> str:
    """Help output with Rich's box drawing and line wrapping removed."""
    output = runner.invoke(app, [*command, "--help"]).stdout
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_help_names_units():
    encode_help = help_text("encode", "file")
    assert "steps per second" in encode_help
    assert "10 ms" in encode_help
    assert "--include-drums" in encode_help
    decode_help = help_text("decode", "file")
    assert "--out" in decode_help


def test_entry_point_one_line_error(bugcases):
    command = [sys.executable, "-c", "from pact.cli.main import main; main()", "encode", "file",
               str(bugcases / "30_empty_file.bin")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"Error: {bugcases / '30_empty_file.bin'}: empty file" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_path_without_note_seq(bugcases):
    code = (
        "import sys; from pact.cli.main import app; from pact.encodings.performance import PerformanceTokenizer; "
        f"PerformanceTokenizer().encode_file({str(bugcases / '08_sustain_basic.mid')!r}); "
        "print(sorted(m for m in ('note_seq', 'pretty_midi', 'jax', 'symusic') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
