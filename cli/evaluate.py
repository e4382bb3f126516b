"""`pact eval benchmark` (likelihood metrics of a run on a dataset split) and `pact eval samples`
(musical statistics of generated MIDI against a reference set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pact.cli import _distributed, _output
from pact.cli._groups import eval_app
from pact.distributed import DEFAULT_HEARTBEAT_TIMEOUT

_JsonOut = Annotated[Path | None, typer.Option(
    "--json", help="Also write the results as JSON to this file ('-' prints only the JSON, on stdout).")]
_PlotOut = Annotated[Path | None, typer.Option("--plot", help="Also draw the results into this PNG file.")]

# Labels of the modality metrics in the table, with their number formats.
_MODALITY_ROWS = {
    "bits_per_byte": ("bits/byte", "{:.4f}"),
    "bytes": ("bytes of text", "{:,}"),
    "bytes_per_token": ("bytes/token", "{:.3f}"),
    "bits_per_dim": ("bits/dim (per sub-pixel)", "{:.4f}"),
    "dimensions": ("dimensions", "{:,}"),
    "copy_token_accuracy": ("mirrored half: token accuracy", "{:.4f}"),
    "copy_sequence_accuracy": ("mirrored half: exact sequences", "{:.4f}"),
    "copy_nll": ("mirrored half: NLL (nats/target)", "{:.4f}"),
    "copy_tokens": ("mirrored half: tokens", "{:,}"),
    "copy_sequences": ("mirrored half: sequences", "{:,}"),
}


@eval_app.command(
    "benchmark",
    epilog="Examples: pact eval benchmark runs/maestro --split test --plot loss.png; "
           "pact eval benchmark runs/pg19 --json metrics.json --latents 512",
)
def benchmark(
    run_dir: Annotated[Path | None, typer.Argument(
        help="Run directory written by `pact train`, or a model written by `pact export`. "
             "Default: the piano model bundled with pact (give --data).")] = None,
    split: Annotated[str, typer.Option(help="Dataset split to score: train, validation or test.")] = "test",
    data: Annotated[Path | None, typer.Option(
        help="Dataset directory; default: the one the run was trained on.")] = None,
    latents: Annotated[int | None, typer.Option(
        min=1, help="Latents per forward pass; default: the number the model was trained with.")] = None,
    block_size: Annotated[int | None, typer.Option(
        min=1, help="Targets scored per forward pass (1 to --latents); smaller gives each target "
                    "more context at more cost. Default: --latents.")] = None,
    align: Annotated[str | None, typer.Option(
        help="Tile each document's blocks from its 'start' or its 'end'. Default: 'end' for a run "
             "trained on windows at the document's end (data.crop=end), else 'start'.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per forward pass.")] = 8,
    step: Annotated[int | None, typer.Option(min=0, help="Checkpoint step; default: the newest.")] = None,
    json_out: _JsonOut = None,
    plot: _PlotOut = None,
    mesh_data: Annotated[int, typer.Option(
        min=0, help="Devices on the data axis of the mesh; 0 uses every device that --mesh-fsdp leaves.")] = 0,
    mesh_fsdp: Annotated[int, typer.Option(
        min=1, help="Devices that split the parameters (FSDP). Every device of the mesh splits the batch.")] = 1,
    coordinator_address: _distributed.CoordinatorAddress = None,
    num_processes: _distributed.NumProcesses = None,
    process_id: _distributed.ProcessId = None,
    auto_cluster: _distributed.AutoCluster = False,
    heartbeat_timeout: _distributed.HeartbeatTimeout = DEFAULT_HEARTBEAT_TIMEOUT,
) -> None:
    """Score every token of a dataset split (strided evaluation over whole documents)."""
    _distributed.join_run(coordinator_address, num_processes, process_id, auto_cluster, heartbeat_timeout)

    from pact import distributed
    from pact.datasets import open_dataset
    from pact.errors import ConfigError, DatasetError
    from pact.evaluate import count_targets, evaluate_source
    from pact.run import load_model
    from pact.sharding import make_mesh

    _check_plot_path(plot)
    if run_dir is None and data is None:
        raise ConfigError(
            "the bundled model needs --data: a dataset written by `pact encode dataset` with the "
            "performance tokenizer, for example a MAESTRO download"
        )
    mesh = make_mesh(mesh_data, mesh_fsdp, names=("--mesh-data", "--mesh-fsdp"))
    loaded = load_model(run_dir, step=step, mesh=mesh)
    dataset_path = data or Path(loaded.config.data.dataset)
    dataset = open_dataset(dataset_path)
    loaded.tokenizer.check_compatible(dataset.tokenizer_spec, f"dataset {dataset_path}")
    if split not in dataset.splits:
        raise DatasetError(
            f"dataset {dataset_path} has no split {split!r}; it has {', '.join(dataset.splits)}: "
            "choose one with --split"
        )
    source = dataset.source(split)

    with _output.progress_bar(count_targets(source), f"eval {split}", unit="targets") as bar:
        result = evaluate_source(
            loaded.model, source, split=split, num_latents=latents, block_size=block_size,
            batch_size=batch_size, align=align or ("end" if loaded.config.data.crop == "end" else "start"), on_batch=bar.advance, tokenizer=loaded.tokenizer, mesh=mesh,
        )
    if not distributed.is_primary():
        return
    metrics = {"run_dir": str(run_dir or "bundled model"), "step": loaded.step, "dataset": str(dataset_path), **result.to_dict()}

    if plot is not None:
        from pact.plots import plot_position_buckets

        plot_position_buckets(metrics, plot)
    if json_out is not None and str(json_out) == "-":
        _output.stdout.print_json(json.dumps(metrics))
        return
    if json_out is not None:
        _write_json(json_out, metrics)
    _print_benchmark_table(metrics)
    if plot is not None:
        _output.stdout.print(f"Wrote the loss by position to {plot}", markup=False, soft_wrap=True)


def _print_benchmark_table(metrics: dict) -> None:
    from rich.table import Table

    unit = metrics.get("token_unit", "token")
    table = Table(title=f"{metrics['run_dir']} (step {metrics['step']}) on {metrics['split']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("documents", f"{metrics['documents']:,}")
    table.add_row(f"targets ({unit}s)", f"{metrics['targets']:,}")
    table.add_row(f"NLL (nats/{unit})", f"{metrics['nll']:.4f}")
    table.add_row(f"bits/{unit}", f"{metrics['bits']:.4f}")
    table.add_row(f"perplexity per {unit}", f"{metrics['perplexity']:.3f}")
    table.add_row("accuracy", f"{metrics['accuracy']:.4f}")
    for key, (label, number_format) in _MODALITY_ROWS.items():
        if key in metrics:
            table.add_row(label, number_format.format(metrics[key]))
    table.add_row("latents / block / context", f"{metrics['num_latents']} / {metrics['block_size']} / {metrics['context']}")
    table.add_row("blocks aligned to", f"document {metrics['align']}")
    _output.stdout.print(table)

    buckets = Table(title="NLL by position in the document")
    buckets.add_column("positions")
    buckets.add_column("targets", justify="right")
    buckets.add_column("NLL", justify="right")
    buckets.add_column(f"bits/{unit}", justify="right")
    buckets.add_column("accuracy", justify="right")
    for bucket in metrics["buckets"]:
        buckets.add_row(
            f"{bucket['start']}-{bucket['end']}", f"{bucket['targets']:,}", f"{bucket['nll']:.4f}",
            f"{bucket['bits']:.4f}", f"{bucket['accuracy']:.4f}",
        )
    _output.stdout.print(buckets)


@eval_app.command(
    "samples",
    epilog="Example: pact eval samples samples/ --reference maestro/2018 --json stats.json --plot stats.png",
)
def samples(
    samples_dir: Annotated[Path, typer.Argument(
        metavar="SAMPLES_DIR", help="Folder of generated MIDI files, searched recursively.")],
    reference: Annotated[Path, typer.Option(
        "--reference", help="Folder of reference MIDI files to compare with, searched recursively.")],
    json_out: _JsonOut = None,
    plot: _PlotOut = None,
) -> None:
    """Compare musical statistics of generated MIDI files with a reference set."""
    from pact.music_statistics import compare_folders

    _check_plot_path(plot)
    comparison = compare_folders(samples_dir, reference)
    results = comparison.to_dict()

    if plot is not None:
        from pact.plots import plot_set_comparison

        plot_set_comparison(comparison, plot)
    if json_out is not None and str(json_out) == "-":
        _output.stdout.print_json(json.dumps(results))
        return
    if json_out is not None:
        _write_json(json_out, results)
    _print_samples_table(results)
    for label in ("samples", "reference"):
        for item in results[label]["unreadable_files"]:
            _output.stderr.print(f"Notice: skipped {item['file']} in {label}: {item['reason']}",
                                 markup=False, soft_wrap=True)
    if plot is not None:
        _output.stdout.print(f"Wrote the plots to {plot}", markup=False, soft_wrap=True)


def _print_samples_table(results: dict) -> None:
    from rich.table import Table

    from pact.music_statistics import DISTANCE_UNITS

    samples, reference, distances = results["samples"], results["reference"], results["distances"]
    table = Table(title=f"{samples['folder']} against {reference['folder']}")
    table.add_column("statistic")
    table.add_column("samples", justify="right")
    table.add_column("reference", justify="right")
    table.add_column("distance", justify="right")
    table.add_column("distance unit")

    def number(value, number_format="{:.3f}"):
        return "n/a" if value is None else number_format.format(value)

    table.add_row("pieces with notes", f"{samples['pieces']:,}", f"{reference['pieces']:,}", "", "")
    table.add_row("empty / unreadable files",
                  f"{len(samples['empty_files'])} / {len(samples['unreadable_files'])}",
                  f"{len(reference['empty_files'])} / {len(reference['unreadable_files'])}", "", "")
    table.add_row("notes", f"{samples['notes']:,}", f"{reference['notes']:,}", "", "")
    rows = [
        ("pitch-class histogram", None, None, "pitch_class_distance"),
        ("note density (notes/s)", "note_density_mean", "{:.2f}", "note_density_distance"),
        ("velocity mean", "velocity_mean", "{:.1f}", "velocity_distance"),
        ("velocity std", "velocity_std", "{:.1f}", None),
        ("inter-onset interval median (s)", "ioi_median", "{:.3f}", "ioi_distance"),
        ("inter-onset interval mean (s)", "ioi_mean", "{:.3f}", None),
        ("polyphony (notes sounding)", "polyphony_mean", "{:.2f}", "polyphony_distance"),
    ]
    for label, key, number_format, distance in rows:
        sample_value = number(samples[key], number_format) if key else ""
        reference_value = number(reference[key], number_format) if key else ""
        distance_value = number(distances[distance]) if distance else ""
        table.add_row(label, sample_value, reference_value, distance_value, DISTANCE_UNITS.get(distance, ""))
    _output.stdout.print(table)


def _check_plot_path(plot: Path | None) -> None:
    """Reject a --plot file that cannot be written before any work starts."""
    from pact.errors import ConfigError

    if plot is None:
        return
    if plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot {plot} must be a .png file")
    if not plot.parent.is_dir():
        raise ConfigError(f"--plot {plot}: folder {plot.parent} does not exist; create it first")


def _write_json(path: Path, values: dict) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    import os

    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(values, indent=2) + "\n")
    os.replace(temporary, path)
