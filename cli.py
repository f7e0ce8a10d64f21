"""The ``datafree`` command: a thin click layer over the library (parse, validate, call, summarise).

Heavy imports (torch) happen inside commands so ``datafree --help`` is instant. Every error a user
can cause is one line on stderr and exit status 2; no traceback. Exit codes (docs/failures.md):
0 done; 1 internal error (a bug: one line, ``DATAFREE_DEBUG=1`` shows the traceback); 2 bad input,
usage error or unreadable/unwritable file; 3 the run diverged (NaN/inf loss); 130 interrupted.
Under ``torchrun`` every command joins the process group (see datafree/distributed.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# On 2 shared cores OpenMP spin-waiting can make every step 10x slower: yield instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

__all__ = ["main", "cli"]


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
            _fail(ctx, f"internal error: {type(e).__name__}: {msg} (rerun with DATAFREE_DEBUG=1 for the traceback)", 1)
        finally:
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
    # one process: the device asked for; under torchrun: joins the group, cuda -> cuda:LOCAL_RANK
    return init_distributed(resolve_device(device)).device


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
            raise click.BadParameter(f"{key} given twice ({out[key]!r} and {val.strip()!r})", param_hint="--set")
        out[key] = val.strip()
    return out


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from datafree.validate import MAX_INT, MAX_THREADS

    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    hi = MAX_THREADS if param.name == "threads" else MAX_INT
    if isinstance(value, int) and value > hi:  # a C int (torch, tqdm) or a sane thread count
        raise click.BadParameter(f"must be at most {hi}, got {str(value)[:20]}{'...' if len(str(value)) > 20 else ''}")
    return value


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


device_opt = click.option("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available, else CPU).")
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
seed_opt = click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1), help="Seed of every random choice."
)
threads_opt = click.option("--threads", type=int, default=None, callback=_positive, help="torch CPU threads.")
set_opt = click.option(
    "--set", "options", multiple=True, metavar="KEY=VALUE", help="Backend option, e.g. --set bn_weight=3 (repeatable)."
)
trust_opt = click.option(
    "--trust-checkpoint", is_flag=True, help="Allow pickled (non weights-only) checkpoints. Only for files you trust."
)


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
        click.echo(f"{name:20s} arch={c.arch:12s} input={c.input_shape} classes={c.num_classes} test_acc={c.test_accuracy}")


@cli.command()
def models() -> None:
    """List the registered architectures (a torchvision classifier name works too when it takes the input size)."""
    from datafree.models import MODELS

    for name in MODELS.names():
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:18s} {doc}")


@cli.command()
def methods() -> None:
    """List the synthesis backends."""
    from generators import GENERATORS, method_class

    for name in GENERATORS.names():
        cls = method_class(name)
        kind = "online generator" if cls.online else "offline pixels"
        bn = ", needs BatchNorm" if cls.requires_batchnorm else ""
        click.echo(f"{name:14s} {kind}{bn}: {(cls.__doc__ or '').strip().splitlines()[0]}")


def _kd_config(**kw: Any) -> Any:
    from datafree.distill import KDConfig

    cfg = KDConfig(**{k: v for k, v in kw.items() if v is not None})
    cfg.validate()
    return cfg


kd_opts = [
    click.option("--epochs", type=int, default=None, callback=_positive, help="KD epochs (default 30; online methods have their own)."),
    click.option("--steps-per-epoch", type=int, default=None, callback=_positive, help="Student steps per epoch."),
    click.option("--kd-batch-size", "kd_batch_size", type=int, default=None, callback=_positive, help="KD batch size."),
    click.option("--lr", type=float, default=None, help="Student learning rate."),
    click.option("--temperature", type=float, default=None, help="KD temperature."),
]


def _kd_overrides(
    epochs: int | None, steps_per_epoch: int | None, batch_size: int | None, lr: float | None,
    temperature: float | None, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The KD options given on the command line (online methods keep their own defaults otherwise)."""
    given = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "lr": lr,
             "temperature": temperature}  # fmt: skip
    return {"seed": seed, **{k: v for k, v in given.items() if v is not None}}


