"""Markdown reference of every `pact` command, generated from the Typer app itself.

    python -m pact.cli._reference > docs/cli.md

A test compares docs/cli.md with this output, so the reference never drifts from `--help`.
"""

from __future__ import annotations

import inspect


def _rows(command, context) -> list[tuple[str, str]]:
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(context)
        if record is None:
            # Arguments have no help record in click; describe them from their own help.
            record = (param.name.upper() if param.required else f"[{param.name.upper()}]", param.help or "")
        rows.append(record)
    return rows


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section(path: list[str], command, parent_context) -> list[str]:
    from typer._click.core import Context

    context = Context(command, info_name=path[-1], parent=parent_context)
    lines = [f"## `{' '.join(path)}`", ""]
    if command.help:
        lines += [inspect.cleandoc(command.help), ""]
    usage = command.get_usage(context).removeprefix("Usage: ")
    lines += ["```text", usage, "```", ""]
    rows = _rows(command, context)
    if rows:
        lines += ["| argument or option | description |", "|---|---|"]
        lines += [f"| `{_cell(name)}` | {_cell(text)} |" for name, text in rows]
        lines.append("")
    if command.epilog:
        lines += ["```text", inspect.cleandoc(command.epilog), "```", ""]
    subcommands = getattr(command, "commands", {})
    for name in subcommands:
        lines += _section(path + [name], subcommands[name], context)
    return lines


def render_reference() -> str:
    """Return docs/cli.md: one section per command and subcommand, in the order `--help` lists them."""
    import typer.main

    from pact.cli.main import app

    root = typer.main.get_command(app)
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `pact` Typer app with `python -m pact.cli._reference > docs/cli.md`;",
        "`pact COMMAND --help` prints the same text.",
        "",
    ]
    return "\n".join(lines + _section(["pact"], root, None)).rstrip() + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
