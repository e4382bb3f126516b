"""Config presets, overrides and validation."""

import json

import pytest

from pact.config import (
    Config, ModelConfig, apply_overrides, available_configs, config_from_dict, get_preset, load_config,
)
from pact.errors import ConfigError


def test_presets_load():
    names = available_configs()
    assert {"tiny", "maestro-small", "maestro-paper"} <= set(names)
    for name in names:
        config = get_preset(name)
        assert config.name == name
        assert config.model.num_latents <= config.model.max_context


def test_overrides_parse_field_types():
    config = apply_overrides(Config(), [
        "model.num_layers=3", "train.learning_rate=5e-4", "model.remat=true",
        "model.vocab_size=None", "data.dataset=/tmp/x", "model.attention=chunked",
    ])
    assert config.model.num_layers == 3
    assert config.train.learning_rate == 5e-4
    assert config.model.remat is True
    assert config.model.vocab_size is None
    assert config.data.dataset == "/tmp/x"
    assert config.model.attention == "chunked"


@pytest.mark.parametrize("override, message", [
    ("model.nope=1", "unknown config key 'model.nope'"),
    ("model.num_layers=three", "expected int"),
    ("num_layers=3", "write section.key=value"),
    ("model.num_latents=4096", "exceeds model.max_context"),
    ("model.num_heads=5", "not divisible"),
    ("model.attention=flash", "choose one of auto, xla, chunked, cudnn"),
    ("train.grad_accum_steps=3", "not divisible by train.grad_accum_steps=3"),
    ("model.cross_attend_dropout=1.0", "below 1.0"),
    ("train.steps=0", "must be positive"),
])
def test_invalid_overrides_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_preset("maestro-small"), [override])


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="available: .*maestro-small"):
        load_config("maestro-huge")


def test_saved_config_round_trip(tmp_path):
    config = apply_overrides(get_preset("tiny"), ["model.vocab_size=390"])
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert load_config(str(path)) == config
    values = json.loads(path.read_text())
    values["model"]["surprise"] = 1
    with pytest.raises(ConfigError, match="model.surprise"):
        config_from_dict(values)


def test_model_config_head_channels():
    assert ModelConfig(num_channels=256, num_heads=4).head_channels == 64


def test_position_axes_round_trip(tmp_path):
    # config.json stores the grid as a list; loading it gives the tuple back.
    config = get_preset("tiny")
    config = config.__class__(
        name=config.name, data=config.data, train=config.train,
        model=ModelConfig(axis_embeddings=True, position_axes=(64, 64, 3)),
    )
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    loaded = load_config(str(path))
    assert loaded.model.position_axes == (64, 64, 3)
    assert loaded == config


def test_saved_config_without_axis_fields_loads_off():
    # Runs saved before the axis options existed load with the embeddings off.
    values = get_preset("tiny").to_dict()
    del values["model"]["axis_embeddings"]
    del values["model"]["position_axes"]
    model = config_from_dict(values).model
    assert model.axis_embeddings is None
    assert model.position_axes is None


def test_axis_embeddings_override_parses():
    assert apply_overrides(Config(), ["model.axis_embeddings=false"]).model.axis_embeddings is False
    assert apply_overrides(Config(), ["model.axis_embeddings=none"]).model.axis_embeddings is None


@pytest.mark.parametrize("values, message", [
    ({"position_axes": []}, "one positive size per axis"),
    ({"position_axes": [64, 0, 3]}, "one positive size per axis"),
    ({"axis_embeddings": False, "position_axes": [64, 64, 3]}, "model.axis_embeddings=false"),
])
def test_invalid_axis_settings_rejected(values, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**values)
