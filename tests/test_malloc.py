"""datafree.malloc: glibc's thresholds are raised once per process, and can be turned off."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str, env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "DATAFREE_MALLOC_TUNING"}
    if env_value is not None:
        env["DATAFREE_MALLOC_TUNING"] = env_value
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_malloc_sets_once_and_env_turns_it_off() -> None:
    import platform

    code = "from datafree.malloc import tune_malloc as t; print(t(), t())"
    if platform.libc_ver()[0] == "glibc":
        assert _run(code, None).split() == ["True", "True"]
    assert _run(code, "0").split() == ["False", "False"]


def test_cli_setup_tunes_malloc(monkeypatch: pytest.MonkeyPatch) -> None:
    import cli
    import datafree.malloc

    calls = []
    monkeypatch.setattr(datafree.malloc, "tune_malloc", lambda: calls.append(1) or True)
    monkeypatch.setattr(cli, "_setup_speed", lambda dev: None)  # no process-wide options changed here
    monkeypatch.setattr("datafree.progress.set_quiet", lambda q: None)
    cli._setup("cpu", True)
    assert calls == [1]
