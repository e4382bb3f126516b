"""Entry point of the `pact` command: wires the command groups and turns errors into messages."""

from __future__ import annotations

import os
import sys

import typer

from pact import __version__
from pact.cli import _output
from pact.cli._groups import decode_app, encode_app, eval_app

app = typer.Typer(
    name="pact",
    help="Long-context symbolic music generation with Perceiver AR.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
)


app.add_typer(encode_app, name="encode")
app.add_typer(decode_app, name="decode")
app.add_typer(eval_app, name="eval")

# Command modules register themselves on `app` and the groups when imported.
from pact.cli import dataset, evaluate, export, info, quickstart, sample, tokens, train  # noqa: E402,F401

app.command("quickstart")(quickstart.quickstart)
app.command("train", epilog=train.EXAMPLES)(train.train)
app.command("sample", epilog=sample.EXAMPLES)(sample.sample)
app.command("info")(info.info)
app.command("export")(export.export)


def _print_version(value: bool) -> None:
    if value:
        _output.stdout.print(f"pact {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details, library logs included."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log warnings and errors only; no progress bars."),
) -> None:
    """Long-context symbolic music generation with Perceiver AR."""
    _output.state.quiet = quiet
    _output.configure_logging(-1 if quiet else (1 if verbose else 0))


def main() -> None:
    """Run the CLI; a `PactError` becomes a one-line message and exit status 1."""
    from pact.errors import DistributedError, PactError, no_room_cause

    try:
        app()
    except OSError as error:
        if no_room_cause(error) is None or _output.debug_enabled():
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        _output.print_error(
            f"{error.strerror}{where}. Files written before it are intact: free space (or raise the "
            "file-size limit) and run the same command again."
        )
        sys.exit(1)
    except PactError as error:
        if _output.debug_enabled():
            raise
        _output.print_error(str(error))
        _output.stderr.print("[dim]Set PACT_DEBUG=1 to see the traceback.[/dim]")
        if isinstance(error, DistributedError):
            # Exit at once: JAX's exit handler would wait at a shutdown barrier for the
            # processes that were lost, then abort.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        sys.exit(1)


if __name__ == "__main__":
    main()
