"""Multi-process runs on JAX's distributed runtime: joining one, and agreeing across processes.

Every process of a run executes the same pact command with its own process id. Process 0
also hosts the coordinator service that the others connect to. After `initialize`,
`jax.devices()` lists the devices of every process, and one mesh spans them all (see
`pact.sharding`).

A process that dies is noticed through heartbeats: once one has sent none for
`heartbeat_timeout` seconds, the coordinator reports it to the others, and JAX ends each of
them with a message saying that another task died. When the processes cannot all connect
within `initialization_timeout` seconds (a peer never started, or the coordinator is
unreachable), JAX ends the process with DEADLINE_EXCEEDED. Cross-process collectives on CPU go
through Gloo over TCP.
"""

from __future__ import annotations

import dataclasses
import logging

from pact.errors import ConfigError, DistributedError

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_TIMEOUT = 100
"""Seconds without heartbeats after which a process counts as dead (JAX's default)."""

DEFAULT_INITIALIZATION_TIMEOUT = 300
"""Seconds a process waits for all the others to connect (JAX's default)."""

_LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


@dataclasses.dataclass(frozen=True)
class DistributedOptions:
    """Settings for joining a multi-process run. With none set, the run is a single process."""

    coordinator_address: str | None = None
    """HOST:PORT of process 0, where the coordinator service listens."""
    num_processes: int | None = None
    process_id: int | None = None
    """0 to num_processes - 1; process 0 hosts the coordinator."""
    auto_detect: bool = False
    """Let JAX read unset values from the cluster environment (Cloud TPU, Slurm, Open MPI)."""
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
    initialization_timeout: int = DEFAULT_INITIALIZATION_TIMEOUT

    @property
    def enabled(self) -> bool:
        explicit = (self.coordinator_address, self.num_processes, self.process_id)
        return self.auto_detect or any(value is not None for value in explicit)

    def validate(self) -> None:
        """Raise `ConfigError` naming the flag when a value is missing or out of range."""
        if not self.enabled:
            return
        if self.heartbeat_timeout < 1:
            raise ConfigError(f"--heartbeat-timeout={self.heartbeat_timeout} is invalid: use 1 second or more")
        if not self.auto_detect:
            missing = [flag for flag, value in (
                ("--coordinator-address", self.coordinator_address),
                ("--num-processes", self.num_processes),
                ("--process-id", self.process_id),
            ) if value is None]
            if missing:
                raise ConfigError(
                    f"a multi-process run needs {', '.join(missing)} as well; pass all three "
                    "(or --auto-cluster on Cloud TPU, Slurm or Open MPI)"
                )
        if self.coordinator_address is not None:
            _split_address(self.coordinator_address)
        if self.num_processes is not None and self.num_processes < 1:
            raise ConfigError(f"--num-processes={self.num_processes} is invalid: it must be positive")
        if self.process_id is not None:
            if self.process_id < 0:
                raise ConfigError(f"--process-id={self.process_id} is invalid: use 0 or more")
            if self.num_processes is not None and self.process_id >= self.num_processes:
                raise ConfigError(
                    f"--process-id={self.process_id} is invalid for --num-processes={self.num_processes}: "
                    f"use 0 to {self.num_processes - 1}"
                )


def _split_address(address: str) -> tuple[str, int]:
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--coordinator-address={address!r} is invalid: write HOST:PORT, for example 10.0.0.1:8476"
        )
    return host, int(port)


def _bind_address(coordinator_address: str | None) -> str | None:
    """Bind a loopback coordinator to loopback only; otherwise keep JAX's default.

    JAX's default binds the coordinator port on every interface, which other hosts need.
    JAX_COORDINATOR_BIND_ADDRESS still overrides the default.
    """
    if coordinator_address is None:
        return None
    host, _ = _split_address(coordinator_address)
    if host.startswith("127.") or host in _LOOPBACK_HOSTS:
        return coordinator_address
    return None


def initialize(options: DistributedOptions) -> None:
    """Join the multi-process run that `options` describe; a single process does nothing.

    Must run before anything initialises a JAX backend (no `jax.devices()` before it).
    Raises `DistributedError` when JAX rejects the settings or cannot detect them. A
    coordinator that stays unreachable ends the process instead (see the module docstring).
    """
    options.validate()
    if not options.enabled:
        return
    import jax

    # Gloo runs cross-process collectives on CPU; GPUs and TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = options.coordinator_address or "the address the cluster provides"
    log.info("joining the run at %s as process %s of %s; waiting up to %d s for every process",
             where, _or_detected(options.process_id), _or_detected(options.num_processes),
             options.initialization_timeout)
    try:
        jax.distributed.initialize(
            coordinator_address=options.coordinator_address,
            num_processes=options.num_processes,
            process_id=options.process_id,
            coordinator_bind_address=_bind_address(options.coordinator_address),
            initialization_timeout=options.initialization_timeout,
            heartbeat_timeout_seconds=options.heartbeat_timeout,
            # A process that exits waits this long for the others at the shutdown barrier.
            shutdown_timeout_seconds=options.heartbeat_timeout,
        )
    except (RuntimeError, ValueError) as error:
        # ValueError: values JAX could neither read nor detect. RuntimeError: a second
        # initialisation, or one after a backend started. The message names the cause.
        raise DistributedError(
            f"could not join the multi-process run at {where} as process "
            f"{_or_detected(options.process_id)} of {_or_detected(options.num_processes)}: {error}. "
            "Start every process with the same --coordinator-address and --num-processes, "
            "and check that process 0 is running and its port is reachable"
        ) from error
    log.info("process %d of %d joined: %d local and %d global devices (%s); a process silent "
             "for %d s ends the run", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count(), jax.devices()[0].platform,
             options.heartbeat_timeout)


def _or_detected(value: int | None) -> str:
    return "(detected)" if value is None else str(value)


def process_index() -> int:
    import jax

    return jax.process_index()


def is_primary() -> bool:
    """Return whether this is process 0, the one that writes the run's files, logs and progress."""
    return process_index() == 0


def process_count() -> int:
    import jax

    return jax.process_count()


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name`; returns at once for one process."""
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is True on any process; every process must call it at the same point."""
    if process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def preemption_sync_point(step: int) -> bool:
    """Whether every process should stop before `step` because one of them received SIGTERM.

    JAX's preemption handler catches SIGTERM in any process, and the coordinator picks a step
    that all processes reach. It returns True on every process at that same step. Every
    process must call this before each step, with increasing step numbers.
    """
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point(step)