def _add(opts: list[Any]) -> Any:
    def deco(f: Any) -> Any:
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


# The options of every command that runs a backend or trains: seed, --set, --trust-checkpoint,
# --device, --quiet, --threads (compress lists them itself: it has no --trust-checkpoint).
run_opts = [seed_opt, set_opt, trust_opt, device_opt, quiet_opt, threads_opt]


@cli.command()
@click.option("--teacher", "-t", default="resnet8_digits", show_default=True, help="Shipped name or card path.")
@click.option("--method", "-m", default="deepinversion", show_default=True, help="Synthesis backend.")
@click.option("--num-images", "-n", required=True, type=int, callback=_positive, help="Images to write.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Dataset directory.")
@click.option("--batch-size", type=int, default=None, callback=_positive, help="Images optimised together (one shard).")
@click.option("--iterations", type=int, default=None, callback=_positive, help="Optimisation steps per batch.")
@click.option("--generator", "generator_path", type=click.Path(path_type=Path), default=None,
              help="Online methods: a trained generator.safetensors to sample (default: train one).")
@click.option("--student", "-s", default=None, help="Online methods: the student the generator trains against.")
@_add(kd_opts)
@_add(run_opts)
def synthesize(
    teacher: str, method: str, num_images: int, out: Path, batch_size: int | None, iterations: int | None,
    generator_path: Path | None, student: str | None, epochs: int | None, steps_per_epoch: int | None,
    kd_batch_size: int | None, lr: float | None, temperature: float | None, seed: int, options: tuple[str, ...], trust_checkpoint: bool, device: str | None, quiet: bool, threads: int | None,
) -> None:  # fmt: skip
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
        from datafree.online import synthesize_online

        kd_over = _kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed)
        if generator_path is not None and (student is not None or len(kd_over) > 1):
            raise UserInputError("--student and the KD options train a generator; with --generator they do not apply")
        ds = synthesize_online(lm, method, out, num_images, generator_path=generator_path, student=student, seed=seed,
                               shard_size=batch_size, kd_config=kd_over, **overrides)  # fmt: skip
        click.echo(f"wrote {ds.manifest['images_written']} images to {ds.root} ({ds.manifest['num_shards']} shards)")
        return
    if generator_path is not None or student is not None or len(_kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed)) > 1:
        raise UserInputError(
            f"--generator, --student and the KD options apply to online methods (dafl, zskt, dfad), not {method!r}"
        )
    ds = synthesize_dataset(lm, method, out, num_images, seed=seed, **overrides)
    if _main_rank():
        click.echo(f"wrote {ds.manifest['images_written']} images to {ds.root} ({ds.manifest['num_shards']} shards)")


@cli.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["imagefolder", "npz"]), required=True)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path))
def export(dataset: Path, fmt: str, out: Path) -> None:
    """Export a synthetic dataset as an ImageFolder tree of PNGs or an .npz (images, labels)."""
    from datafree.dataset import export_dataset

    path = export_dataset(dataset, fmt, out)
    click.echo(f"exported {dataset} to {path}")


@cli.command()
@click.option("--teacher", "-t", default="resnet8_digits", show_default=True, help="Shipped name or card path.")
@click.option("--student", "-s", default=None, help="Student architecture (default: a smaller registered one).")
@click.option("--data", "-d", type=click.Path(path_type=Path), default=None, help="Synthetic dataset directory.")
@click.option("--method", "-m", default=None, help="Backend to synthesize with (when no --data).")
@click.option("--num-images", "-n", type=int, default=None, callback=_positive, help="Images to synthesize (offline methods).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Output directory (model.json).")
@click.option("--pool", is_flag=True, help="Offline methods: synthesise one batch per round and train on the pool so far "
              "(Fast-Datafree's loop; no dataset is written).")
