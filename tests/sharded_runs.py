"""Run `train_and_evaluate` jobs in a fresh process, so the caller can choose its device count.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_runs.py JOBS_JSON

JOBS_JSON is a list of {"run_dir": ..., "overrides": [...]}: each job trains the `tiny` preset
with the overrides into its run directory, one after another. The device count must be set
before JAX starts, which is why `tests/test_scaling.py` runs this as a subprocess.
"""

import json
import sys


def main(jobs_json: str) -> None:
    import jax

    from pact.config import apply_overrides, get_preset
    from pact.train import train_and_evaluate

    for job in json.loads(jobs_json):
        config = apply_overrides(get_preset("tiny"), job["overrides"])
        summary = train_and_evaluate(config, job["run_dir"], progress=False)
        print(f"{job['run_dir']}: step {summary.step} on {jax.device_count()} devices", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
