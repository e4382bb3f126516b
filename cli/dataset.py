"""`pact encode dataset`: encode a folder of files, a TFDS dataset or the copy task into a TFDS token dataset."""

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
        "pact encode dataset pg19/ --data-dir /data/tfds --tokenizer sentencepiece --vocab-size 8000; "
        "pact encode dataset tfds:imagenet_resized/64x64 --tfds-data-dir ~/tensorflow_datasets --data-dir /data/tfds; "
        "pact encode dataset synthetic:copy --data-dir /data/tfds --copy-length 1024 --vocab-size 19"
    ),
)
def encode_dataset_command(
    input_path: str = typer.Argument(
        ...,
        metavar="INPUT",
        help=(
            "What to encode: a MAESTRO v3 root (maestro-v3.0.0.csv or .json gives the splits), "
            "a folder with train/, validation/ and test/ subfolders (PG-19, images), a plain folder "
            "searched recursively, where a hash of each file's path picks its split (90/5/5 %), "
            "tfds:NAME for a TFDS dataset prepared in array_record format (tfds:pg19, "
            "tfds:imagenet_resized/64x64), or synthetic:copy for the copy task."
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
            "Default: derived from the input, for example pg19-mini -> pg19_mini, tfds:pg19 -> tfds_pg19."
        ),
    ),
    tokenizer: str | None = typer.Option(
        None,
        "--tokenizer",
        help=(
            "Registered tokenizer that encodes each item, for example bytes, sentencepiece or image. "
            "Default: performance for folders, copy for synthetic:copy, bytes or image for a TFDS "
            "dataset with a Text or Image feature."
        ),
    ),
    vocab_size: int | None = typer.Option(
        None,
        "--vocab-size",
        help=(
            "Vocabulary size in ids, reserved ids included, of a tokenizer that has one to choose: "
            "sentencepiece (trained on the train split; default 8000) or copy (default 16)."
        ),
    ),
    tokenizer_options: list[str] | None = typer.Option(
        None,
        "--tokenizer-option",
        metavar="KEY=VALUE",
        help=(
            "Option of the tokenizer, repeatable; VALUE is read as JSON when it parses, else as text. "
            "For example model_type=unigram (sentencepiece) or fit=center_crop (image)."
        ),
    ),
    tfds_data_dir: Path | None = typer.Option(
        None,
        "--tfds-data-dir",
        help="Data dir in which a tfds:NAME input was prepared. Default: TFDS's own (~/tensorflow_datasets).",
    ),
    copy_length: int | None = typer.Option(
        None, "--copy-length", help="synthetic:copy: random symbols per example, before their mirror image. Default: 256."
    ),
    copy_examples: str | None = typer.Option(
        None,
        "--copy-examples",
        metavar="TRAIN,VALIDATION,TEST",
        help="synthetic:copy: examples in the train, validation and test splits. Default: 1000,100,100.",
    ),
    copy_seed: int | None = typer.Option(None, "--copy-seed", help="synthetic:copy: random seed. Default: 0."),
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
    """Encode a folder of MIDI, text or image files, a TFDS dataset or the copy task into a TFDS dataset of token ids."""
    from pact import datasets
    from pact.dataset_sources import (
        COPY_TASK_INPUT,
        CopyTaskSettings,
        default_tokenizer_name,
        is_folder_input,
        parse_copy_examples,
    )
    from pact.encodings import available_tokenizers, get_tokenizer
    from pact.errors import ConfigError

    # Check every option before any file is read.
    if is_folder_input(input_path) and not Path(input_path).is_dir():
        raise ConfigError(
            f"input {input_path} is not a folder. Pass the folder that contains the files, "
            "tfds:NAME or synthetic:copy"
        )
    if tokenizer is not None and tokenizer not in available_tokenizers():
        raise ConfigError(
            f"unknown tokenizer {tokenizer!r} for --tokenizer; available: {', '.join(available_tokenizers())}"
        )
    options = _parse_tokenizer_options(tokenizer_options or [])
    if vocab_size is not None:
        options["vocab_size"] = vocab_size
    copy_settings = {
        "length": copy_length,
        "examples": None if copy_examples is None else parse_copy_examples(copy_examples),
        "seed": copy_seed,
    }
    copy_settings = {key: value for key, value in copy_settings.items() if value is not None}
    copy_task = None
    if input_path == COPY_TASK_INPUT:
        copy_task = CopyTaskSettings(**copy_settings)
    elif copy_settings:
        raise ConfigError(f"--copy-length, --copy-examples and --copy-seed apply only to {COPY_TASK_INPUT}")
    if name is None:
        name = datasets.default_dataset_name(input_path)
    datasets.validate_dataset_name(name)
    if workers is not None:
        datasets.validate_workers(workers)
    if tokenizer is None:
        tokenizer = default_tokenizer_name(input_path, tfds_data_dir)
    tokenizer_instance = get_tokenizer(tokenizer, **options)

    try:
        summary = datasets.encode_dataset(
            input_path,
            data_dir,
            name=name,
            tokenizer=tokenizer_instance,
            workers=workers,
            strict=strict,
            overwrite=overwrite,
            show_progress=True,
            tfds_data_dir=tfds_data_dir,
            copy_task=copy_task,
        )
    except KeyboardInterrupt:
        cache = datasets.cache_path(data_dir, name)
        kept = f" Files encoded so far are kept in {cache}." if cache.exists() else ""
        _output.print_error(f"interrupted.{kept} Run the same command again to resume")
        raise typer.Exit(130) from None

    _print_summary(summary, "files" if is_folder_input(input_path) else "examples")


def _parse_tokenizer_options(pairs: list[str]) -> dict:
    """Parse repeated --tokenizer-option KEY=VALUE; VALUE is JSON if it parses, else text."""
    import json

    from pact.errors import ConfigError

    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"invalid --tokenizer-option {pair!r}: use KEY=VALUE, for example fit=center_crop")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def _print_summary(summary, noun: str) -> None:
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
        line(f"Encoded dataset {summary.name}: {summary.files_encoded} {noun} read{from_cache}.")
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
