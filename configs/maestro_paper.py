"""maestro-paper: the paper's reported size for piano performances, for accelerators.

    pact train /shared/runs/piano --config maestro-paper --data DATA_DIR/maestro

1024 latents, 24 self-attention layers and a 32,768-token context are the sizes the authors
reported for their transcribed-piano model (NLL 1.2418). Width, heads and batch are pact's
choice for that depth (about 300M parameters). Train on a GPU node or TPU slice, with the run
directory on a file system every host shares; see docs/scaling.md for the mesh settings.
"""

from pact.config import Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(
            max_context=32_768,
            num_latents=1024,
            num_channels=1024,
            num_heads=16,
            num_layers=24,
            dropout=0.1,
            cross_attend_dropout=0.5,
            attention="auto",
            remat=True,
        ),
        data=DataConfig(batch_size=64),
        train=TrainConfig(
            steps=500_000,
            learning_rate=3e-4,
            warmup_steps=10_000,
            checkpoint_every=5_000,
            eval_every=5_000,
            eval_batches=16,
            log_every=100,
        ),
    )
