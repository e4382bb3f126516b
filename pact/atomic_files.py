"""Atomic file output: write to a temporary name beside the target, then rename.

A rename within one folder replaces the target in one step (POSIX `rename`, `os.replace` on
Windows), so a crash or Ctrl-C leaves either the old file or the complete new one, never half
a file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on any error delete it.

    The temporary file is not created here, so the writer creates it with the usual
    permissions. Its name is hidden (`.NAME.XXXXXXXX.tmp`) and ends in `.tmp`, so a writer that
    picks its format from the suffix needs the format passed explicitly.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
