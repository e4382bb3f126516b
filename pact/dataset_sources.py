"""Dataset inputs that are not folders: prepared TFDS datasets and the synthetic copy task.

Besides a folder (see `pact.dataset_inputs`), `pact encode dataset` takes:

    tfds:NAME        a TFDS dataset already prepared in array_record format under
                     --tfds-data-dir, for example tfds:pg19 or tfds:imagenet_resized/64x64.
                     It is read with `tfds.data_source`, without TensorFlow.
    synthetic:copy   the copy task of `pact.encodings.copy_task`, generated from a seed.

Each example of such an input becomes a `SourceFile` without a path, whose `record` is its
index in the split. Its `source`, which the dataset stores, is "<split>/<index>" with the
index zero-padded to 9 digits, so that source order is index order. The listing's `reader`
reads an example in whichever process encodes it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from pact.dataset_inputs import SPLITS, InputListing, SourceFile, list_input_files
from pact.encodings import Tokenizer
from pact.errors import ConfigError, DatasetError, TextReadError, TokenizerMismatchError

TFDS_PREFIX = "tfds:"
COPY_TASK_INPUT = "synthetic:copy"

LAYOUT_TFDS = "tfds"
LAYOUT_COPY_TASK = "copy_task"

# Default tokenizer for each modality of a TFDS dataset.
_TFDS_TOKENIZERS = {"text": "bytes", "image": "image"}

# The examples of a split fit in 9 digits: ImageNet's training split has 1,281,167.
_INDEX_DIGITS = 9

MAX_COPY_LENGTH = 10_000_000
MAX_COPY_EXAMPLES = 100_000_000


def is_folder_input(input_spec: str | os.PathLike) -> bool:
    """Return whether `input_spec` names a folder rather than a `tfds:` dataset or a synthetic task."""
    text = os.fspath(input_spec)
    return not (text.startswith(TFDS_PREFIX) or text == COPY_TASK_INPUT)


def list_inputs(
    input_spec: str | os.PathLike,
    tokenizer: Tokenizer,
    *,
    exclude: str | os.PathLike | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
    copy_task: CopyTaskSettings | None = None,
) -> InputListing:
    """List the examples of a folder, a `tfds:NAME` dataset or `synthetic:copy`.

    Raises `DatasetError` or `ConfigError` naming the input when it cannot be read with
    `tokenizer`, and `ConfigError` for settings given to the wrong kind of input.
    """
    text = os.fspath(input_spec)
    if tfds_data_dir is not None and not text.startswith(TFDS_PREFIX):
        raise ConfigError(f"--tfds-data-dir applies only to tfds:NAME inputs, not to {text}")
    if copy_task is not None and text != COPY_TASK_INPUT:
        raise ConfigError(f"copy task settings apply only to the {COPY_TASK_INPUT} input, not to {text}")

    if text.startswith(TFDS_PREFIX):
        return list_tfds_examples(text[len(TFDS_PREFIX) :], tokenizer, tfds_data_dir)
    if text == COPY_TASK_INPUT:
        return list_copy_task(copy_task or CopyTaskSettings(), tokenizer)
    return list_input_files(text, tokenizer.file_suffixes, exclude=exclude)


def default_tokenizer_name(input_spec: str | os.PathLike, tfds_data_dir: str | os.PathLike | None = None) -> str:
    """Return the name of the tokenizer that encodes an input unless --tokenizer names another.

    Folders: performance. synthetic:copy: copy. A TFDS dataset: bytes for its Text feature
    or image for its Image feature.
    """
    text = os.fspath(input_spec)
    if text == COPY_TASK_INPUT:
        return "copy"
    if not text.startswith(TFDS_PREFIX):
        return "performance"

    builder = _tfds_builder(text[len(TFDS_PREFIX) :], tfds_data_dir)
    kinds = {modality for modality, names in _features_by_modality(builder).items() if names}
    for modality in ("text", "image"):
        if modality in kinds:
            return _TFDS_TOKENIZERS[modality]
    raise DatasetError(
        f"TFDS dataset {builder.name} has no Text or Image feature for pact to encode; its features are "
        f"{', '.join(builder.info.features.keys())}"
    )


def read_item(file: SourceFile, tokenizer: Tokenizer, reader: Any | None) -> Any:
    """Read one input item: a file with `tokenizer.read`, an example with the listing's reader."""
    if file.path is not None:
        return tokenizer.read(file.path)
    if reader is None:
        raise ValueError(f"{file.location} is not a file, so reading it needs the listing's reader")
    return reader.read(file)


# TFDS datasets.


