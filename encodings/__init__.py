"""Tokenizer plug-ins, looked up by name.

Built-in tokenizers live in this package. Other packages add their own through the
`pact.tokenizers` entry-point group, so installing them is enough:

    [project.entry-points."pact.tokenizers"]
    abc_notation = "my_package.abc:AbcTokenizer"

Modules are imported only when a tokenizer is requested, which keeps `pact --help` fast.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from pact.encodings.base import EOS_ID, NUM_RESERVED_IDS, PAD_ID, PairedEvents, Tokenizer
from pact.errors import TokenizerError

ENTRY_POINT_GROUP = "pact.tokenizers"

# Registry name -> "module:class" of the built-in tokenizers.
_BUILTIN = {
    "bytes": "pact.encodings.bytes:BytesTokenizer",
    "copy": "pact.encodings.copy_task:CopyTaskTokenizer",
    "image": "pact.encodings.image:ImageTokenizer",
    "performance": "pact.encodings.performance:PerformanceTokenizer",
    "sentencepiece": "pact.encodings.sentencepiece_tokenizer:SentencePieceTokenizer",
}

__all__ = [
    "EOS_ID",
    "NUM_RESERVED_IDS",
    "PAD_ID",
    "PairedEvents",
    "Tokenizer",
    "available_tokenizers",
    "get_tokenizer",
    "tokenizer_from_spec",
]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_tokenizers() -> list[str]:
    """Names of the built-in and installed tokenizers, sorted."""
    return sorted(set(_BUILTIN) | set(_entry_points()))


def _load_class(name: str) -> type[Tokenizer]:
    if name in _BUILTIN:
        module_name, class_name = _BUILTIN[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise TokenizerError(
            f"unknown tokenizer {name!r}; available: {', '.join(available_tokenizers())}"
        )
    tokenizer_class = entry_point.load()
    if not (isinstance(tokenizer_class, type) and issubclass(tokenizer_class, Tokenizer)):
        raise TokenizerError(
            f"entry point {entry_point.value!r} for tokenizer {name!r} is not a subclass of "
            "pact.encodings.Tokenizer"
        )
    return tokenizer_class


def get_tokenizer(name: str, **options: Any) -> Tokenizer:
    """Build the tokenizer registered as `name` with the given options."""
    tokenizer_class = _load_class(name)
    try:
        return tokenizer_class(**options)
    except TypeError as error:
        raise TokenizerError(f"invalid options {options!r} for tokenizer {name!r}: {error}") from None


def tokenizer_from_spec(spec: dict[str, Any], source: str = "the saved spec") -> Tokenizer:
    """Rebuild a tokenizer from a saved `Tokenizer.spec()` and check that it matches.

    Raises `TokenizerMismatchError` when the installed tokenizer of that name now has another
    version or vocabulary size than the one that made the spec.
    """
    tokenizer = get_tokenizer(spec["name"], **spec.get("options", {}))
    tokenizer.check_compatible(spec, source)
    return tokenizer
