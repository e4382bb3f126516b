"""Consoles shared by every command: results on stdout, progress and diagnostics on stderr."""

from __future__ import annotations

import contextlib
import dataclasses
import os

from rich.console import Console
from rich.markup import escape

# Rich already turns colours off when the stream is not a terminal; NO_COLOR is honoured too.
stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


@dataclasses.dataclass
class _State:
    quiet: bool = False


state = _State()


def show_progress() -> bool:
    """Progress bars only for a person at a terminal, and not with --quiet."""
    return not state.quiet and stderr.is_terminal


class ProgressHandle:
    """What `progress_bar` yields: `advance(count)` or `update(completed, total)`."""

    def __init__(self, progress=None, task=None):
        self.progress = progress
        self.task = task

    def advance(self, count: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, count)

    def update(self, completed: int, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, total=total)


@contextlib.contextmanager
def progress_bar(total: int | None, label: str, unit: str = "", show_speed: bool = False):
    """Yield a `ProgressHandle` for a Rich progress bar on stderr; it does nothing without a terminal.

    `show_speed` adds the rate in `unit` per second, measured over the updates after the first.
    """
    if not show_progress():
        yield ProgressHandle()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    if show_speed:
        columns.append(_speed_column(unit or "items"))
    with Progress(*columns, TimeRemainingColumn(), console=stderr) as progress:
        yield ProgressHandle(progress, progress.add_task(label, total=total))


def _speed_column(unit: str):
    """Build a Rich progress column that shows the task's speed as "1,234 UNIT/s"."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text(f"- {unit}/s", style="progress.data.speed")
            return Text(f"{speed:,.0f} {unit}/s", style="progress.data.speed")

    return SpeedColumn()


def debug_enabled() -> bool:
    """Whether PACT_DEBUG asks for full tracebacks instead of one-line errors."""
    return os.environ.get("PACT_DEBUG", "") not in ("", "0")


def print_error(message: str) -> None:
    # Messages quote file names, which may contain brackets that Rich would read as markup.
    stderr.print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True)


def configure_logging(verbosity: int) -> None:
    """Send pact's logs to stderr through Rich: -1 quiet (warnings), 0 info, 1 debug."""
    import logging

    from rich.logging import RichHandler

    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = RichHandler(console=stderr, show_path=False, show_time=verbosity > 0, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("pact")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Orbax and TFDS log every file operation through absl at INFO, and Orbax's writer threads
    # log each failed write at ERROR before the save raises the error pact reports. Keep those
    # for -v.
    if verbosity < 1:
        for name in ("orbax", "jax._src.xla_bridge", "tensorflow_datasets"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("absl").setLevel(logging.CRITICAL)
