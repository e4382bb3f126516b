"""`pact encode dataset`: encode a folder of files into a TFDS token dataset."""

from __future__ import annotations

from pathlib import Path
import typer

from pact.cli import _output
from pact.cli._groups import encode_app

# Training command printed after an encoding; {path} is the dataset's version folder.
TRAIN_COMMAND = "pact train runs/{name} --data {path}"


@encode_app.command(
    "dataset",
    epilog=(
        "Examples: pact encode dataset /data/maestro-v3.0.0 --data-dir /data/tfds; "
        "pact encode dataset pg19/ --data-dir /data/tfds --tokenizer bytes --workers 8"
    ),
)
def encode_dataset_command(
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        help=(
            "Folder to encode: a MAESTRO v3 root (maestro-v3.0.0.csv or .json gives the splits), "
            "a folder with train/, validation/ and test/ subfolders, or a plain folder searched "
            "recursively, where a hash of each file's path picks its split (90/5/5 %)."
        ),
    ),
    data_dir: Path = typer.Option(
        ..., "--data-dir", help="Folder that receives the dataset as DATA_DIR/NAME/1.0.0/."
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help=(
            "Dataset name: a lower-case letter, then lower-case letters, digits and underscores. "
            "Default: the input folder's name, for example pg19-mini -> pg19_mini."
        ),
    ),
    tokenizer: str = typer.Option(
        "performance", "--tokenizer", help="Registered tokenizer that encodes each file, for example bytes."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="Number of encoding worker processes, 1 to 256. Default: the number of CPUs available.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first file the tokenizer cannot read instead of skipping it."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Rebuild the dataset even if it exists. The old one is replaced once the new one is complete.",
    ),
) -> None:
    """Encode a folder of MIDI, text or image files into a TFDS dataset of token ids."""
    from pact import datasets
    from pact.encodings import available_tokenizers, get_tokenizer
    from pact.errors import ConfigError

    # Check every option before any file is read.
    if not input_path.is_dir():
        raise ConfigError(f"input {input_path} is not a folder. Pass the folder that contains the files")
    if tokenizer not in available_tokenizers():
        raise ConfigError(
            f"unknown tokenizer {tokenizer!r} for --tokenizer; available: {', '.join(available_tokenizers())}"
        )
    if name is None:
        name = datasets.default_dataset_name(input_path)
    datasets.validate_dataset_name(name)
    if workers is not None:
        datasets.validate_workers(workers)

    try:
        summary = datasets.encode_dataset(
            input_path,
            data_dir,
            name=name,
            tokenizer=get_tokenizer(tokenizer),
            workers=workers,
            strict=strict,
            overwrite=overwrite,
            show_progress=True,
        )
    except KeyboardInterrupt:
        cache = datasets.cache_path(data_dir, name)
        kept = f" Files encoded so far are kept in {cache}." if cache.exists() else ""
        _output.print_error(f"interrupted.{kept} Run the same command again to resume")
        raise typer.Exit(130) from None

    _print_summary(summary)


def _print_summary(summary) -> None:
    spec = summary.tokenizer_spec

    def line(text: str = "") -> None:
        # soft_wrap keeps paths and reasons whole for copying, and file names may contain
        # brackets that Rich would read as markup.
        _output.stdout.print(text, soft_wrap=True, markup=False)

    if summary.reused:
        line(f"Dataset {summary.name} already exists with the same tokenizer and input; reusing it.")
        line("Pass --overwrite to rebuild it.")
    else:
        from_cache = f", {summary.files_from_cache} taken from an interrupted run" if summary.files_from_cache else ""
        line(f"Encoded dataset {summary.name}: {summary.files_encoded} files read{from_cache}.")
    line(f"Path: {summary.path}")
    line(f"Tokenizer: {spec['name']} version {spec['version']}, vocabulary {spec['vocab_size']}")

    line(f"{'split':<12}{'files':>8}{'tokens':>16}")
    for split, counts in summary.splits.items():
        line(f"{split:<12}{counts.files:>8,}{counts.tokens:>16,}")

    if summary.skipped:
        line(f"Skipped {len(summary.skipped)} {'file' if len(summary.skipped) == 1 else 'files'}:")
        for skipped in summary.skipped:
            line(f"  {skipped.source} ({skipped.split}): {skipped.reason}")
    else:
        line("Skipped no files.")

    line(f"Train on it: {TRAIN_COMMAND.format(name=summary.name, path=summary.path)}")