@_add(kd_opts)
@_add(run_opts)
def distill(
    teacher: str, student: str | None, data: Path | None, method: str | None, num_images: int | None, out: Path,
    pool: bool, epochs: int | None, steps_per_epoch: int | None, kd_batch_size: int | None, lr: float | None,
    temperature: float | None, seed: int, options: tuple[str, ...], trust_checkpoint: bool, device: str | None,
    quiet: bool, threads: int | None,
) -> None:  # fmt: skip
    """Train a student from the teacher on synthetic data; writes OUT/model.json. Rerun to resume."""
    from datafree.cards import load_model
    from datafree.distributed import run_on_main
    from datafree.errors import UserInputError
    from datafree.pipeline import DEFAULT_NUM_IMAGES, distill_to_dir, make_student, prepare_out_dir
    from datafree.sources import DatasetSource

    if (data is None) == (method is None):
        raise UserInputError("give exactly one of --data DIR (a synthetic dataset) or --method NAME")
    if data is not None and options:
        raise UserInputError(f"--set {options[0]} configures a synthesis backend and needs --method, not --data")
    if pool and (method is None or _method_is_online(method)):
        raise UserInputError("--pool needs an offline --method (for example fast), not --data or an online method")
    dev = _setup(device, quiet, threads)
    kd = _kd_config(
        epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=kd_batch_size, lr=lr, temperature=temperature, seed=seed
    )
    lm = load_model(teacher, dev, trust_checkpoint=trust_checkpoint)
    make_student(student, lm, seed)  # an unknown --student fails before --out is touched
    source = synth = None
    opts = _parse_set(options)
    if data is not None:  # validate the whole dataset (manifest, every shard, teacher) before touching --out
        source = DatasetSource(data, lm.card, dev, seed=seed)
    elif not _method_is_online(str(method)):  # a BN method without BN, a bad --set: before --out
        from generators import create_synthesizer

        synth = create_synthesizer(str(method), lm.model, lm.card, seed=seed, **opts)
    if synth is not None and not pool:  # a checkpoint in --out this run cannot resume: before data/ is written
        from datafree.distill import check_checkpoint

        check_checkpoint(out, kd, out / "data")
    run_on_main(lambda: prepare_out_dir(out))  # rank 0 creates it; its error stops every rank
    if method is not None:
        if synth is None:  # DAFL / ZSKT / DFAD: generator trained inside the KD stage
            from datafree.online import distill_online_to_dir

            kd_over = _kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed)
            rep = distill_online_to_dir(lm, method, out, student_arch=student, kd=kd_over, seed=seed, **opts)
            click.echo(f"student {rep['arch']}: test accuracy {rep['accuracy']:.4f}; card {out / 'model.json'}; "
                       f"generator {rep['generator']}")  # fmt: skip
            return
        if pool:
            rep = _distill_pool(lm, synth, out, student, seed,
                                _kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed))  # fmt: skip
            click.echo(f"student {rep['arch']}: test accuracy {rep['accuracy']:.4f}; card {out / 'model.json'}")
            return
        from datafree.synthesis import synthesize_dataset

        ds = synthesize_dataset(lm, method, out / "data", num_images or DEFAULT_NUM_IMAGES, seed=seed, **opts)
        source = DatasetSource(ds.root, lm.card, dev, seed=seed)
    rep = distill_to_dir(lm, source, out, student_arch=student, kd=kd, seed=seed)
    if _main_rank():
        click.echo(f"student {rep['arch']}: test accuracy {rep['accuracy']:.4f}; card {out / 'model.json'}")


def _method_is_online(method: str) -> bool:
    from generators import method_class

    return bool(method_class(method).online)


def _distill_pool(lm: Any, synth: Any, out: Path, student: str | None, seed: int, kd_over: dict[str, Any]) -> dict[str, Any]:
    """Fast-Datafree's loop through the shared KD stage: the backend's ``pool_kd`` settings unless
    given on the command line; resumable like any distillation (the pool is in the checkpoint)."""
    from datafree.pipeline import distill_to_dir
    from datafree.sources import PoolSource

    cls = type(synth)
    kd = _kd_config(**{**getattr(cls, "pool_kd", {}), **kd_over})
    source = PoolSource(synth, batch_size=getattr(cls, "pool_batch_size", None), seed=seed)
    return distill_to_dir(lm, source, out, student_arch=student, kd=kd, seed=seed, desc=f"{cls.name} pool distill")


