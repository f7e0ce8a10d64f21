"""Issue 11: the matrix as it stands (bench/fidelity_matrix.py) reads every figure from a result file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fidelity_matrix as fm

ROOT = Path(__file__).resolve().parent.parent


def test_every_cell_of_the_spec_is_a_row_of_its_result_file():
    """The committed spec resolves: each entry names an existing file and exactly one row of it."""
    spec = json.loads(fm.SPEC.read_text())
    records = fm.collect(spec, ROOT)
    assert len(records) == len(spec["cells"]) > 0
    for r in records:
        assert 0.0 < r["ratio"] <= 1.01, r
        assert r["teacher"] in spec["teachers"], r
        assert r["method"] in fm.METHODS, r
    for u in fm.collect_user_runs(spec, ROOT):  # each with the wall time a user waited
        assert 0.0 < u["ratio"] <= 1.01 and u["wall_s"] and u["wall_s"] > 0, u
        assert u["teacher"] in spec["teachers"] and u["method"] in fm.METHODS, u


def test_bn_methods_match_the_registry():
    """The matrix's n/a cells follow each backend's own ``requires_batchnorm``."""
    from generators import method_class

    for m in fm.METHODS[1:]:
        assert (m in fm.BN_METHODS) == bool(method_class(m).requires_batchnorm), m


def _write(tmp: Path, name: str, rows: list[dict], **top) -> str:
    (tmp / name).write_text(json.dumps({**top, "rows": rows}))
    return name


def test_matrix_reads_each_format_and_applies_the_bars(tmp_path):
    """Rows of fidelity.py, compress_kd_variants.py and the online benches; the bars name each miss."""
    fid = _write(tmp_path, "fid.json", [
        {"teacher": "t_bn", "method": "auto", "ratio": 0.98, "cpu_s": 300.0},
        {"teacher": "t_bn", "method": "cmi", "ratio": 0.93, "cpu_s": 950.0},
    ], seed=0)  # fmt: skip
    kdv = _write(tmp_path, "kdv.json", [
        {"seed": 1, "variant": "default", "student_accuracy": 0.99, "teacher_accuracy": 1.0},
        {"seed": 1, "variant": "ep60", "student_accuracy": 0.5, "teacher_accuracy": 1.0},
    ], method="nayer")  # fmt: skip
    onl = _write(tmp_path, "onl.json", [{"teacher": "t_plain", "method": "dafl", "seed": 0, "ratio": 0.991}])
    spec = {"teachers": ["t_bn", "t_plain"], "cells": [
        {"teacher": "t_bn", "method": "auto", "seed": 0, "file": fid},
        {"teacher": "t_bn", "method": "cmi", "seed": 0, "file": fid},
        {"teacher": "t_bn", "method": "nayer", "seed": 1, "file": kdv, "match": {"variant": "default"}},
        {"teacher": "t_plain", "method": "dafl", "seed": 0, "file": onl, "weights": "earlier"},
    ]}  # fmt: skip
    records = fm.collect(spec, tmp_path)
    assert [r["ratio"] for r in records] == [0.98, 0.93, 0.99, 0.991]
    v = fm.verdicts(records, spec["teachers"], {"t_bn"})
    assert v["below_bar"] == ["t_bn x cmi < 95%: seed 0 93.0%"]
    assert v["over_15_min"] == ["t_bn x cmi seed 0: 950 s"]
    assert "t_bn x deepinversion" in v["not_measured"] and "t_plain x zskt" in v["not_measured"]
    assert "t_plain x fast" not in v["not_measured"]  # a BN backend does not apply to a BN-less teacher
    assert v["best"]["t_bn"] == {"method": "nayer", "ratio": 0.99, "passes": True}
    text = fm.markdown(records, spec["teachers"], {"t_bn"})
    assert "| t_plain | = dafl | n/a | n/a | n/a | n/a | 99.1† | - | - |" in text
    assert "† on the suite's weights before session 8" in text and "§ on" not in text  # the marks in use only
    # a result file without a machine: the entry's own says where it ran; session 12's suite
    # is unmarked, the superseded one of session 8 marked
    spec["cells"][3].update(weights="s12", machine="AMD EPYC")
    (tmp_path / fid).write_text(json.dumps({"seed": 0, "machine": {"cpu": "Xeon"}, "rows": json.loads(
        (tmp_path / fid).read_text())["rows"]}))  # fmt: skip
    records = fm.collect(spec, tmp_path)
    assert [r["machine"] for r in records] == ["Xeon", "Xeon", "not recorded", "AMD EPYC"]
    assert "| 99.1 | - | - |" in fm.markdown(records, spec["teachers"], {"t_bn"})
    spec["cells"][3]["weights"] = "s8"
    text = fm.markdown(fm.collect(spec, tmp_path), spec["teachers"], {"t_bn"})
    assert "| 99.1§ | - | - |" in text and "§ on the suite as retrained in session 8" in text
    spec["cells"][3]["weights"] = "s28"  # the suite as retrained on session 28's machine
    text = fm.markdown(fm.collect(spec, tmp_path), spec["teachers"], {"t_bn"})
    assert "| 99.1‡ | - | - |" in text and "‡ on the suite as retrained in session 28" in text
    assert "§" not in text
    assert "ᶻ" not in text  # no cell predates a default
    spec["cells"][3]["before"] = "s45_output_mean"  # measured before a default that changes it
    text = fm.markdown(fm.collect(spec, tmp_path), spec["teachers"], {"t_bn"})
    assert "| 99.1‡ᶻ | - | - |" in text and "ᶻ measured before session 45 centred" in text
    assert "ˢ" not in text
    spec["cells"][3]["before"] = "s46_output_structure"
    text = fm.markdown(fm.collect(spec, tmp_path), spec["teachers"], {"t_bn"})
    assert "| 99.1‡ˢ | - | - |" in text and "ˢ measured before session 46 gave" in text and "ᶻ" not in text


def test_a_spec_naming_a_missing_row_is_an_error(tmp_path, capsys):
    """Exit status 2 and the file named, not a made-up figure."""
    fid = _write(tmp_path, "fid.json", [{"teacher": "t", "method": "auto", "ratio": 0.98}], seed=0)
    spec = {
        "teachers": ["t"],
        "cells": [{"teacher": "t", "method": "cmi", "seed": 0, "file": str(tmp_path / fid)}],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(fm.SpecError, match="0 rows"):
        fm.collect(spec, tmp_path)
    assert fm.main(["--spec", str(tmp_path / "spec.json"), "--out", str(tmp_path / "m")]) == 2
    assert "fid.json" in capsys.readouterr().err


def test_readme_and_committed_matrix_are_the_specs():
    """The README's matrix and bench/results/fidelity_matrix.md are what the committed spec gives today."""
    spec = json.loads(fm.SPEC.read_text())
    records = fm.collect(spec, ROOT)
    bn = {s.name for s in fm.SUITE if s.batchnorm} | {n for n, (_, b) in fm.SHIPPED.items() if b}
    text = fm.markdown(records, spec["teachers"], bn, fm.collect_user_runs(spec, ROOT))
    assert fm.readme_block((ROOT / "README.md").read_text()) == text
    assert (ROOT / "bench" / "results" / "fidelity_matrix.md").read_text() == text + "\n"


