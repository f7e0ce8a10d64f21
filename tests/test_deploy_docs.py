"""docs/deploy.md's snippets run without datafree.

Also calibration exports (npy, normalised npz) and quantize --calib.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datafree.cards import load_model
from datafree.quant import calibration_images
from tests.conftest import teacher_labelled_dataset

DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"

# Runs first in the snippet's interpreter: datafree (and the repo's other top-level modules)
# cannot be imported.
_NO_DATAFREE = """
import sys
class _NoDatafree:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("datafree", "generators", "cli"):
            raise ImportError("datafree is deliberately not importable here")
sys.meta_path.insert(0, _NoDatafree())
try:
    import datafree
    raise SystemExit("datafree was importable")
except ImportError:
    pass
"""


def _snippet(name: str) -> str:
    match = re.search(rf"<!-- tested: {name} -->\s*```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/deploy.md has no tested snippet {name!r}"
    return match.group(1)


def _run_without_datafree(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", _NO_DATAFREE + code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "ds"
    teacher_labelled_dataset(
        root, torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 16, "noise"
    )
    return root


@pytest.mark.parametrize(
    "fmt", ["onnx", pytest.param("pt2", marks=pytest.mark.slow)]
)  # pt2: a torch subprocess
def test_loading_snippets_run_without_datafree(fmt, tmp_path):
    pytest.importorskip("onnxruntime")
    from datafree.deploy import deploy

    deploy("lenet5_digits", tmp_path / f"model.{fmt}")
    r = _run_without_datafree(_snippet(fmt), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.fullmatch(r"(tensor\()?\[[\d ,]+\]\)?", r.stdout.strip()), r.stdout


@pytest.mark.slow  # an ONNX export and ORT calibration: ~20 s on 2 busy cores
def test_ort_static_quantization_recipe_runs_on_exported_calibration(dataset, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from datafree.deploy import deploy

    deploy("resnet8_digits", tmp_path / "model.onnx")
    r = CliRunner().invoke(cli, ["export", str(dataset), "--format", "npy", "--out", str(tmp_path / "calib")])
    assert r.exit_code == 0, r.output
    r = _run_without_datafree(_snippet("ort_static"), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    sess = ort.InferenceSession(str(tmp_path / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.load(tmp_path / "calib.npy")[:3]})[0].shape == (3, 10)


def test_exports_record_the_input_spec_and_normalise(dataset, tmp_path, bn_teacher):
    runner = CliRunner()
    for args, name in (
        (["--format", "npz"], "p"),
        (["--format", "npz", "--normalized"], "n"),
        (["--format", "npy"], "c"),
    ):
        r = runner.invoke(cli, ["export", str(dataset), *args, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    pixels = torch.from_numpy(np.load(tmp_path / "p.npz")["images"]).float().div(255).unsqueeze(1)
    expected = bn_teacher.card.normalizer()(pixels)
    with np.load(tmp_path / "p.npz") as z:
        assert not z["normalized"] and list(z["input_shape"]) == [1, 16, 16]
        assert np.allclose(z["mean"], bn_teacher.card.mean) and np.allclose(z["std"], bn_teacher.card.std)
    with np.load(tmp_path / "n.npz") as z:
        assert z["normalized"] and z["images"].dtype == np.float32 and z["images"].shape == (32, 1, 16, 16)
        # the normalised export is made from the float images:
        # off the uint8 pixels by half a grey level at most
        atol = 0.5 / 255 / min(bn_teacher.card.std) + 1e-5
        torch.testing.assert_close(torch.from_numpy(z["images"]), expected, atol=atol, rtol=0)
    npy = np.load(tmp_path / "c.npy")
    assert npy.dtype == np.float32 and npy.shape == (32, 1, 16, 16)
    r = runner.invoke(
        cli, ["export", str(dataset), "--format", "npy", "--normalized", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 2 and "--normalized applies to --format npz" in r.output


def test_quantize_calib_accepts_npz_and_imagefolder(dataset, tmp_path, bn_teacher, plain_teacher):
    runner = CliRunner()
    for args, name in ((["--format", "npz", "--normalized"], "n.npz"), (["--format", "npz"], "p.npz"),
                       (["--format", "imagefolder"], "tree")):  # fmt: skip
        assert (
            runner.invoke(cli, ["export", str(dataset), *args, "--out", str(tmp_path / name)]).exit_code == 0
        )
    from_norm = calibration_images(bn_teacher, tmp_path / "n.npz", 64)
    from_pixels = calibration_images(bn_teacher, tmp_path / "p.npz", 64)
    from_tree = calibration_images(bn_teacher, tmp_path / "tree", 64)
    assert from_norm.shape == from_pixels.shape == from_tree.shape == (32, 1, 16, 16)
    atol = 0.5 / 255 / min(bn_teacher.card.std) + 1e-5  # uint8 pixels vs float images
    torch.testing.assert_close(
        from_norm.sum((1, 2, 3)).sort().values,
        from_pixels.sum((1, 2, 3)).sort().values,
        atol=atol * 256,
        rtol=0,
    )
    # normalised for another model's mean/std: refused, not silently mis-scaled
    other = load_model("lenet5_digits")
    if other.card.mean != bn_teacher.card.mean or other.card.std != bn_teacher.card.std:
        with pytest.raises(Exception, match="normalised for"):
            calibration_images(other, tmp_path / "n.npz", 8)
    r = runner.invoke(cli, ["quantize", "--model", "resnet8_digits", "--calib", str(tmp_path / "n.npz"),
                            "--out", str(tmp_path / "q"), "--quiet"])  # fmt: skip
    assert r.exit_code == 0 and "W8A8" in r.output, r.output
    # evaluate --data reads a normalised npz too (back to pixels)
    r = runner.invoke(cli, ["evaluate", "--model", "resnet8_digits", "--data", str(tmp_path / "n.npz")])
    assert r.exit_code == 0 and "on 32 images" in r.output
    shutil.rmtree(tmp_path / "tree")
