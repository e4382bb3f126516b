"""docs/cli.md matches the Typer app, so the reference says what `--help` says."""

from pathlib import Path

from pact.cli._reference import render_reference

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    written = (ROOT / "docs" / "cli.md").read_text()
    assert written == render_reference(), (
        "docs/cli.md is out of date: regenerate it with `python -m pact.cli._reference > docs/cli.md`"
    )


def test_cli_reference_covers_every_command():
    reference = render_reference()
    for command in ("quickstart", "train", "sample", "info", "export", "encode file", "encode dataset",
                    "decode file", "eval benchmark", "eval samples"):
        assert f"## `pact {command}`" in reference
