"""Audit every bad input of tests/cli_cases.py through the real CLI (``python cli.py ...`` subprocesses).

Prints a markdown table (what was tried, exit status, the exact stderr) and writes
bench/results/bad_inputs.json. Each row also checks: exit 2, exactly one stderr line, no
"Traceback", nothing under the fixtures directory changed.

    PYTHONPATH=. python bench/bad_inputs.py                # each case in its own `python cli.py` process
    PYTHONPATH=. python bench/bad_inputs.py --in-process   # same code through click's CliRunner (fast)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cli_cases import CASES, fill, make_fixtures  # noqa: E402


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in root.rglob("*")
    }


def main() -> None:
    """Run the audit."""
    t = Path(tempfile.mkdtemp(prefix="datafree-bad-"))
    make_fixtures(t)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    in_process = "--in-process" in sys.argv
    rows = []
    for what, args, expected in CASES:
        before = _snapshot(t)
        if in_process:
            import torch
            from click.testing import CliRunner

            from cli import cli

            torch.set_num_threads(1)
            r = CliRunner().invoke(cli, fill(args, t), prog_name="datafree")
            code, out, err = r.exit_code, r.stdout, r.stderr
        else:
            cmd = [sys.executable, str(ROOT / "cli.py"), *fill(args, t)]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            code, out, err = p.returncode, p.stdout, p.stderr
        ok = (
            code == 2
            and len(err.strip().splitlines()) == 1
            and "Traceback" not in err + out
            and expected in err
            and _snapshot(t) == before
        )
        err = err.strip().replace(str(t), "$T")
        rows.append(
            {
                "input": what,
                "command": " ".join(args),
                "exit": code,
                "stderr": err,
                "ok": ok,
                "in_process": in_process,
            }
        )
        print(f"{'ok ' if ok else 'BAD'} {what}", file=sys.stderr, flush=True)
    print("| bad input | command (`$T` = fixtures dir) | exit | message (stderr, one line) |")
    print("|---|---|---|---|")
    for r in rows:
        cmd = r["command"].replace("{t}", "$T").replace("|", "\\|")
        msg = r["stderr"].replace("|", "\\|")
        print(
            f"| {r['input']}{'' if r['ok'] else ' **(FAILED CHECK)**'} | `datafree {cmd}` | {r['exit']} | "
            f"`{msg}` |"
        )
    out = ROOT / "bench" / "results" / ("bad_inputs_in_process.json" if in_process else "bad_inputs.json")
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(
        f"\n{sum(r['ok'] for r in rows)}/{len(rows)} cases: exit 2, one line, no traceback, nothing touched",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
