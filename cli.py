"""The ``datafree`` command: a thin click layer over the library (parse, validate, call, summarise).

Heavy imports (torch) happen inside commands so ``datafree --help`` is instant. Every error a user
can cause is one line on stderr and exit status 2; no traceback. Exit codes (docs/failures.md):
0 done; 1 internal error (a bug: one line, ``DATAFREE_DEBUG=1`` shows the traceback) or a ``deploy``
export that failed its verification; 2 bad input,
usage error or unreadable/unwritable file; 3 the run diverged (NaN/inf loss); 130 interrupted.
Under ``torchrun`` every command joins the process group (see datafree/distributed.py).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

#: DATAFREE_OMP_WAIT: how OpenMP threads wait between parallel regions (auto | spin | passive).
OMP_WAIT_ENV = "DATAFREE_OMP_WAIT"


def _threads_in_argv(argv: list[str]) -> int | None:
    """The ``--threads N`` of the command line, if any (read before click parses it)."""
    for i, a in enumerate(argv):
        if a.startswith("--threads="):
            value = a.split("=", 1)[1]
        elif a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        return int(value) if value.isdigit() else None
    return None


def _cpus_busy_elsewhere(samples: int = 5) -> int:
    """Runnable tasks other than this one (``/proc/loadavg``), the fewest of a few samples 2 ms apart."""
    import time

    busy = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                busy.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return -1
        time.sleep(0.002)
    return max(0, min(busy))


def openmp_wait_policy(threads: int | None = None) -> str:
    """Choose how OpenMP threads wait, before torch loads the runtime: ``spin``, ``passive`` or ``user``.

    A thread of an OpenMP team waits for the next parallel region either spinning for a while
    (libgomp's default, a few ms) or asleep at once (``OMP_WAIT_POLICY=PASSIVE``). A step runs hundreds
    of regions with Python in between: on an idle machine waking sleeping threads for each made the
    DeepInversion step through ``synthesize`` at 2 threads 1.2-1.9x slower than spinning; on cores busy
    with other jobs, spinning threads take the CPU from the one the team waits for and steps were 3-20x
    slower (docs/speed.md, bench/di_step_threads.py). ``auto`` (the default): spin when no other task is
    runnable besides the cores this process uses, else passive. ``DATAFREE_OMP_WAIT=spin|passive``
    forces one; ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the environment are left as they are
    (``user``). The choice goes into the environment, so child processes make the same one.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return "user"
    mode = os.environ.get(OMP_WAIT_ENV, "auto").lower()
    if mode not in ("spin", "passive"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        others = _cpus_busy_elsewhere()
        mode = "spin" if 0 <= others and others + min(threads or cpus, cpus) <= cpus else "passive"
    os.environ[OMP_WAIT_ENV] = mode
    if mode == "passive":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return mode


openmp_wait_policy(_threads_in_argv(sys.argv))

import click  # noqa: E402

__all__ = ["main", "cli"]


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    """A warning as one line on stderr (``warning: ...``), without Python's file and source lines."""
    return f"warning: {' '.join(str(message).split())}\n"


warnings.formatwarning = _one_line_warning  # type: ignore[assignment]


class _Group(click.Group):
    """Turns datafree's own errors into one line and exit status 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        """Click's usage errors as one line too (``error: ... (see 'datafree CMD --help')``), exit 2."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            click.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        from datafree.errors import DatafreeError

        try:
            return super().invoke(ctx)
        except DatafreeError as e:
            _fail(ctx, f"error: {e}", e.exit_code)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted; rerun the same command to resume", 130)
        except OSError as e:  # disk full, permission denied, a file vanishing under us
            where = f" {e.filename}" if e.filename else ""
            _fail(ctx, f"error: cannot access{where}: {e.strerror or e}", 2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:
            if os.environ.get("DATAFREE_DEBUG"):
                raise
            msg = " ".join(str(e).split())[:300]
            _fail(
                ctx,
                f"internal error: {type(e).__name__}: {msg} (rerun with DATAFREE_DEBUG=1 for the traceback)",
                1,
            )
        finally:
            metrics = sys.modules.get("datafree.metrics")
            if metrics is not None:
                metrics.close_run()
            dist = sys.modules.get("datafree.distributed")
            if dist is not None:
                dist.cleanup()


def _fail(ctx: click.Context, message: str, code: int) -> None:
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE", "1")
    prefix = f"[rank {rank}] " if rank is not None and world != "1" else ""
    click.echo(prefix + message.replace("\n", " "), err=True)
    ctx.exit(code)


def _setup(device: str | None, quiet: bool, threads: int | None = None) -> Any:
    import torch

    from datafree.distributed import init_distributed
    from datafree.progress import set_quiet
    from datafree.utils import resolve_device

    set_quiet(quiet)
    if threads:
        torch.set_num_threads(threads)
    from datafree.malloc import tune_malloc

    tune_malloc()  # reuse large CPU buffers instead of an mmap per activation (datafree/malloc.py)
    # one process: the device asked for; under torchrun: joins the group, cuda -> cuda:LOCAL_RANK
    dev = init_distributed(resolve_device(device)).device
    _setup_speed(dev)
    return dev


def _setup_speed(dev: Any) -> None:
    """--precision/--channels-last/--compile, --log-every, and metrics.jsonl (+ --tensorboard) in --out."""
    from datafree import metrics, precision
    from datafree.progress import set_log_every

    ctx = click.get_current_context(silent=True)
    speed = ctx.meta.get(_SPEED, {}) if ctx is not None else {}
    precision.configure(
        speed.get("precision", "auto"), speed.get("channels_last", False), speed.get("compile", False), dev
    )
    if speed.get("log_every") is not None:
        set_log_every(speed["log_every"])
    out = ctx.params.get("out") if ctx is not None else None
    if out is not None:
        metrics.open_run(out, tensorboard=bool(speed.get("tensorboard")))
    elif speed.get("tensorboard"):
        metrics.require_tensorboard()


def _main_rank() -> bool:
    from datafree.distributed import is_main

    return is_main()


def _parse_set(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key = key.strip().replace("-", "_")
        if key == "seed":  # one seed per run: the --seed option (a --set seed would collide with it)
            raise click.BadParameter("seed is set with --seed N, not --set seed=N", param_hint="--set")
        if key in out and out[key] != val.strip():
            raise click.BadParameter(
                f"{key} given twice ({out[key]!r} and {val.strip()!r})", param_hint="--set"
            )
        out[key] = val.strip()
    return out


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from datafree.validate import MAX_INT, MAX_THREADS

    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    hi = MAX_THREADS if param.name == "threads" else MAX_INT
    if isinstance(value, int) and value > hi:  # a C int (torch, tqdm) or a sane thread count
        raise click.BadParameter(
            f"must be at most {hi}, got {str(value)[:20]}{'...' if len(str(value)) > 20 else ''}"
        )
    return value


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


device_opt = click.option(
    "--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available, else CPU)."
)
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
seed_opt = click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**32 - 1),
    help="Seed of every random choice.",
)
threads_opt = click.option(
    "--threads", type=click.IntRange(max=4096), default=None, callback=_positive, help="torch CPU threads."
)


def _budget(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--budget``: seconds (``900``, ``900s``, ``15m``, ``1.5h``) or ``off``; None when not given."""
    import math

    if value is None:
        return None
    text = value.strip().lower()
    if text in ("off", "none", "inf", ".inf"):  # .inf: a replayed config.yaml of an "off" run
        return math.inf
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:], None)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise click.BadParameter(f"expected seconds > 0 (900, 900s, 15m, 1.5h) or off, got {value!r}")
    return seconds


budget_opt = click.option(
    "--budget",
    "budget_s",
    default=None,
    metavar="TIME|off",
    callback=_budget,
    help="CPU compute budget, in estimated seconds of one core (900, 15m, 1.5h; default 800: 15 minutes "
    "less a margin): settings you did not give are scaled down to fit it, or grow into its room. off: the "
    "backend's own settings. No effect on a GPU (docs/fidelity.md, 'Session 16').",
)

set_opt = click.option(
    "--set",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Backend option, e.g. --set bn_weight=3 (repeatable).",
)
trust_opt = click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow pickled (non weights-only) checkpoints. Only for files you trust.",
)


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--config FILE``: the file's options become this command's defaults (the command line wins)."""
    if value is None:
        return
    from datafree.config import read_config, to_default_map

    ctx.default_map = {**(ctx.default_map or {}), **to_default_map(ctx.command, read_config(value), value)}


config_opt = click.option(
    "--config",
    type=str,
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    metavar="FILE",
    help="YAML file of this command's options (keys = option names); the command line wins over it.",
)
eval_opt = click.option(
    "--eval-data", default=None, metavar="DATA",
    help="Labelled data every accuracy is measured on: ImageFolder dir, .npz, cifar10:ROOT, cifar100:ROOT, "
         "imagenet:VALDIR, digits (default: digits test split for teachers trained on digits, else none).",
)  # fmt: skip


def _save_config(out: Path) -> None:
    """Write the resolved options of the running command to ``out/config.yaml`` (rank 0)."""
    from datafree.config import write_config

    if _main_rank() and Path(out).is_dir():
        ctx = click.get_current_context()
        write_config(out, ctx.command, ctx.params)


def _acc(value: float | None, data: str | None) -> str:
    """``accuracy 0.9944 on digits:test``, or that nothing was measured."""
    if value is None:
        return "accuracy not measured (no --eval-data; the card names no data)"
    return f"accuracy {value:.4f} on {data}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", message="datafree %(version)s")
def cli() -> None:
    """Data-free distillation, compression and dataset synthesis from a trained PyTorch model."""


@cli.command()
def teachers() -> None:
    """List the shipped teachers (name, arch, input, test accuracy)."""
    from datafree.cards import load_card, shipped_teachers

    for name, path in shipped_teachers().items():
        c = load_card(path)
        click.echo(
            f"{name:20s} arch={c.arch:12s} input={c.input_shape} classes={c.num_classes} "
            f"test_acc={c.test_accuracy}"
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {name, params, description}.")
def models(as_json: bool) -> None:
    """List the registered architectures with their parameters at 10 classes.

    A torchvision or timm classifier name works too when it takes the model's input size.

    torchvision:NAME and timm:NAME work too wherever an architecture is asked for.
    """
    from datafree.models import describe_models

    rows = describe_models(num_classes=10)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:18s} {r['params']:>12,d}  {r['description']}")
    click.echo("(parameters at 10 classes, 3 input channels; torchvision:NAME and timm:NAME work too)")


@cli.command()
@click.argument("arch")
@click.option("--weights", "-w", default=None,
              help="Weights file, or torchvision:ENUM (e.g. torchvision:IMAGENET1K_V1) from the torch hub "
                   "cache (default: freshly initialised weights).")  # fmt: skip
@click.option("--preset", type=click.Choice(["cifar10", "cifar100", "imagenet", "digits"]), default=None,
              help="Input shape, mean/std and class names of the task.")  # fmt: skip
@click.option("--num-classes", type=int, default=None, callback=_positive,
              help="Output classes (overrides the preset).")  # fmt: skip
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Card path (.json) or directory.")  # fmt: skip
@trust_opt
def card(arch: str, weights: str | None, preset: str | None, num_classes: int | None, out: Path,
         trust_checkpoint: bool) -> None:  # fmt: skip
    """Write a model card for ARCH and check it by loading it (strict keys, one forward pass).

    ARCH: a registry name (datafree models), torchvision:NAME, timm:NAME or file.py:callable.
    """
    from datafree.card_maker import make_card

    c = make_card(arch, out, weights=weights, preset=preset, num_classes=num_classes,
                  trust_checkpoint=trust_checkpoint)  # fmt: skip
    click.echo(f"card {c.path}: arch {c.arch}, input {c.input_shape}, {c.num_classes} classes, "
               f"weights {c.weights} (loaded and checked with one forward pass)")  # fmt: skip


@cli.command()
def methods() -> None:
    """List the synthesis backends."""
    from generators import GENERATORS, method_class

    for name in GENERATORS.names():
        cls = method_class(name)
        kind = "online generator" if cls.online else "offline pixels"
        bn = ", needs BatchNorm" if cls.requires_batchnorm else ""
        click.echo(f"{name:14s} {kind}{bn}: {(cls.__doc__ or '').strip().splitlines()[0]}")


steps_opt = click.option(
    "--steps-per-epoch", type=int, default=None, callback=_positive, help="Student steps per epoch."
)
kd_batch_opt = click.option(
    "--kd-batch-size", "kd_batch_size", type=int, default=None, callback=_positive, help="KD batch size."
)
kd_opts = [
    click.option(
        "--epochs",
        type=int,
        default=None,
        callback=_positive,
        help="KD epochs (default 30; online methods have their own).",
    ),
    steps_opt,
    kd_batch_opt,
    click.option("--lr", type=float, default=None, help="Student learning rate."),
    click.option("--temperature", type=float, default=None, help="KD temperature."),
]
# Every other KD setting: the common ones by name, any field of KDConfig through --kd KEY=VALUE.
kd_more_opts = [
    click.option(
        "--optimizer", type=click.Choice(["sgd", "adam"]), default=None, help="Student optimizer (sgd)."
    ),
    click.option("--momentum", type=float, default=None, help="SGD momentum (0.9; Nesterov when > 0)."),
    click.option("--weight-decay", type=float, default=None, help="Student weight decay (5e-4)."),
    click.option(
        "--hard-label-weight", type=float, default=None, help="Weight of CE to the teacher's arg-max (0)."
    ),
    click.option(
        "--kd",
        "kd_pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="Any KD setting (a KDConfig field, e.g. --kd grad_clip=5), repeatable.",
    ),  # fmt: skip
]
kd_opts += kd_more_opts


def _add(opts: list[Any]) -> Any:
    """Apply a group of click options (in the group's order)."""

    def deco(f: Any) -> Any:
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def _option_names(opts: list[Any]) -> tuple[str, ...]:
    def probe() -> None: ...

    return tuple(reversed([p.name for p in _add(opts)(probe).__click_params__]))


_KD_OPTIONS = _option_names(kd_opts)  # the parameters of every KD option, --epochs ... --kd
_KD_MORE = _option_names(kd_more_opts)  # --optimizer ... --hard-label-weight, --kd
_KD_BASIC = tuple(k for k in _KD_OPTIONS if k not in _KD_MORE)  # --epochs ... --temperature
_KD_FIELD = {"kd_batch_size": "batch_size"}  # option -> KDConfig field, where the names differ


def _kd_given(command: Any) -> Any:
    """Decorator: the command gets the values of its KD options as one ``kd_given`` dict (not one each)."""

    @functools.wraps(command)
    def run(**params: Any) -> Any:
        return command(kd_given={k: params.pop(k) for k in _KD_OPTIONS if k in params}, **params)

    return run


def _kd_settings(given: dict[str, Any], seed: int, named_win: bool = False) -> dict[str, Any]:
    """The KD settings given on the command line as KDConfig fields (the method's own fill in the rest).

    The seed and ``kd_opts``' named options (``--epochs`` ... ``--temperature``), then the ``--kd``
    pairs and ``kd_more_opts``' named options, which win; with ``named_win`` (prune) the reverse.
    """
    from datafree.config import parse_kd

    basic = {"seed": seed, **{_KD_FIELD.get(k, k): given[k] for k in _KD_BASIC if given.get(k) is not None}}
    named_more = {k: given[k] for k in _KD_MORE if k != "kd_pairs" and given.get(k) is not None}
    more = {**parse_kd(given.get("kd_pairs", ())), **named_more}
    return {**more, **basic} if named_win else {**basic, **more}


_SPEED = "datafree.speed"


def _store(key: str) -> Any:
    """A callback keeping an option's value in ``ctx.meta`` for :func:`_setup` (not a command argument)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if key == "log_every" and value is not None and not value > 0:
            raise click.BadParameter(f"must be > 0 seconds, got {value}")
        ctx.meta.setdefault(_SPEED, {})[key] = value
        return value

    return callback


def _speed_option(flag: str, key: str, **kw: Any) -> Any:
    """An option kept in ``ctx.meta`` for :func:`_setup` (see :func:`_store`), not a command argument."""
    return click.option(flag, expose_value=False, callback=_store(key), **kw)


# Speed and observability options of every command that runs a loop (datafree.precision, datafree.metrics).
speed_opts = [
    _speed_option("--precision", "precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                  default="auto", show_default=True,
                  help="Autocast precision of the training loops (auto: measured default per device, "
                       "docs/speed.md)."),
    _speed_option("--channels-last", "channels_last", is_flag=True,
                  help="channels_last memory format for the networks and batches."),
    _speed_option("--compile", "compile", is_flag=True,
                  help="torch.compile the KD forward passes and the DeepInversion step (pays on long runs; "
                  "see docs/speed.md)."),
    _speed_option("--log-every", "log_every", type=float, default=None, metavar="SECONDS",
                  help="Seconds between progress lines when stderr is not a terminal (default 30)."),
    _speed_option("--tensorboard", "tensorboard", is_flag=True,
                  help="Also write TensorBoard scalars and samples to OUT/tensorboard (pip install "
                       "'datafree[tensorboard]')."),
]  # fmt: skip

# The options of every command that runs a backend or trains: seed, --set, --trust-checkpoint,
# --device, --quiet, --threads and the speed options (compress lists them itself: no --trust-checkpoint).
run_opts = [seed_opt, set_opt, trust_opt, device_opt, quiet_opt, threads_opt, *speed_opts]

# Options several commands share, word for word.
teacher_opt = click.option(
    "--teacher", "-t", default="resnet8_digits", show_default=True, help="Shipped name or card path."
)
method_opt = click.option(
    "--method", "-m", default="deepinversion", show_default=True, help="Synthesis backend."
)
student_opt = click.option(
    "--student", "-s", default=None, help="Student architecture (default: a smaller registered one)."
)
data_opt = click.option(
    "--data", "-d", type=click.Path(path_type=Path), default=None, help="Synthetic dataset directory."
)
num_images_opt = click.option(
    "--num-images", "-n", type=int, default=None, callback=_positive,
    help="Images to synthesize (offline methods).",
)  # fmt: skip
model_out_opt = click.option(
    "--out", "-o", required=True, type=click.Path(path_type=Path), help="Output directory (model.json)."
)


@cli.command()
@_kd_given
@teacher_opt
@method_opt
@click.option("--num-images", "-n", required=True, type=int, callback=_positive, help="Images to write.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Dataset directory.")
@click.option(
    "--batch-size", type=int, default=None, callback=_positive, help="Images optimised together (one shard)."
)
@click.option(
    "--iterations", type=int, default=None, callback=_positive, help="Optimisation steps per batch."
)
@click.option(
    "--generator",
    "generator_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Online methods: a trained generator.safetensors to sample (default: train one).",
)
@click.option(
    "--student", "-s", default=None, help="Online methods: the student the generator trains against."
)
@_add(kd_opts)
@_add(run_opts)
@config_opt
def synthesize(
    teacher: str,
    method: str,
    num_images: int,
    out: Path,
    batch_size: int | None,
    iterations: int | None,
    generator_path: Path | None,
    student: str | None,
    kd_given: dict[str, Any],
    seed: int,
    options: tuple[str, ...],
    trust_checkpoint: bool,
    device: str | None,
    quiet: bool,
    threads: int | None,
) -> None:
    """Write a synthetic dataset (shards + manifest.json + samples.png); rerun to resume."""
    from datafree.cards import load_model
    from datafree.errors import UserInputError
    from datafree.synthesis import synthesize_dataset

    dev = _setup(device, quiet, threads)
    overrides: dict[str, Any] = _parse_set(options)
    if iterations is not None:
        overrides["iterations"] = iterations
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    lm = load_model(teacher, dev, trust_checkpoint=trust_checkpoint)
    if _method_is_online(method):  # train a generator (in OUT_generator/) or reuse --generator, then sample
        from datafree.online_train import synthesize_online

        kd_over = _kd_settings(kd_given, seed)
        if generator_path is not None and (student is not None or len(kd_over) > 1):
            raise UserInputError(
                "--student and the KD options train a generator; with --generator they do not apply"
            )
        ds = synthesize_online(
            lm,
            method,
            out,
            num_images,
            generator_path=generator_path,
            student=student,
            seed=seed,
            shard_size=batch_size,
            kd_config=kd_over,
            **overrides,
        )
        click.echo(
            f"wrote {ds.manifest['images_written']} images to {ds.root} ({ds.manifest['num_shards']} shards)"
        )
        _save_config(out)
        return
    kd_asked = any(v not in (None, ()) for v in kd_given.values())
    if generator_path is not None or student is not None or kd_asked:
        raise UserInputError(
            "--generator, --student and the KD options apply to online methods (dafl, zskt, dfad), not "
            f"{method!r}"
        )
    ds = synthesize_dataset(lm, method, out, num_images, seed=seed, **overrides)
    if _main_rank():
        click.echo(
            f"wrote {ds.manifest['images_written']} images to {ds.root} ({ds.manifest['num_shards']} shards)"
        )
    _save_config(out)


@cli.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["imagefolder", "npz", "npy"]),
    required=True,
    help="npy: float32 NCHW images normalised as the teacher's card says "
    "(calibration input for other tools).",
)
@click.option(
    "--normalized", is_flag=True, help="npz: float32 NCHW normalised images instead of uint8 pixels."
)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path))
def export(dataset: Path, fmt: str, normalized: bool, out: Path) -> None:
    """Export a synthetic dataset as an ImageFolder tree of PNGs, an .npz or an .npy.

    The .npz holds the images, the labels and the input spec.
    """
    from datafree.dataset import export_dataset

    path = export_dataset(dataset, fmt, out, normalized=normalized)
    click.echo(f"exported {dataset} to {path}")


@cli.command()
@_kd_given
@teacher_opt
@student_opt
@data_opt
@click.option("--method", "-m", default=None, help="Backend to synthesize with (when no --data).")
@num_images_opt
@model_out_opt
@click.option(
    "--pool",
    is_flag=True,
    help="Offline methods: synthesise one batch per round and train on the pool so far "
    "(Fast-Datafree's loop; no dataset is written).",
)
@eval_opt
@budget_opt
@_add(kd_opts)
@_add(run_opts)
@config_opt
def distill(
    teacher: str,
    student: str | None,
    data: Path | None,
    method: str | None,
    num_images: int | None,
    out: Path,
    pool: bool,
    eval_data: str | None,
    budget_s: float | None,
    kd_given: dict[str, Any],
    seed: int,
    options: tuple[str, ...],
    trust_checkpoint: bool,
    device: str | None,
    quiet: bool,
    threads: int | None,
) -> None:
    """Train a student from the teacher on synthetic data; writes OUT/model.json. Rerun to resume."""
    from datafree.cards import load_model
    from datafree.data.evalsets import check_eval_data
    from datafree.distributed import run_on_main
    from datafree.outputs import prepare_out_dir
    from datafree.pipeline import distill_to_dir
    from datafree.plan import budget_note, make_student, plan
    from datafree.progress import note

    dev = _setup(device, quiet, threads)
    lm = load_model(teacher, dev, trust_checkpoint=trust_checkpoint)
    with warnings.catch_warnings():  # the size warning comes once, when the student is built for real
        warnings.simplefilter("ignore")
        # an unknown --student fails before --out is touched
        s_model, _ = make_student(student, lm, seed, method)
    # a bad --data, --set, --pool or KD option (a BN method without BN, ...) fails before --out too;
    # the compute budget prices this student
    p = plan(lm, data=data, method=method, pool=pool, kd=_kd_settings(kd_given, seed),
             method_options=_parse_set(options), num_images=num_images, seed=seed,
             student=s_model, budget_s=budget_s)  # fmt: skip
    check_eval_data(eval_data, lm.card)  # a bad --eval-data fails before --out is touched too
    if (line := budget_note(p.info)) is not None:  # why the run's settings are not the backend's
        note(line)
    if method is not None and not pool and not _method_is_online(method):
        # a checkpoint in --out this run cannot resume: refused before data/ is written
        from datafree.distill import check_checkpoint

        check_checkpoint(out, p.kd, out / "data")
    run_on_main(lambda: prepare_out_dir(out))  # rank 0 creates it; its error stops every rank
    desc = f"{method} pool distill" if pool else "distill"
    rep = distill_to_dir(lm, p, out, student_arch=student, seed=seed, desc=desc, eval_data=eval_data)
    if _main_rank():
        generator = f"; generator {rep['generator']}" if "generator" in rep else ""
        click.echo(
            f"student {rep['arch']}: {_acc(rep['accuracy'], rep['eval_data'])}; card {out / 'model.json'}"
            f"{generator}"
        )
    _save_config(out)


def _method_is_online(method: str) -> bool:
    from generators import method_class

    return bool(method_class(method).online)


@cli.command()
@click.option(
    "--model",
    "-m",
    "model",
    required=True,
    help="Card path, directory with model.json, shipped name, or a deployed .onnx/.pt2 (its card beside it).",
)
@click.option("--data", "-d", default=None, metavar="DATA",
              help="ImageFolder dir, .npz, cifar10:ROOT, cifar100:ROOT, imagenet:VALDIR or digits[:SPLIT] "
                   "(default: digits test split, for models trained on digits).")  # fmt: skip
@click.option(
    "--batch-size", type=int, default=256, show_default=True, callback=_positive, help="Images per batch."
)
@click.option("--workers", type=click.IntRange(0, None), default=0, show_default=True,
              help="DataLoader worker processes for image folders.")  # fmt: skip
@click.option("--teacher", "-t", default=None, help="Also report agreement (same arg-max) with this model.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@trust_opt
@device_opt
@config_opt
def evaluate(
    model: str, data: str | None, batch_size: int, workers: int, teacher: str | None, as_json: bool,
    trust_checkpoint: bool, device: str | None,
) -> None:  # fmt: skip
    """Top-1 and top-5 accuracy on real labelled data, streamed.

    An int8 card runs on CPU unless --device says otherwise.
    """
    from datafree.cards import load_card
    from datafree.evaluate import evaluate as run_eval

    # a real int8 model and a deployed .onnx/.pt2 run on CPU only: the automatic choice must not pick CUDA
    def _cpu_only(spec: str) -> bool:
        card = load_card(spec)
        return card.is_int8 or card.extra.get("format") is not None

    if device is None and (_cpu_only(model) or (teacher is not None and _cpu_only(teacher))):
        device = "cpu"
    dev = _setup(device, True)
    res = run_eval(model, data, dev, batch_size=batch_size, workers=workers, teacher=teacher,
                   trust_checkpoint=trust_checkpoint)  # fmt: skip
    if as_json:
        click.echo(json.dumps(res))
    else:
        agree = f"; agreement with the teacher {res['agreement']:.4f}" if "agreement" in res else ""
        click.echo(f"accuracy {res['accuracy']:.4f} (top-5 {res['top5']:.4f}) on {res['num_samples']} images "
                   f"({res['data']}){agree}; params {res['params']}")  # fmt: skip
        per = [(a, c) for c, a in enumerate(res["per_class"]) if a is not None]
        if len(per) > 1:  # the class it reads worst (--json: every class's accuracy, per_class)
            from datafree.quality import class_names

            a, c = min(per)
            names = class_names(load_card(model))
            label = f"{c} ({names[c]})" if names else str(c)
            click.echo(f"weakest class: {label} at {a:.4f} ({res['class_images'][c]} images)")


@cli.command()
@_kd_given
@teacher_opt
@click.option(
    "--method",
    "-m",
    default="auto",
    show_default=True,
    help="Synthesis backend; auto: DeepInversion for a cheap teacher, Fast-Datafree's pool for an "
    "expensive one, DAFL without BatchNorm (docs/fidelity.md); nayer runs its own pool on an expensive "
    "teacher unless --num-images is given (docs/methods.md).",
)
@student_opt
@click.option(
    "--num-images",
    "-n",
    type=int,
    default=None,
    callback=_positive,
    help="Synthetic images (offline methods; default 1024, which the CPU compute budget may lower, or "
    "raise: fast and cmi up to 4096, nayer 8192). Given, nayer writes that many instead of running its pool.",
)
@click.option("--out", "-o", default="runs/compress", show_default=True, type=click.Path(path_type=Path))
@click.option("--iterations", type=int, default=None, callback=_positive, help="Synthesis steps per batch.")
@click.option("--no-baseline", is_flag=True, help="Skip the Gaussian-noise baseline.")
@click.option(
    "--prune",
    "prune_ratio",
    type=float,
    default=None,
    help="Then prune this fraction of channels and recover by KD.",
)
@click.option(
    "--importance",
    type=click.Choice(["l1", "l2", "bn", "taylor"]),
    default="l2",
    show_default=True,
    help="Pruning criterion.",
)
@click.option(
    "--quantize", default=None, metavar="WxAy", help="Then quantize, e.g. W8A8 (real int8 too) or W4A8."
)
@eval_opt
@budget_opt
@_add(kd_opts)
@seed_opt
@set_opt
@device_opt
@quiet_opt
@threads_opt
@_add(speed_opts)
@config_opt
def compress(
    teacher: str,
    method: str,
    student: str | None,
    num_images: int | None,
    out: Path,
    iterations: int | None,
    no_baseline: bool,
    prune_ratio: float | None,
    importance: str,
    quantize: str | None,
    eval_data: str | None,
    budget_s: float | None,
    kd_given: dict[str, Any],
    seed: int,
    options: tuple[str, ...],
    device: str | None,
    quiet: bool,
    threads: int | None,
) -> None:
    """The main job: teacher -> smaller student on synthetic data, with report.json. Rerun to resume.

    Stages, in order: --student ARCH (the default job when no other stage is given), --prune R,
    --quantize WxAy; each is reported in report.json (accuracy, params, MACs, bytes, latency).
    """
    from datafree.pipeline import compress as run

    dev = _setup(device, quiet, threads)
    kd = _kd_settings(kd_given, seed)  # on top of the method's own KD settings
    synth_options: dict[str, Any] = _parse_set(options)
    if iterations is not None:
        synth_options["iterations"] = iterations
    rep = run(
        teacher, out, method=method, student=student, num_images=num_images, kd=kd,
        baseline=not no_baseline, seed=seed, device=dev, synth_options=synth_options,
        prune=prune_ratio, importance=importance, quantize=quantize, eval_data=eval_data, budget_s=budget_s,
    )  # fmt: skip
    t, where = rep["teacher"], rep["eval_data"]
    click.echo(f"teacher {t['arch']}: {_acc(t['accuracy'], where)} ({t['params']} params)")
    if "student" in rep:
        s = rep["student"]
        ratio = (
            f", {100 * s['ratio_to_teacher']:.1f}% of the teacher"
            if s["ratio_to_teacher"] is not None
            else ""
        )
        click.echo(f"student {s['arch']}: {_acc(s['accuracy'], where)} ({s['params']} params){ratio}")
    if "prune" in rep:
        p = rep["prune"]["stages"]
        click.echo(
            f"pruned {rep['prune']['ratio']:g} ({importance}): {_acc(p['pruned']['accuracy'], where)} -> "
            f"{_acc(p['recovered']['accuracy'], where)} after recovery ({p['recovered']['params']} params)"
        )
    if "quantize" in rep:
        q = rep["quantize"]
        click.echo(
            f"quantized W{q['weight_bits']}A{q['act_bits']}: {_acc(q['quantized']['accuracy'], where)} "
            f"({q['quantized']['size_bytes']} bytes)"
        )
    if "noise_baseline" in rep:
        click.echo(f"same student from Gaussian noise: {_acc(rep['noise_baseline']['accuracy'], where)}")
    _save_config(out)
    click.echo(f"stages (s): {rep['stages_seconds']}; report {Path(out) / 'report.json'}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    "png",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG path (default RUN_DIR/metrics.png).",
)
def plot(run_dir: Path, png: Path | None) -> None:
    """Draw a run's loss curves and accuracies (RUN_DIR/metrics.jsonl, report.json) into a PNG."""
    from datafree.plot import plot_run

    click.echo(f"wrote {plot_run(run_dir, png)}")


# --- prune (datafree.prune) ---------------------------------------------------------------------
@cli.command()
@_kd_given
@click.option(
    "--model", "-m", "model", required=True, help="Card path, directory with model.json, or shipped name."
)
@click.option("--ratio", "-r", required=True, type=float, help="Fraction of channels to remove, in (0, 1).")
@click.option(
    "--importance",
    type=click.Choice(["l1", "l2", "bn", "taylor"]),
    default="l2",
    show_default=True,
    help="Channel criterion: weight magnitude (l1, l2), BN scale (bn), Taylor on synthetic batches.",
)
@click.option(
    "--global", "global_pruning", is_flag=True, help="Rank channels across layers instead of per layer."
)
@data_opt
@click.option("--method", default=None, help="Backend to synthesize with (when no --data).")
@num_images_opt
@click.option(
    "--epochs",
    type=click.IntRange(0, 2**31 - 1),
    default=20,
    show_default=True,
    help="Recovery KD epochs (0: prune only).",
)
@steps_opt
@kd_batch_opt
@click.option("--lr", type=float, default=None, help="Learning rate of the recovery.")
@model_out_opt
@eval_opt
@_add(kd_more_opts)
@_add(run_opts)
@config_opt
def prune(
    model: str,
    ratio: float,
    importance: str,
    global_pruning: bool,
    data: Path | None,
    method: str | None,
    num_images: int | None,
    out: Path,
    eval_data: str | None,
    kd_given: dict[str, Any],
    seed: int,
    options: tuple[str, ...],
    trust_checkpoint: bool,
    device: str | None,
    quiet: bool,
    threads: int | None,
) -> None:
    """Remove channels for real, recover by KD from the unpruned model on synthetic data. Rerun to resume."""
    from datafree.cards import load_model
    from datafree.plan import DEFAULT_NUM_IMAGES, kd_settings
    from datafree.prune import prune_model

    dev = _setup(device, quiet, threads)
    epochs = kd_given.pop("epochs")  # the recovery's own epochs (0: prune only), not a KD override
    kd = kd_settings(None, _kd_settings(kd_given, seed, named_win=True))
    lm = load_model(model, dev, trust_checkpoint=trust_checkpoint)
    rep = prune_model(
        lm, ratio, importance, data=data, method=method, epochs=epochs, out_dir=out, device=dev,
        global_pruning=global_pruning, num_images=num_images or DEFAULT_NUM_IMAGES, seed=seed, kd=kd,
        method_options=_parse_set(options), eval_data=eval_data,
    )  # fmt: skip
    st = rep["stages"]
    final = st.get("recovered", st["pruned"])
    where = st["unpruned"]["eval_data"]
    click.echo(f"unpruned: {_acc(st['unpruned']['accuracy'], where)}, {st['unpruned']['params']} params")
    click.echo(
        f"pruned {ratio:g} ({importance}): {_acc(st['pruned']['accuracy'], where)}, {st['pruned']['params']} "
        "params "
        f"({100 * rep['params_removed']:.1f}% removed), {rep['speedup_b64']:.2f}x faster at batch 64"
    )
    if "recovered" in st:
        kept = (
            f" ({100 * rep['accuracy_kept']:.1f}% of the unpruned model)"
            if rep["accuracy_kept"] is not None
            else ""
        )
        click.echo(f"recovered: {_acc(final['accuracy'], where)}{kept}")
    _save_config(out)
    click.echo(f"card {rep['card']}; report {out / 'report.json'}")


# --- end prune -----------------------------------------------------------------------------------


# --- quantize (datafree.quant) ------------------------------------------------------------------
def _bits_opt(flag: str, short: str, what: str) -> Any:
    return click.option(flag, short, type=click.IntRange(2, 8), default=8, show_default=True,
                        help=f"Bits per {what}.")  # fmt: skip


def _clipping_opt(flag: str) -> Any:
    clippings = click.Choice(["minmax", "percentile", "mse"])
    return click.option(flag, type=clippings, default="mse", show_default=True)


@cli.command()
@click.option(
    "--model",
    "-m",
    "model",
    default="resnet8_digits",
    show_default=True,
    help="Shipped name, card path or directory.",
)
@_bits_opt("--weight-bits", "-w", "weight (per channel)")
@_bits_opt("--act-bits", "-a", "activation (per tensor)")
@click.option(
    "--calib",
    default="zeroq",
    show_default=True,
    help="Calibration data: zeroq, deepinversion, noise, digits (real images: reference only), a synthetic "
    "dataset DIR, "
    "an ImageFolder DIR or an .npz.",
)
@click.option(
    "--calib-images", type=int, default=64, show_default=True, callback=_positive, help="Calibration images."
)
@click.option(
    "--finetune-epochs",
    type=click.IntRange(0, 2**31 - 1),
    default=0,
    show_default=True,
    help="KD fine-tuning epochs (0: calibration only).",
)
@_clipping_opt("--weight-calib")
@_clipping_opt("--act-calib")
@click.option("--asymmetric-weights", is_flag=True, help="Asymmetric weight grids (default: symmetric).")
@click.option(
    "--int8",
    "int8",
    is_flag=True,
    help="Also export a real int8 CPU model (W8A8, OUT/int8/model.json) and time fp32 vs int8.",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="Output directory (model.json, report.json).",
)
@eval_opt
@_add(run_opts)
@config_opt
def quantize(
    model: str,
    weight_bits: int,
    act_bits: int,
    calib: str,
    calib_images: int,
    finetune_epochs: int,
    weight_calib: str,
    act_calib: str,
    asymmetric_weights: bool,
    int8: bool,
    out: Path,
    eval_data: str | None,
    seed: int,
    options: tuple[str, ...],
    trust_checkpoint: bool,
    device: str | None,
    quiet: bool,
    threads: int | None,
) -> None:
    """Quantize a model with synthetic calibration data (ZeroQ by default).

    Writes OUT/model.json + report.json.
    """
    from datafree.cards import load_model
    from datafree.quant import QuantConfig, QuantizeJob
    from datafree.quant import quantize as run

    dev = _setup(device, quiet, threads)
    lm = load_model(model, dev, trust_checkpoint=trust_checkpoint)
    cfg = QuantConfig(weight_bits, act_bits, not asymmetric_weights, weight_calib, act_calib)
    job = QuantizeJob(
        calib,
        calib_images,
        seed,
        finetune_epochs,
        int8=int8,
        synth_options=_parse_set(options),
        eval_data=eval_data,
    )
    rep = run(lm, cfg, job, out_dir=out, device=dev, prepare_out=True)  # checks it all before --out is made
    q, where = rep["quantized"], rep["eval_data"]
    click.echo(f"fp32: {_acc(rep['fp32']['accuracy'], where)}, {rep['fp32']['size_bytes']} bytes")
    click.echo(
        f"W{weight_bits}A{act_bits} ({rep['calib']}): {_acc(q['accuracy'], where)}, {q['size_bytes']} bytes"
    )
    if "finetune" in rep:
        click.echo(f"  (before KD fine-tuning: {_acc(rep['finetune']['accuracy_before'], where)})")
    if "int8" in rep:
        lat = rep["latency_cpu"]["batch_64"]
        click.echo(
            f"int8 (CPU): {_acc(rep['int8']['accuracy'], where)}; "
            f"batch 64: {lat['int8']['cpu_ms']} ms vs fp32 {lat['fp32']['cpu_ms']} ms (CPU time)"
        )
        if "speed" in rep["int8"]:
            click.echo(rep["int8"]["speed"]["note"])
        click.echo(f"int8 card {rep['int8']['model_card']} (CPU only)")
    _save_config(out)
    click.echo(f"card {out / 'model.json'}; report {out / 'report.json'}")


# --- end quantize ---------------------------------------------------------------------------------


# --- deploy (datafree.deploy) ---------------------------------------------------------------------
@cli.command()
@click.option(
    "--model",
    "-m",
    "model",
    required=True,
    help="Shipped name, card path or directory (float, pruned, quantized W8A8, int8).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "pt2"]),
    default=None,
    help="Default: from the --out suffix.",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="File to write (.onnx or .pt2); its card goes beside it (FILE.json).",
)
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (18-23).")
@click.option(
    "--atol",
    type=float,
    default=None,
    help="Largest accepted max abs logit difference (default: 1e-3 x max(1, max |logit|) for float models).",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=None,
    help="Smallest accepted top-1 agreement (default 1.0 float, 0.95 quantized).",
)
@trust_opt
@threads_opt
def deploy(
    model: str, fmt: str | None, out: Path, opset: int, atol: float | None, min_agreement: float | None,
    trust_checkpoint: bool, threads: int | None,
) -> None:  # fmt: skip
    """Export to ONNX (QDQ int8 for quantized models) or .pt2, verified against PyTorch.

    Writes the card beside the exported file.
    """
    from datafree.cards import load_model
    from datafree.deploy import deploy as run

    _setup("cpu", True, threads)
    lm = load_model(model, "cpu", trust_checkpoint=trust_checkpoint)
    rep = run(lm, out, fmt, opset=opset, atol=atol, min_agreement=min_agreement)
    kind = "int8 QDQ" if rep["quantized"] and rep["format"] == "onnx" else rep["format"]
    click.echo(
        f"{rep['runtime']} vs PyTorch on {rep['verify_images']} test images: max abs diff "
        f"{rep['max_abs_diff']:.3g}, "
        f"top-1 agreement {rep['top1_agreement']:.4f}"
    )
    click.echo(f"wrote {rep['path']} ({kind}); card {rep['card']}")


# --- end deploy -----------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="datafree")


if __name__ == "__main__":
    main()
