"""Every recipe in recipes/ parses and validates against its command, backend and KD settings (not run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from datafree.config import parse_kd, to_default_map

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FILES = sorted(RECIPES.glob("*.yaml"))


def _maker():
    spec = importlib.util.spec_from_file_location("make_recipes", RECIPES / "make_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipes_are_what_the_script_writes():
    expected = _maker().expected_files()
    assert sorted(p.name for p in FILES) == sorted(k for k in expected if k.endswith(".yaml"))
    assert len(FILES) == 30  # 5 methods x 2 datasets x 3 pairs
    for name, text in expected.items():
        assert (RECIPES / name).read_text() == text, f"{name} is stale: run python recipes/make_recipes.py"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_recipe_validates(path):
    from cli import cli
    from datafree.distill import KDConfig
    from datafree.models import MODELS
    from generators import method_class
    from generators.base import parse_overrides

    first = path.read_text().splitlines()[0]
    assert first.startswith("# usage: datafree ") and first.endswith(f"--config recipes/{path.name}")
    command = first.split()[3]
    cfg = yaml.safe_load(path.read_text())
    default_map = to_default_map(cli.commands[command], cfg, str(path))  # unknown keys raise
    cls = method_class(cfg["method"])
    sets = dict(item.split("=", 1) for item in default_map["options"])
    parse_overrides(cls.Config, sets)  # every backend setting exists and has the right type
    named = {
        k.replace("-", "_"): cfg[k]
        for k in ("optimizer", "momentum", "weight-decay", "hard-label-weight")
        if k in cfg
    }
    kd = {
        "epochs": cfg["epochs"],
        "steps_per_epoch": cfg["steps-per-epoch"],
        "batch_size": cfg["kd-batch-size"],
        "lr": cfg["lr"],
        "temperature": cfg.get("temperature", 4.0),
        **parse_kd(default_map.get("kd_pairs", [])),
        **named,
    }
    KDConfig(**kd).validate()
    dataset = path.stem.split("_")[1]
    assert cfg["eval-data"] == f"{dataset}:data/{dataset}" and cfg["teacher"].startswith(f"cards/{dataset}_")
    if cfg["student"] in MODELS:  # the CIFAR zoo lands with issue 12 items 1-4
        assert cfg["teacher"].removeprefix(f"cards/{dataset}_").removesuffix(".json") in MODELS
    if command == "distill":
        assert cfg["pool"] is True and not cls.online
    for key in ("epochs", "steps-per-epoch", "kd-batch-size"):
        assert isinstance(cfg[key], int) and cfg[key] > 0
