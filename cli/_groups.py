"""Command groups (`pact encode ...`, `pact decode ...`, `pact eval ...`).

Defined apart from `main` so that command modules can register on them without importing
the entry point.
"""

import typer

_SETTINGS = {"help_option_names": ["-h", "--help"]}

encode_app = typer.Typer(
    help="Encode MIDI, text or image files into token ids: one file, or a whole dataset.",
    no_args_is_help=True,
    context_settings=_SETTINGS,
)
decode_app = typer.Typer(
    help="Decode token ids back into files.",
    no_args_is_help=True,
    context_settings=_SETTINGS,
)
eval_app = typer.Typer(
    help="Evaluate a trained run or generated samples.",
    no_args_is_help=True,
    context_settings=_SETTINGS,
)
