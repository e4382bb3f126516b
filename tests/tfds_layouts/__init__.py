"""Real TFDS datasets in the layout of the catalog's `pg19` and `imagenet_resized/64x64`, from local files.

Each builder subclasses the catalog's builder, so its name, version, features and splits are
the catalog's own. Only `_split_generators` differs: it reads the shared mini data instead of
downloading. `prepare` writes the dataset in array_record format, which `tfds.data_source`
reads without TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet_resized import imagenet_resized_dataset_builder
from tensorflow_datasets.datasets.pg19 import pg19_dataset_builder

from pact.encodings.bytes import read_text_file


class LocalPg19(pg19_dataset_builder.Builder, skip_registration=True):
    """`pg19` from a PG-19-layout folder: train/, validation/ and test/ of <book id>.txt."""

    name = "pg19"

    def __init__(self, *, books: Path, **kwargs):
        self._books = Path(books)
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded.
        return {split: self._generate_examples(self._books / split) for split in ("train", "validation", "test")}

    def _generate_examples(self, folder: Path):
        for path in sorted(folder.glob("*.txt")):
            book_id = int(path.stem)
            # The catalog builder strips each book as well.
            yield book_id, {
                "book_text": read_text_file(path).strip(),
                "book_id": book_id,
                "book_title": f"book {book_id}",
                "publication_date": "",
                "book_link": "",
            }


class LocalImagenetResized(imagenet_resized_dataset_builder.Builder, skip_registration=True):
    """`imagenet_resized/64x64` from a folder with train/ and validation/ PNG files, all labelled 0."""

    name = "imagenet_resized"

    def __init__(self, *, images: Path, limit: int, **kwargs):
        self._images = Path(images)
        self._limit = limit
        super().__init__(config="64x64", **kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded.
        return {split: self._generate_examples(self._images / split) for split in ("train", "validation")}

    def _generate_examples(self, folder: Path):
        for path in sorted(folder.glob("*.png"))[: self._limit]:
            # A path lets TFDS store the PNG bytes as they are; encoding an array would need TensorFlow.
            yield path.stem, {"image": path, "label": 0}


def prepare(builder: tfds.core.DatasetBuilder, download_dir: Path) -> Path:
    """Write `builder`'s dataset in array_record format and return its folder.

    `download_dir` receives TFDS's empty download folders; keep it out of the data dir.
    """
    tfds.display_progress_bar(False)
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(file_format="array_record", download_dir=download_dir)
    return Path(builder.data_dir)