def test_readme_option_rewrites_only_the_block(tmp_path):
    """--readme replaces the text between the markers and keeps the rest; no markers is an error (exit 2)."""
    readme = tmp_path / "R.md"
    readme.write_text(f"top\n{fm.README_START}\nold table\n{fm.README_END}\nbottom\n")
    assert fm.main(["--out", str(tmp_path / "m"), "--readme", str(readme)]) == 0
    new = readme.read_text()
    assert new.startswith("top\n") and new.endswith(f"{fm.README_END}\nbottom\n") and "old table" not in new
    assert fm.readme_block(new) == (tmp_path / "m.md").read_text().rstrip("\n")
    readme.write_text("no markers\n")
    assert fm.main(["--out", str(tmp_path / "m"), "--readme", str(readme)]) == 2


def test_user_runs_are_listed_with_their_wall_time_and_judged_against_15_minutes(tmp_path):
    """Runs as a user runs them (bench/reports_table.py rows): share and wall time, over 15 minutes named."""
    runs = _write(tmp_path, "runs.json", [
        {"tag": "a", "teacher": "t_bn", "method": "cmi", "seed": 0, "ratio": 0.98, "wall_s": 873.4},
        {"tag": "b", "teacher": "t_bn", "method": "nayer", "seed": 0, "ratio": 0.97, "wall_s": 901.0},
        {"tag": "c", "teacher": "t_bn", "method": "dfad", "seed": 0, "ratio": 0.9},
    ], machine={"cpu": "AMD EPYC"})  # fmt: skip
    spec = {"teachers": ["t_bn"], "cells": [], "user_runs": [
        {"teacher": "t_bn", "method": "cmi", "seed": 0, "file": runs, "match": {"tag": "a"}, "threads": 2},
        {"teacher": "t_bn", "method": "nayer", "seed": 0, "file": runs, "match": {"tag": "b"}, "threads": 2},
        {"teacher": "t_bn", "method": "dfad", "seed": 0, "file": runs, "match": {"tag": "c"}},
    ]}  # fmt: skip
    users = fm.collect_user_runs(spec, tmp_path)
    assert [(u["ratio"], u["wall_s"]) for u in users] == [(0.98, 873.4), (0.97, 901.0), (0.9, None)]
    v = fm.user_run_verdicts(users)
    assert v["user_runs"][0] == "t_bn x cmi seed 0: 98.0% in 873 s (2 threads)"
    assert v["user_runs_over_15_min"] == [
        "t_bn x nayer seed 0: 97.0% in 901 s (2 threads)",
        "t_bn x dfad seed 0: 90.0% in an unrecorded time",
    ]
    text = fm.markdown([], spec["teachers"], {"t_bn"}, users)
    assert "- as a user runs it" in text and "98.0% in 873 s (2 threads); t_bn x nayer" in text
    assert "over 15 minutes: t_bn x nayer seed 0" in text
    assert "as a user runs it" not in fm.markdown([], spec["teachers"], {"t_bn"})  # none given: no line
    spec["user_runs"][0]["match"] = {"tag": "z"}
    with pytest.raises(fm.SpecError):
        fm.collect_user_runs(spec, tmp_path)