@dataclasses.dataclass
class TfdsExampleReader:
    """Reads one feature of the examples of a prepared TFDS dataset.

    Pickles without its open data sources, so encoding worker processes can use it.
    """

    name: str
    data_dir: str | None
    feature: str
    modality: str

    def __post_init__(self):
        self._sources = None

    def read(self, file: SourceFile) -> Any:
        """Return the feature of example `file.record`: str for a Text feature, a uint8 array for an Image."""
        if self._sources is None:
            import tensorflow_datasets as tfds

            self._sources = tfds.data_source(self.name, data_dir=self.data_dir, download=False)
        value = self._sources[file.split][file.record][self.feature]
        if self.modality == "image":
            return np.asarray(value)
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TextReadError(file.location, f"feature {self.feature!r} is not valid UTF-8: {error}") from None
        return str(value)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sources"] = None
        return state


def list_tfds_examples(
    name: str, tokenizer: Tokenizer, data_dir: str | os.PathLike | None = None
) -> InputListing:
    """List the examples of the prepared TFDS dataset `name` (with its config, as in "imagenet_resized/64x64").

    The feature read is the dataset's only Text feature for a text tokenizer, or its only
    Image feature for an image tokenizer. Only the splits train, validation and test are
    listed. Raises `DatasetError` when the dataset is unknown, not prepared under
    `data_dir`, prepared in a format that needs TensorFlow, or has no such feature.
    """
    builder = _tfds_builder(name, data_dir)
    data_dir = None if data_dir is None else str(Path(data_dir).resolve())
    origin = f"{TFDS_PREFIX}{name}"

    modality = tokenizer.modality
    if modality not in _TFDS_TOKENIZERS:
        raise TokenizerMismatchError(
            f"tokenizer {tokenizer.name!r} does not read text or images, so it cannot encode {origin}. "
            f"Use --tokenizer {' or '.join(sorted(set(_TFDS_TOKENIZERS.values())))}, or another "
            "text or image tokenizer"
        )
    candidates = _features_by_modality(builder)[modality]
    if len(candidates) != 1:
        found = f"features {', '.join(candidates)}" if candidates else "no such feature"
        raise DatasetError(
            f"{origin} must have exactly one {modality.capitalize()} feature for tokenizer "
            f"{tokenizer.name!r}, but it has {found}"
        )
    feature = candidates[0]

    split_infos = builder.info.splits
    splits = [split for split in SPLITS if split in split_infos]
    if not splits:
        raise DatasetError(
            f"{origin} has none of the splits {', '.join(SPLITS)}; its splits are {', '.join(split_infos.keys())}"
        )
    # Re-preparing the dataset rewrites dataset_info.json, which makes cached results stale.
    info_mtime_ns = (Path(builder.data_dir) / "dataset_info.json").stat().st_mtime_ns
    files = [
        SourceFile(
            source=f"{split}/{index:0{_INDEX_DIGITS}d}",
            path=None,
            split=split,
            size=0,
            mtime_ns=info_mtime_ns,
            record=index,
            origin=origin,
        )
        for split in splits
        for index in range(split_infos[split].num_examples)
    ]
    return InputListing(
        root=Path(builder.data_dir),
        layout=LAYOUT_TFDS,
        index_file=None,
        files=files,
        missing=[],
        origin=origin,
        description={
            "tfds": name,
            "version": str(builder.info.version),
            "folder": str(builder.data_dir),
            "feature": feature,
        },
        reader=TfdsExampleReader(name, data_dir, feature, modality),
    )


def _tfds_builder(name: str, data_dir: str | os.PathLike | None):
    """Return the TFDS builder of a prepared dataset; raise `DatasetError` if it cannot be read without TensorFlow."""
    import tensorflow_datasets as tfds

    origin = f"{TFDS_PREFIX}{name}"
    where = f"under {data_dir}" if data_dir is not None else "in TFDS's default data dir (~/tensorflow_datasets)"
    if not name:
        raise ConfigError(f"{TFDS_PREFIX} needs a dataset name, for example {TFDS_PREFIX}pg19")
    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except tfds.core.DatasetNotFoundError:
        raise DatasetError(
            f"TFDS dataset {name!r} is neither in the TFDS catalog nor prepared {where}. "
            f"Check the name (for example {TFDS_PREFIX}pg19 or {TFDS_PREFIX}imagenet_resized/64x64) "
            "and --tfds-data-dir"
        ) from None
    except (ValueError, AssertionError) as error:
        # TFDS raises these for an unknown config ("pg19/foo") or version ("pg19:9.9.9").
        raise DatasetError(f"invalid TFDS dataset {origin}: {error}") from None

    if not (Path(builder.data_dir) / "dataset_info.json").is_file():
        raise DatasetError(
            f"TFDS dataset {name} is not prepared {where} (no {builder.data_dir}). Prepare it there in "
            f"array_record format first, for example with `tfds build {name.split('/')[0]} "
            f"--file_format=array_record --data_dir DIR`, then pass --tfds-data-dir DIR"
        )
    file_format = builder.info.file_format
    if file_format is None or file_format.value not in ("array_record", "parquet"):
        raise DatasetError(
            f"TFDS dataset {name} in {builder.data_dir} is stored as {file_format.value if file_format else 'unknown'}, "
            "which only TensorFlow can read. Prepare it again with --file_format=array_record"
        )
    return builder