@cli.command()
@click.option("--model", "-m", "model", required=True, help="Card path, directory with model.json, or shipped name.")
@click.option("--data", "-d", type=click.Path(path_type=Path), default=None, help="ImageFolder dir or .npz (default: digits test split).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@trust_opt
@device_opt
def evaluate(model: str, data: Path | None, as_json: bool, trust_checkpoint: bool, device: str | None) -> None:
    """Accuracy of a model on real labelled data (an int8 card on CPU unless --device says otherwise)."""
    from datafree.cards import load_card
    from datafree.evaluate import evaluate as run_eval

    # a real int8 model runs on CPU only: the automatic device choice must not pick CUDA for it
    if device is None and load_card(model).is_int8:
        device = "cpu"
    dev = _setup(device, True)
    res = run_eval(model, data, dev, trust_checkpoint=trust_checkpoint)
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"accuracy {res['accuracy']:.4f} on {res['num_samples']} images ({res['data']}); params {res['params']}")


@cli.command()
@click.option("--teacher", "-t", default="resnet8_digits", show_default=True, help="Shipped name or card path.")
@click.option("--method", "-m", default="deepinversion", show_default=True, help="Synthesis backend.")
@click.option("--student", "-s", default=None, help="Student architecture (default: a smaller registered one).")
@click.option("--num-images", "-n", type=int, default=None, callback=_positive, help="Synthetic images (offline methods; default 1024).")
@click.option("--out", "-o", default="runs/compress", show_default=True, type=click.Path(path_type=Path))
@click.option("--iterations", type=int, default=None, callback=_positive, help="Synthesis steps per batch.")
@click.option("--no-baseline", is_flag=True, help="Skip the Gaussian-noise baseline.")
@click.option("--prune", "prune_ratio", type=float, default=None, help="Then prune this fraction of channels and recover by KD.")
@click.option("--importance", type=click.Choice(["l1", "l2", "bn", "taylor"]), default="l2", show_default=True, help="Pruning criterion.")
@click.option("--quantize", default=None, metavar="WxAy", help="Then quantize, e.g. W8A8 (real int8 too) or W4A8.")
@_add(kd_opts)
@seed_opt
@set_opt
@device_opt
@quiet_opt
@threads_opt
def compress(
    teacher: str, method: str, student: str | None, num_images: int | None, out: Path, iterations: int | None,
    no_baseline: bool, prune_ratio: float | None, importance: str, quantize: str | None, epochs: int | None,
    steps_per_epoch: int | None, kd_batch_size: int | None, lr: float | None,
    temperature: float | None, seed: int, options: tuple[str, ...], device: str | None, quiet: bool,
    threads: int | None,
) -> None:  # fmt: skip
    """The main job: teacher -> smaller student on synthetic data, with report.json. Rerun to resume.

    Stages, in order: --student ARCH (the default job when no other stage is given), --prune R,
    --quantize WxAy; each is reported in report.json (accuracy, params, MACs, bytes, latency).
    """
    from datafree.pipeline import DEFAULT_NUM_IMAGES
    from datafree.pipeline import compress as run

    dev = _setup(device, quiet, threads)
    if _method_is_online(method):  # the method's own KD settings, with what was given here on top
        from datafree.online import kd_config_for

        kd = kd_config_for(method, _kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed))
    else:
        kd = _kd_config(
            epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=kd_batch_size, lr=lr, temperature=temperature,
            seed=seed,
        )  # fmt: skip
    synth_options: dict[str, Any] = _parse_set(options)
    if iterations is not None:
        synth_options["iterations"] = iterations
    rep = run(
        teacher, out, method=method, student=student, num_images=num_images or DEFAULT_NUM_IMAGES, kd=kd,
        baseline=not no_baseline, seed=seed, device=dev, synth_options=synth_options,
        prune=prune_ratio, importance=importance, quantize=quantize,
    )  # fmt: skip
    t = rep["teacher"]
    click.echo(f"teacher {t['arch']}: test accuracy {t['accuracy']:.4f} ({t['params']} params)")
    if "student" in rep:
        s = rep["student"]
        click.echo(
            f"student {s['arch']}: test accuracy {s['accuracy']:.4f} ({s['params']} params), "
            f"{100 * s['ratio_to_teacher']:.1f}% of the teacher"
        )
    if "prune" in rep:
        p = rep["prune"]["stages"]
        click.echo(
            f"pruned {rep['prune']['ratio']:g} ({importance}): test accuracy {p['pruned']['accuracy']:.4f} -> "
            f"{p['recovered']['accuracy']:.4f} after recovery ({p['recovered']['params']} params)"
        )
    if "quantize" in rep:
        q = rep["quantize"]
        click.echo(f"quantized W{q['weight_bits']}A{q['act_bits']}: test accuracy {q['quantized']['accuracy']:.4f} "
                   f"({q['quantized']['size_bytes']} bytes)")  # fmt: skip
    if "noise_baseline" in rep:
        click.echo(f"same student from Gaussian noise: {rep['noise_baseline']['accuracy']:.4f}")
    click.echo(f"stages (s): {rep['stages_seconds']}; report {Path(out) / 'report.json'}")


