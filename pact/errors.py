"""Typed errors that the CLI turns into one-line messages.

Library code raises a subclass of `PactError` for every failure a user can fix (bad input,
a wrong flag value, a run directory from another tokenizer). Anything else is a bug and
keeps its traceback.
"""

import errno
import os
import re


class PactError(Exception):
    """Base class of every error a user can act on."""


class ConfigError(PactError):
    """An invalid configuration value, override or option combination."""


class MidiReadError(PactError):
    """A MIDI file that cannot be read; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TextReadError(PactError):
    """A text file that cannot be read as UTF-8; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # The default reduce passes only the message back to __init__, which needs two arguments.
        return (type(self), (self.path, self.reason))


class ImageReadError(PactError):
    """An image file that cannot be read; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class TokenizerError(PactError):
    """Ids or tokens that a tokenizer cannot encode or decode."""


class TokenizerMismatchError(PactError):
    """A dataset, run or checkpoint made with another tokenizer, version or vocabulary."""


class DatasetError(PactError):
    """A dataset that is missing, incomplete or not readable."""


class CheckpointError(PactError):
    """A run directory or checkpoint that is missing, damaged or does not match the model."""


class RenderError(PactError):
    """Audio rendering that cannot start or failed: a missing program or soundfont, or a failed run."""


class DistributedError(PactError):
    """A multi-process run that cannot start, or that lost one of its processes."""


class WriteError(PactError):
    """An output that could not be written: no space left on the device, or a file-size limit."""


# errno values that mean "the device or a limit has no room", as opposed to a bug.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# TensorStore, which writes Orbax checkpoints, reports a failed write as a ValueError whose
# message ends with the errno, for example "... No space left on device [os_error_code='28']".
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='(\d+)'")


def no_room_cause(error: BaseException) -> OSError | None:
    """An OSError for the full device or size limit in `error`'s chain, if it has one."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _NO_ROOM:
            return error
        match = _TENSORSTORE_ERRNO.search(str(error)) if isinstance(error, ValueError) else None
        if match and int(match.group(1)) in _NO_ROOM:
            code = int(match.group(1))
            return OSError(code, os.strerror(code))
        # Other libraries (array_record through TFDS) keep only the C library's message.
        for code in _NO_ROOM:
            if isinstance(error, (RuntimeError, ValueError)) and os.strerror(code) in str(error):
                return OSError(code, os.strerror(code))
        error = error.__cause__ or error.__context__
    return None
