"""Consoles shared by every command: results on stdout, progress and diagnostics on stderr."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape

# Rich already turns colours off when the stream is not a terminal; NO_COLOR is honoured too.
stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def debug_enabled() -> bool:
    """Whether PACT_DEBUG asks for full tracebacks instead of one-line errors."""
    return os.environ.get("PACT_DEBUG", "") not in ("", "0")


def print_error(message: str) -> None:
    # Messages quote file names, which may contain brackets that Rich would read as markup.
    stderr.print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True)


def is_interactive() -> bool:
    return sys.stderr.isatty()
