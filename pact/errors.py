"""Typed errors that the CLI turns into one-line messages.

Library code raises a subclass of `PactError` for every failure a user can fix (bad input,
a wrong flag value, a run directory from another tokenizer). Anything else is a bug and
keeps its traceback.
"""


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