# --- prune (datafree.prune) ---------------------------------------------------------------------
@cli.command()
@click.option("--model", "-m", "model", required=True, help="Card path, directory with model.json, or shipped name.")
@click.option("--ratio", "-r", required=True, type=float, help="Fraction of channels to remove, in (0, 1).")
@click.option("--importance", type=click.Choice(["l1", "l2", "bn", "taylor"]), default="l2", show_default=True,
              help="Channel criterion: weight magnitude (l1, l2), BN scale (bn), Taylor on synthetic batches.")  # fmt: skip
@click.option("--global", "global_pruning", is_flag=True, help="Rank channels across layers instead of per layer.")
@click.option("--data", "-d", type=click.Path(path_type=Path), default=None, help="Synthetic dataset directory.")
@click.option("--method", default=None, help="Backend to synthesize with (when no --data).")
@click.option("--num-images", "-n", type=int, default=None, callback=_positive, help="Images to synthesize (offline methods).")
@click.option("--epochs", type=click.IntRange(0, 2**31 - 1), default=20, show_default=True, help="Recovery KD epochs (0: prune only).")
@click.option("--steps-per-epoch", type=int, default=None, callback=_positive, help="Student steps per epoch.")
@click.option("--kd-batch-size", "kd_batch_size", type=int, default=None, callback=_positive, help="KD batch size.")
@click.option("--lr", type=float, default=None, help="Learning rate of the recovery.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Output directory (model.json).")
@_add(run_opts)
def prune(
    model: str, ratio: float, importance: str, global_pruning: bool, data: Path | None, method: str | None,
    num_images: int | None, epochs: int, steps_per_epoch: int | None, kd_batch_size: int | None, lr: float | None,
    out: Path, seed: int, options: tuple[str, ...], trust_checkpoint: bool, device: str | None, quiet: bool,
    threads: int | None,
) -> None:  # fmt: skip
    """Remove channels for real, recover by KD from the unpruned model on synthetic data. Rerun to resume."""
    from datafree.cards import load_model
    from datafree.pipeline import DEFAULT_NUM_IMAGES
    from datafree.prune import prune_model

    dev = _setup(device, quiet, threads)
    kd = _kd_config(steps_per_epoch=steps_per_epoch, batch_size=kd_batch_size, lr=lr, seed=seed)
    lm = load_model(model, dev, trust_checkpoint=trust_checkpoint)
    rep = prune_model(
        lm, ratio, importance, data=data, method=method, epochs=epochs, out_dir=out, device=dev,
        global_pruning=global_pruning, num_images=num_images or DEFAULT_NUM_IMAGES, seed=seed, kd=kd,
        method_options=_parse_set(options),
    )  # fmt: skip
    st = rep["stages"]
    final = st.get("recovered", st["pruned"])
    click.echo(f"unpruned: test accuracy {st['unpruned']['accuracy']:.4f}, {st['unpruned']['params']} params")
    click.echo(f"pruned {ratio:g} ({importance}): test accuracy {st['pruned']['accuracy']:.4f}, {st['pruned']['params']} params "
               f"({100 * rep['params_removed']:.1f}% removed), {rep['speedup_b64']:.2f}x faster at batch 64")  # fmt: skip
    if "recovered" in st:
        click.echo(f"recovered: test accuracy {final['accuracy']:.4f} ({100 * rep['accuracy_kept']:.1f}% of the unpruned model)")
    click.echo(f"card {rep['card']}; report {out / 'report.json'}")


