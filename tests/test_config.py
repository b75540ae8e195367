import subprocess
import sys

import pytest

from fastnas.config import ConfigError, load_config


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=0.1", "data.backend=torchvision", "space.depths=[1,1,1,1,1,1]"])
    assert cfg.train.lr == 0.1 and cfg.data.backend == "torchvision" and cfg.space.depths == [1] * 6


def test_exponent_floats_without_a_dot():
    # YAML 1.1 reads 1e-3 as a string; a float field still takes it
    assert load_config(None, ["train.weight_decay=1e-3"]).train.weight_decay == 1e-3


@pytest.mark.parametrize("override,message", [
    ("train.lrr=0.1", "unknown key 'train.lrr'"),
    ("train.lr=abc", "train.lr: expected a number, got 'abc'"),
    ("train.lr=-1", "train.lr: must be a float > 0"),
    ("data.backend=opencv", "data.backend: 'opencv' is not allowed (allowed: auto, dali, torchvision, memory, synthetic)"),
    ("trian.lr=1", "unknown section 'trian'"),
    ("train.batch_size=1.5", "train.batch_size: expected an integer"),
    ("space.strides=[2,2,2,1,2,3]", "space.strides: must be 1 or 2"),
    ("lr=1", "expected section.key=value"),
    ("train.momentum=-1", "train.momentum: must be a float in [0, 1)"),
    ("space.head_channels=0", "space.head_channels: must be an integer >= 1"),
    ("search.target_diversity=1.5", "search.target_diversity: must be a float in [0, 1)"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    named = tmp_path / "run.yaml"
    named.write_text("space: mobilenetv2\n")
    assert load_config(named).space.depths == [2, 3, 4, 3, 3, 1]


def test_cli_bad_config_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "fastnas.space", "space.resolution=abc"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "fastnas: error: space.resolution: expected an integer, got 'abc'"


def test_dataset_with_more_classes_than_the_head_is_refused(sample_dir):
    from fastnas.data import DataError, check_num_classes
    cfg = load_config(None, [f"data.path={sample_dir}"])
    assert check_num_classes(cfg.data, 10) == 10
    with pytest.raises(DataError, match="has 10 classes but the model has space.num_classes=5"):
        check_num_classes(cfg.data, 5)


def test_a_recorded_config_with_a_retired_key_still_loads():
    """Checkpoints keep the config they were trained with; a setting retired since (search.relative)
    must not make them unreadable, while a user's config with it is still an error."""
    from fastnas.config import config_from_dict, config_from_record
    raw = {"space": {"resolution": 32}, "search": {"relative": True, "tau": 0.3}}
    cfg = config_from_record(raw)
    assert cfg.space.resolution == 32 and cfg.search.tau == 0.3
    with pytest.raises(ConfigError, match="search.relative"):
        config_from_dict(raw)
