r"""A strided convolution's input gradient: oneDNN's backward-data against a polyphase form (a lead, unused).

A stride-s convolution's input gradient at the input positions of one phase ``(i mod s, j mod s)`` is a
stride-1 convolution of the output gradient with the kernel's taps of that phase (flipped and transposed):
``s^2`` stride-1 convolutions whose results are written into the input gradient's phases. Same values as
``convolution_backward`` up to rounding; this bench checks that (shapes with groups, stride 3, even kernels)
and times both against the forward, to see where oneDNN's strided backward-data (2-8x its forward on the
development CPU) could be replaced. docs/speed.md, "Session 8".

Usage::

    PYTHONPATH=. python bench/strided_conv_backward.py [--threads 2] \
        [--out bench/results/strided_conv_backward.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cli  # noqa: E402, F401  (the command's OpenMP wait choice, made at import)

RESULTS = Path(__file__).resolve().parent / "results"
# (N, C_in, H, C_out, kernel, stride, padding, groups): resnet8_digits' and the 32 px teachers' strided layers
CASES = [(128, 16, 16, 32, 3, 2, 1, 1), (128, 32, 8, 64, 3, 2, 1, 1), (128, 3, 32, 64, 7, 2, 3, 1),
         (128, 64, 8, 128, 3, 2, 1, 1), (128, 144, 16, 144, 3, 2, 1, 144), (128, 96, 32, 96, 3, 2, 1, 96),
         (128, 64, 32, 128, 3, 2, 1, 1)]  # fmt: skip
CHECKS = [(7, 5, 9, 6, 3, 2, 1, 1), (3, 4, 10, 8, 4, 2, 1, 1), (3, 4, 11, 8, 5, 3, 2, 2)]


def phases(w: torch.Tensor, s: int, p: int, h: int, groups: int) -> list[tuple]:
    """Per input phase: the stride-1 weight, its padding, and where its output goes."""
    c_out, cig = w.shape[0], w.shape[1]
    out = []
    for ph in range(s):
        for pw in range(s):
            sub = w[:, :, ph::s, pw::s]
            mh, mw = sub.shape[2], sub.shape[3]
            if mh == 0 or mw == 0:
                continue
            wt = (sub.reshape(groups, c_out // groups, cig, mh, mw).transpose(1, 2)
                  .reshape(groups * cig, c_out // groups, mh, mw).flip(2, 3).contiguous())  # fmt: skip
            i0, j0 = (ph - p) % s, (pw - p) % s  # the phase's first input row and column
            q0, r0 = (i0 + p - ph) // s, (j0 + p - pw) // s
            out.append((wt, (mh - 1, mw - 1), q0, r0, len(range(i0, h, s)), len(range(j0, h, s)), i0, j0))
    return out


def polyphase(g: torch.Tensor, plan: list[tuple], c_in: int, h: int, s: int, groups: int) -> torch.Tensor:
    """The input gradient from the output gradient ``g`` by :func:`phases`' stride-1 convolutions."""
    gi = g.new_empty(g.shape[0], c_in, h, h)
    for wt, pad, q0, r0, ni, nj, i0, j0 in plan:
        full = F.conv2d(g, wt, padding=pad, groups=groups)
        gi[:, :, i0::s, j0::s] = full[:, :, q0 : q0 + ni, r0 : r0 + nj]
    return gi


def measure(case: tuple[int, ...], timed: bool) -> dict:
    """One shape: the two gradients' difference and, when ``timed``, the three median times."""
    n, c_in, h, c_out, k, s, p, groups = case
    torch.manual_seed(0)
    x, w = torch.randn(n, c_in, h, h), torch.randn(c_out, c_in // groups, k, k)
    g = torch.randn_like(F.conv2d(x, w, stride=s, padding=p, groups=groups))

    def aten() -> torch.Tensor:
        args = (g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], groups, [True, False, False])
        return torch.ops.aten.convolution_backward(*args)[0]

    plan = phases(w, s, p, h, groups)
    ref, got = aten(), polyphase(g, plan, c_in, h, s, groups)
    row = {"shape": list(case), "relative_l2_difference": float((ref - got).norm() / ref.norm())}
    if timed:  # the three alternated (bench.common.interleaved), medians of 60 rounds
        from bench.common import interleaved

        fns = [aten, lambda: polyphase(g, plan, c_in, h, s, groups),
               lambda: F.conv2d(x, w, stride=s, padding=p, groups=groups)]  # fmt: skip
        times = interleaved(fns, torch.device("cpu"), 60, warmup=5)
        for key, t in zip(("backward_data_us", "polyphase_us", "forward_us"), times, strict=True):
            row[key] = 1e6 * statistics.median(t)
    return row


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "strided_conv_backward.json"))
    args = ap.parse_args(argv)
    from bench.common import machine, markdown_table
    from datafree.utils import atomic_write_json

    torch.set_num_threads(args.threads)
    rows, table = [], []
    for case in CHECKS + CASES:
        row = measure(case, timed=case in CASES)
        assert row["relative_l2_difference"] < 1e-5, row
        rows.append(row)
        if case in CASES:
            table.append([str(row["shape"]), f"{row['forward_us']:.0f}", f"{row['backward_data_us']:.0f}",
                          f"{row['polyphase_us']:.0f}", f"{row['relative_l2_difference']:.1e}"])  # fmt: skip
    header = ["N, C_in, H, C_out, k, s, p, groups", "forward us", "backward-data us", "polyphase us",
              "rel. diff"]  # fmt: skip
    print(markdown_table(header, table))
    result = {"machine": machine(torch.device("cpu")), "threads": args.threads, "rows": rows}
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