# --- end prune -----------------------------------------------------------------------------------


# --- quantize (datafree.quant) ------------------------------------------------------------------
@cli.command()
@click.option("--model", "-m", "model", default="resnet8_digits", show_default=True, help="Shipped name, card path or directory.")
@click.option("--weight-bits", "-w", type=click.IntRange(2, 8), default=8, show_default=True, help="Bits per weight (per channel).")
@click.option("--act-bits", "-a", type=click.IntRange(2, 8), default=8, show_default=True, help="Bits per activation (per tensor).")
@click.option(
    "--calib", default="zeroq", show_default=True,
    help="Calibration data: zeroq, deepinversion, noise, digits (real images: reference only) or a synthetic dataset DIR.",
)  # fmt: skip
@click.option("--calib-images", type=int, default=64, show_default=True, callback=_positive, help="Calibration images.")
@click.option("--finetune-epochs", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True, help="KD fine-tuning epochs (0: calibration only).")
@click.option("--weight-calib", type=click.Choice(["minmax", "percentile", "mse"]), default="mse", show_default=True)
@click.option("--act-calib", type=click.Choice(["minmax", "percentile", "mse"]), default="mse", show_default=True)
@click.option("--asymmetric-weights", is_flag=True, help="Asymmetric weight grids (default: symmetric).")
@click.option("--int8", "int8", is_flag=True, help="Also export a real int8 CPU model (W8A8, OUT/int8/model.json) and time fp32 vs int8.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Output directory (model.json, report.json).")
@_add(run_opts)
def quantize(
    model: str, weight_bits: int, act_bits: int, calib: str, calib_images: int, finetune_epochs: int,
    weight_calib: str, act_calib: str, asymmetric_weights: bool, int8: bool, out: Path, seed: int,
    options: tuple[str, ...], trust_checkpoint: bool, device: str | None, quiet: bool, threads: int | None,
) -> None:  # fmt: skip
    """Quantize a model with synthetic calibration data (ZeroQ by default); writes OUT/model.json + report.json."""
    from datafree.cards import load_model
    from datafree.pipeline import prepare_out_dir
    from datafree.quant import quantize as run

    dev = _setup(device, quiet, threads)
    from datafree.quant.api import check_quantize_args

    lm = load_model(model, dev, trust_checkpoint=trust_checkpoint)
    set_options = _parse_set(options)
    check_quantize_args(lm, calib, **set_options)  # before --out is created
    out = prepare_out_dir(out)
    rep = run(
        lm, weight_bits, act_bits, calib, calib_images=calib_images, finetune_epochs=finetune_epochs, int8=int8,
        out_dir=out, device=dev, seed=seed, weight_calib=weight_calib, act_calib=act_calib,
        weight_symmetric=not asymmetric_weights, **set_options,
    )  # fmt: skip
    q = rep["quantized"]
    click.echo(f"fp32: test accuracy {rep['fp32']['accuracy']:.4f}, {rep['fp32']['size_bytes']} bytes")
    click.echo(f"W{weight_bits}A{act_bits} ({rep['calib']}): test accuracy {q['accuracy']:.4f}, {q['size_bytes']} bytes")
    if "finetune" in rep:
        click.echo(f"  (before KD fine-tuning: {rep['finetune']['accuracy_before']:.4f})")
    if "int8" in rep:
        lat = rep["latency_cpu"]["batch_64"]
        click.echo(
            f"int8 (CPU): test accuracy {rep['int8']['accuracy']:.4f}; "
            f"batch 64: {lat['int8']['cpu_ms']} ms vs fp32 {lat['fp32']['cpu_ms']} ms (CPU time)"
        )
        click.echo(f"int8 card {rep['int8']['model_card']} (CPU only)")
    click.echo(f"card {out / 'model.json'}; report {out / 'report.json'}")


# --- end quantize ---------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="datafree")


if __name__ == "__main__":
    main()
