"""Options that make a command one process of a multi-process run (`pact train`, `pact eval benchmark`)."""

from __future__ import annotations

from typing import Annotated

import typer

from pact.cli import _output

_PANEL = "Multi-process run"

CoordinatorAddress = Annotated[str | None, typer.Option(
    "--coordinator-address", envvar="JAX_COORDINATOR_ADDRESS", rich_help_panel=_PANEL, metavar="HOST:PORT",
    help="Address and port of process 0, which hosts the coordinator; the same on every process. "
         "Setting it makes this command one process of a multi-process run.")]
NumProcesses = Annotated[int | None, typer.Option(
    "--num-processes", envvar="JAX_NUM_PROCESSES", min=1, rich_help_panel=_PANEL,
    help="Number of processes in the run, usually one per host.")]
ProcessId = Annotated[int | None, typer.Option(
    "--process-id", envvar="JAX_PROCESS_ID", min=0, rich_help_panel=_PANEL,
    help="This process's id, 0 to --num-processes - 1. Only process 0 writes logs, metrics and progress.")]
AutoCluster = Annotated[bool, typer.Option(
    "--auto-cluster", rich_help_panel=_PANEL,
    help="Let JAX read the coordinator, process count and id from the cluster: a Cloud TPU pod "
         "slice, Slurm or Open MPI.")]
HeartbeatTimeout = Annotated[int, typer.Option(
    "--heartbeat-timeout", min=1, rich_help_panel=_PANEL,
    help="Seconds without heartbeats after which a process counts as dead; the others then stop "
         "with an error.")]


def join_run(coordinator_address: str | None, num_processes: int | None, process_id: int | None,
             auto_cluster: bool, heartbeat_timeout: int) -> None:
    """Join the multi-process run the options describe; a single process does nothing.

    Processes other than 0 then log only warnings and errors and draw no progress bars.
    """
    from pact import distributed

    options = distributed.DistributedOptions(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id,
        auto_detect=auto_cluster, heartbeat_timeout=heartbeat_timeout,
    )
    distributed.initialize(options)
    if options.enabled and not distributed.is_primary():
        _output.state.quiet = True
        _output.configure_logging(-1)
