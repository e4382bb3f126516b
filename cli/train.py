"""`pact train`: train a Perceiver AR into a run directory, or resume one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pact.cli import _distributed, _output
from pact.distributed import DEFAULT_HEARTBEAT_TIMEOUT

EXAMPLES = """
Examples:

  pact train runs/maestro --config maestro-small --data data/maestro_asap

  pact train runs/maestro --set train.steps=20000      # resume and extend a run

  pact train runs/mine --init-from bundled --data data/my_pieces --steps 1000   # fine-tune

  pact train runs/tiny --config tiny --data data/maestro_asap --set model.num_layers=2

  pact train runs/big --config maestro-paper --data data/maestro_asap --set train.mesh_fsdp=8

  # Two hosts (docs/scaling.md): run on each, with process id 0 on 10.0.0.1 and 1 on the other
  pact train runs/big --config maestro-paper --data /shared/maestro_asap --coordinator-address 10.0.0.1:8476 --num-processes 2 --process-id 0
"""


def train(
    run_dir: Annotated[Path | None, typer.Argument(help="Run directory for the config, checkpoints and metrics. "
                                                        "An existing one is resumed from its newest checkpoint.")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c",
        help="Named config (see --list-configs) or a saved config.json. Default: maestro-small for a "
             "new run, the saved config when resuming.")] = None,
    data: Annotated[Path | None, typer.Option(
        help="Dataset directory written by `pact encode dataset` (DATA_DIR/NAME); sets data.dataset.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Total optimizer steps; sets train.steps.")] = None,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", metavar="RUN_DIR",
        help="Start a new run from the newest parameters of this run directory or exported model, "
             "or of the bundled model with 'bundled' (fine-tuning); sets train.init_from. The step "
             "count and optimizer start afresh. Without --config the new run takes the source's config.")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE",
        help="Override a config value, for example model.num_layers=4 or train.learning_rate=1e-3; repeatable.")] = None,
    list_configs: Annotated[bool, typer.Option("--list-configs", help="List the named configs and exit.")] = False,
    coordinator_address: _distributed.CoordinatorAddress = None,
    num_processes: _distributed.NumProcesses = None,
    process_id: _distributed.ProcessId = None,
    auto_cluster: _distributed.AutoCluster = False,
    heartbeat_timeout: _distributed.HeartbeatTimeout = DEFAULT_HEARTBEAT_TIMEOUT,
) -> None:
    """Train a model on an encoded dataset; Ctrl-C saves a checkpoint and stops."""
    from pact.config import available_configs, load_config
    from pact.errors import ConfigError
    from pact.run import RunDir

    if list_configs:
        _print_configs(available_configs())
        return
    if run_dir is None:
        raise ConfigError("missing RUN_DIR: name a new run directory to train into, or an existing one to resume")
    _distributed.join_run(coordinator_address, num_processes, process_id, auto_cluster, heartbeat_timeout)

    # A resumed run starts from its saved config; --set and --steps then may only extend it.
    run = RunDir(run_dir)
    if config is None:
        if run.exists():
            config = str(run.config_path)
        elif init_from is not None:
            from pact.train import init_source_dir

            config = str(RunDir(init_source_dir(init_from)).require().config_path)
        else:
            config = "maestro-small"
    overrides = list(overrides or [])
    if init_from is not None:
        overrides.append(f"train.init_from={init_from}")
    if data is not None:
        overrides.append(f"data.dataset={data}")
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    resolved = load_config(config, overrides)

    from pact.train import train_and_evaluate

    from pact import distributed

    summary = train_and_evaluate(resolved, run_dir, progress=_output.show_progress())
    if distributed.is_primary():
        _print_summary(summary)
    if summary.interrupted:
        raise typer.Exit(130)


def _print_summary(summary) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("run", str(summary.run_dir))
    table.add_row("steps", f"{summary.start_step} -> {summary.step}")
    if summary.train_loss is not None:
        table.add_row("train loss", f"{summary.train_loss:.4f}")
    if summary.validation is not None:
        validation = summary.validation
        unit = summary.token_unit
        table.add_row("validation NLL", f"{validation['nll']:.4f} nats/{unit} ({validation['bits']:.3f} bits/{unit})")
        table.add_row("validation accuracy", f"{validation['accuracy']:.3f}")
    if summary.tokens_per_second is not None:
        table.add_row("speed", f"{summary.tokens_per_second:,.0f} target {summary.token_unit}s/s")
    table.add_row("time", f"{summary.seconds:.0f} s")
    _output.stdout.print(table)
    _output.stdout.print(f"Sample from it with: pact sample {summary.run_dir} --out samples")


def _print_configs(names: list[str]) -> None:
    from pact.config import get_preset

    for name in names:
        model = get_preset(name).model
        _output.stdout.print(
            f"{name:<14} context {model.max_context:,}, {model.num_latents} latents, {model.num_layers} layers "
            f"of width {model.num_channels}, {model.num_heads} heads", markup=False,
        )
