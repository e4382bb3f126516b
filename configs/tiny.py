"""tiny: a seconds-per-step model for tests, the quickstart and trying pact on a laptop.

    pact train runs/tiny --config tiny --data DATA_DIR/NAME

Context 512, 64 latents, 2 layers of width 128.
"""

from pact.config import Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(
            max_context=512,
            num_latents=64,
            num_channels=128,
            num_heads=4,
            num_layers=2,
            dropout=0.0,
            cross_attend_dropout=0.3,
        ),
        data=DataConfig(batch_size=8),
        train=TrainConfig(
            steps=200,
            learning_rate=2e-3,
            warmup_steps=20,
            checkpoint_every=100,
            eval_every=100,
            eval_batches=2,
            log_every=10,
        ),
    )
