"""`pact encode file` and `pact decode file`: one MIDI file to token ids and back.

Both go through the same tokenizer methods as the dataset writer (`read` + `encode`, which
is `Tokenizer.encode_file`), so what these commands print is what a dataset stores.

Examples:
    pact encode file song.mid
    pact encode file song.mid --json song.json
    pact decode file song.json --out decoded.mid
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pact.cli import _output
from pact.cli._groups import decode_app, encode_app

_IncludeDrums = Annotated[
    bool,
    typer.Option("--include-drums", help="Keep notes on MIDI channel 10 (drums) instead of dropping them."),
]
_StepsPerSecond = Annotated[
    int, typer.Option(help="Time resolution: TIME_SHIFT steps per second (100 = 10 ms steps).", min=1, max=1000)
]
_MaxShiftSteps = Annotated[
    int, typer.Option(help="Maximum length of one TIME_SHIFT, in steps; longer gaps use several.", min=1, max=10_000)
]
_VelocityBins = Annotated[
    int, typer.Option(help="Number of VELOCITY bins over MIDI velocities 1-127; 0 drops velocity.", min=0, max=127)
]
_MinPitch = Annotated[int, typer.Option(help="Minimum MIDI pitch kept (0-127); lower notes are dropped.", min=0, max=127)]
_MaxPitch = Annotated[int, typer.Option(help="Maximum MIDI pitch kept (0-127); higher notes are dropped.", min=0, max=127)]


@encode_app.command("file")
def encode_file(
    path: Annotated[Path, typer.Argument(help="MIDI file to encode (.mid, .midi, .kar or .rmi).", show_default=False)],
    json_path: Annotated[
        Optional[Path],
        typer.Option("--json", help='Also write {"tokenizer": spec, "ids": [...], "events": [...]} to this file.'),
    ] = None,
    include_drums: _IncludeDrums = False,
    steps_per_second: _StepsPerSecond = 100,
    max_shift_steps: _MaxShiftSteps = 100,
    velocity_bins: _VelocityBins = 32,
    min_pitch: _MinPitch = 0,
    max_pitch: _MaxPitch = 127,
) -> None:
    """Print the performance events of one MIDI file, one per line."""
    from pact.encodings import get_tokenizer
    from pact.encodings.midi import count_of

    tokenizer = get_tokenizer(
        "performance",
        velocity_bins=velocity_bins,
        max_shift_steps=max_shift_steps,
        steps_per_second=steps_per_second,
        include_drums=include_drums,
        min_pitch=min_pitch,
        max_pitch=max_pitch,
    )
    item = tokenizer.read(path)
    ids = tokenizer.encode(item)
    events = tokenizer.ids_to_tokens(ids)

    for notice in tokenizer.notices(item):
        _output.stderr.print(f"Notice: {path}: {notice}", markup=False, soft_wrap=True)
    if json_path is not None:
        document = {"tokenizer": tokenizer.spec(), "ids": ids.tolist(), "events": events}
        _write_text_atomically(json_path, json.dumps(document) + "\n")
    if events:
        typer.echo("\n".join(events))
    summary = f"{count_of(len(ids), 'event')}, {count_of(len(item.notes), 'note')}"
    _output.stderr.print(
        f"{path}: {summary}, {tokenizer.duration_seconds(ids):.2f} seconds", markup=False, soft_wrap=True
    )


@decode_app.command("file")
def decode_file(
    path: Annotated[
        Path,
        typer.Argument(
            help='JSON token file: {"ids": [...]} or {"events": ["NOTE_ON_60", ...]}, as written by '
            "`pact encode file --json`. Its tokenizer spec, if present, selects the tokenizer.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="MIDI file to write.", show_default=False)],
) -> None:
    """Decode a JSON token file into a one-track piano MIDI file."""
    from pact.encodings import tokenizer_from_spec
    from pact.encodings.midi import count_of
    from pact.encodings.performance import PerformanceTokenizer

    from pact.errors import TokenizerError

    document = _load_token_file(path)
    spec = document.get("tokenizer")
    if spec is not None and not (isinstance(spec, dict) and isinstance(spec.get("name"), str)):
        raise TokenizerError(f'{path}: "tokenizer" must be a tokenizer spec with a "name", as `pact encode file` writes')
    tokenizer = tokenizer_from_spec(spec, source=str(path)) if spec is not None else PerformanceTokenizer()
    if not isinstance(tokenizer, PerformanceTokenizer):
        raise TokenizerError(
            f"{path}: ids of tokenizer {tokenizer.name!r} do not decode to MIDI; this command reads performance ids"
        )
    ids = _ids_from_document(document, tokenizer, path)

    notes, report = tokenizer.decode_with_report(ids)
    tokenizer.write(notes, out)
    for notice in report.notices():
        _output.stderr.print(f"Notice: {path}: {notice}", markup=False, soft_wrap=True)
    _output.stdout.print(
        f"Wrote {out}: {count_of(len(notes), 'note')}, {notes.duration:.2f} seconds", markup=False, soft_wrap=True
    )


def _load_token_file(path: Path) -> dict[str, Any]:
    from pact.errors import TokenizerError

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TokenizerError(f"{path}: cannot read the file: {error}") from None
    except json.JSONDecodeError as error:
        raise TokenizerError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    if isinstance(document, list):
        document = {"events" if document and isinstance(document[0], str) else "ids": document}
    if not isinstance(document, dict):
        raise TokenizerError(f'{path}: expected a JSON object with "ids" or "events", got {type(document).__name__}')
    return document


def _ids_from_document(document: dict[str, Any], tokenizer, path: Path):
    """Ids from the "ids" key, else from event names under "events" (or "tokens")."""
    import numpy as np

    from pact.errors import TokenizerError

    if "ids" in document:
        ids = document["ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TokenizerError(f'{path}: "ids" must be a list of integers')
        return np.asarray(ids, dtype=np.int64)
    for key in ("events", "tokens"):
        if key in document:
            names = document[key]
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise TokenizerError(f'{path}: "{key}" must be a list of event names such as "NOTE_ON_60"')
            try:
                return tokenizer.tokens_to_ids(names)
            except TokenizerError as error:
                raise TokenizerError(f"{path}: {error}") from None
    raise TokenizerError(f'{path}: no "ids" or "events" key; write the file with `pact encode file --json`')


def _write_text_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename, so a crash never leaves half a file."""
    from pact.atomic_files import atomic_output

    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
