"""`pact info`: what a run directory holds: config, tokenizer, checkpoints, latest metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pact.cli import _output


def info(
    run_dir: Annotated[Path | None, typer.Argument(
        help="Run directory written by `pact train`, or a model written by `pact export`. "
             "Default: the piano model bundled with pact.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the information as JSON.")] = False,
) -> None:
    """Show a run's config, tokenizer, parameters, checkpoints and latest metrics."""
    from pact.run import describe_run

    description = describe_run(run_dir)
    if json_output:
        _output.stdout.print_json(json.dumps(description))
        return

    from rich.table import Table

    model = description["config"]["model"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("run", description["run_dir"])
    table.add_row("config", description["config"]["name"])
    table.add_row("dataset", description["config"]["data"]["dataset"])
    tokenizer = description["tokenizer"]
    table.add_row("tokenizer", f"{tokenizer['name']} version {tokenizer['version']}, {tokenizer['vocab_size']} ids")
    table.add_row("model", f"context {model['max_context']}, {model['num_latents']} latents, "
                           f"{model['num_layers']} layers, width {model['num_channels']}, "
                           f"{model['num_heads']} heads")
    table.add_row("parameters", f"{description['parameters']:,}")
    steps = description["checkpoint_steps"]
    if description["exported"]:
        table.add_row("exported step", str(steps[0]))
    else:
        table.add_row("checkpoints", ", ".join(map(str, steps)) if steps else "none yet")
    table.add_row("target steps", str(description["config"]["train"]["steps"]))
    train, validation = description["latest_train"], description["latest_validation"]
    unit = description["token_unit"]
    if train:
        table.add_row("latest train", f"step {train['step']}: loss {train['loss']:.4f}, "
                                      f"{train.get('tokens_per_second') or 0:,.0f} target {unit}s/s")
    if validation:
        table.add_row("latest validation", f"step {validation['step']}: NLL {validation['nll']:.4f} "
                                           f"nats/{unit}, accuracy {validation['accuracy']:.3f}")
    _output.stdout.print(table)
