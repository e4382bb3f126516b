"""`pact eval benchmark`: NLL, bits, perplexity and accuracy of a run on a dataset split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pact.cli import _distributed, _output
from pact.cli._groups import eval_app
from pact.distributed import DEFAULT_HEARTBEAT_TIMEOUT


@eval_app.command("benchmark")
def benchmark(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `pact train`.")],
    split: Annotated[str, typer.Option(help="Dataset split to score: train, validation or test.")] = "test",
    data: Annotated[Path | None, typer.Option(
        help="Dataset directory; default: the one the run was trained on.")] = None,
    latents: Annotated[int | None, typer.Option(
        min=1, help="Latents per forward pass; default: the number the model was trained with.")] = None,
    block_size: Annotated[int | None, typer.Option(
        min=1, help="Targets scored per forward pass (1 to --latents); smaller gives each target "
                    "more context at more cost. Default: --latents.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per forward pass.")] = 8,
    step: Annotated[int | None, typer.Option(min=0, help="Checkpoint step; default: the newest.")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the metrics as JSON to this file ('-' for stdout only).")] = None,
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
    from pact.errors import DatasetError
    from pact.evaluate import count_targets, evaluate_source
    from pact.run import load_model
    from pact.sharding import make_mesh

    mesh = make_mesh(mesh_data, mesh_fsdp, names=("--mesh-data", "--mesh-fsdp"))
    loaded = load_model(run_dir, step=step, mesh=mesh)
    dataset_path = data or Path(loaded.config.data.dataset)
    dataset = open_dataset(dataset_path)
    loaded.tokenizer.check_compatible(dataset.tokenizer_spec, f"dataset {dataset_path}")
    if split not in dataset.splits:
        raise DatasetError(f"dataset {dataset_path} has no split {split!r}; it has {', '.join(dataset.splits)}")
    source = dataset.source(split)

    with _output.progress_bar(count_targets(source), f"eval {split}", unit="targets") as bar:
        result = evaluate_source(
            loaded.model, source, split=split, num_latents=latents, block_size=block_size,
            batch_size=batch_size, on_batch=bar.advance, mesh=mesh,
        )
    if not distributed.is_primary():
        return
    metrics = {"run_dir": str(run_dir), "step": loaded.step, "dataset": str(dataset_path), **result.to_dict()}

    if json_out is not None and str(json_out) == "-":
        _output.stdout.print_json(json.dumps(metrics))
        return
    if json_out is not None:
        json_out.write_text(json.dumps(metrics, indent=2) + "\n")
    _print_table(metrics)


def _print_table(metrics: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{metrics['run_dir']} (step {metrics['step']}) on {metrics['split']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("documents", f"{metrics['documents']:,}")
    table.add_row("targets", f"{metrics['targets']:,}")
    table.add_row("NLL (nats/token)", f"{metrics['nll']:.4f}")
    table.add_row("bits/token", f"{metrics['bits']:.4f}")
    table.add_row("perplexity", f"{metrics['perplexity']:.3f}")
    table.add_row("accuracy", f"{metrics['accuracy']:.4f}")
    table.add_row("latents / block / context", f"{metrics['num_latents']} / {metrics['block_size']} / {metrics['context']}")
    _output.stdout.print(table)

    buckets = Table(title="NLL by position in the document")
    buckets.add_column("positions")
    buckets.add_column("targets", justify="right")
    buckets.add_column("NLL", justify="right")
    for bucket in metrics["buckets"]:
        buckets.add_row(f"{bucket['start']}-{bucket['end']}", f"{bucket['targets']:,}", f"{bucket['nll']:.4f}")
    _output.stdout.print(buckets)
