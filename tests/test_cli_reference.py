"""docs/cli.md matches the Typer app, so the reference and `--help` print the same text."""

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


def test_list_configs_needs_no_run_dir():
    from typer.testing import CliRunner

    from pact.cli.main import app

    result = CliRunner().invoke(app, ["train", "--list-configs"])
    assert result.exit_code == 0, result.output
    assert "maestro-small  context 2,048, 256 latents, 6 layers of width 256, 4 heads" in result.output