def _features_by_modality(builder) -> dict[str, list[str]]:
    import tensorflow_datasets as tfds

    features = builder.info.features
    return {
        "text": [key for key, feature in features.items() if isinstance(feature, tfds.features.Text)],
        "image": [key for key, feature in features.items() if isinstance(feature, tfds.features.Image)],
    }


# The synthetic copy task.


@dataclasses.dataclass(frozen=True)
class CopyTaskSettings:
    """What `synthetic:copy` generates: examples of `length` random symbols, then their mirror image.

    Each document has 2 * length + 1 ids plus EOS. Example i of a split is drawn from
    `numpy.random.default_rng([seed, s, i])`, where s is the split's place in (train,
    validation, test), so every example depends only on the seed, split and index.
    """

    length: int = 256
    examples: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"train": 1000, "validation": 100, "test": 100}
    )
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.length, bool) or not isinstance(self.length, int) or not 1 <= self.length <= MAX_COPY_LENGTH:
            raise ConfigError(f"invalid --copy-length {self.length!r}: use 1 to {MAX_COPY_LENGTH:,} symbols")
        unknown = sorted(set(self.examples) - set(SPLITS))
        if unknown:
            raise ConfigError(f"invalid --copy-examples: unknown split {unknown[0]!r}; use {', '.join(SPLITS)}")
        for split, count in self.examples.items():
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COPY_EXAMPLES:
                raise ConfigError(
                    f"invalid --copy-examples: {count!r} examples for {split}; use 0 to {MAX_COPY_EXAMPLES:,}"
                )
        if not any(self.examples.values()):
            raise ConfigError("invalid --copy-examples: every split is empty; give the train split some examples")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"invalid --copy-seed {self.seed!r}: use an integer of 0 or more")


def parse_copy_examples(text: str) -> dict[str, int]:
    """Parse --copy-examples "TRAIN,VALIDATION,TEST", for example "1000,100,100"."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != len(SPLITS) or not all(part.isdigit() for part in parts):
        raise ConfigError(
            f"invalid --copy-examples {text!r}: give three counts TRAIN,VALIDATION,TEST, for example 1000,100,100"
        )
    return {split: int(part) for split, part in zip(SPLITS, parts)}


@dataclasses.dataclass(frozen=True)
class CopyTaskReader:
    """Generates example `file.record` of `file.split` for the copy task."""

    settings: CopyTaskSettings
    num_symbols: int

    def read(self, file: SourceFile):
        from pact.encodings.copy_task import generate_copy_example

        rng = np.random.default_rng([self.settings.seed, SPLITS.index(file.split), file.record])
        return generate_copy_example(rng, self.settings.length, self.num_symbols)


def list_copy_task(settings: CopyTaskSettings, tokenizer: Tokenizer) -> InputListing:
    """List the examples of the copy task; raise `TokenizerMismatchError` unless `tokenizer` is `copy`."""
    from pact.encodings.copy_task import CopyTaskTokenizer

    if not isinstance(tokenizer, CopyTaskTokenizer):
        raise TokenizerMismatchError(
            f"{COPY_TASK_INPUT} is encoded with --tokenizer copy, not {tokenizer.name!r}; "
            "set its vocabulary with --vocab-size"
        )
    files = [
        SourceFile(
            source=f"{split}/{index:0{_INDEX_DIGITS}d}",
            path=None,
            split=split,
            size=settings.length,
            mtime_ns=0,
            record=index,
            origin=COPY_TASK_INPUT,
        )
        for split in SPLITS
        for index in range(settings.examples.get(split, 0))
    ]
    return InputListing(
        root=None,
        layout=LAYOUT_COPY_TASK,
        index_file=None,
        files=files,
        missing=[],
        origin=COPY_TASK_INPUT,
        description={
            "task": "copy",
            "length": settings.length,
            "examples": {split: settings.examples.get(split, 0) for split in SPLITS},
            "seed": settings.seed,
        },
        reader=CopyTaskReader(settings, tokenizer.num_symbols),
    )
