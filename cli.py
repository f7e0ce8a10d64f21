"""The ``datafree`` command: a thin click layer over the library (parse, validate, call, summarise).

Heavy imports (torch) happen inside commands so ``datafree --help`` is instant. Every error a user
can cause is one line on stderr and exit status 2; no traceback.
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

    def invoke(self, ctx: click.Context) -> Any:
        from datafree.errors import DatafreeError

        try:
            return super().invoke(ctx)
        except DatafreeError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; rerun the same command to resume", err=True)
            ctx.exit(130)


def _setup(device: str | None, quiet: bool, threads: int | None = None) -> Any:
    import torch

    from datafree.progress import set_quiet
    from datafree.utils import resolve_device

    set_quiet(quiet)
    if threads:
        torch.set_num_threads(threads)
    return resolve_device(device)


def _parse_set(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        out[key.strip()] = val.strip()
    return out


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return value


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


device_opt = click.option("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available, else CPU).")
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
seed_opt = click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random choice.")
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
    """List the registered architectures (any torchvision classifier name works too)."""
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
@seed_opt
@set_opt
@trust_opt
@device_opt
@quiet_opt
@threads_opt
def synthesize(
    teacher: str, method: str, num_images: int, out: Path, batch_size: int | None, iterations: int | None,
    generator_path: Path | None, student: str | None, epochs: int | None, steps_per_epoch: int | None,
    kd_batch_size: int | None, lr: float | None, temperature: float | None, seed: int, options: tuple[str, ...], trust_checkpoint: bool, device: str | None, quiet: bool, threads: int | None,
) -> None:  # fmt: skip
    """Write a synthetic dataset (shards + manifest.json + samples.png); rerun to resume."""
    from datafree.cards import load_model
    from datafree.errors import UserInputError
    from datafree.synthesis import synthesize_dataset
    from generators import method_class

    dev = _setup(device, quiet, threads)
    overrides: dict[str, Any] = _parse_set(options)
    if iterations is not None:
        overrides["iterations"] = iterations
    lm = load_model(teacher, dev, trust_checkpoint=trust_checkpoint)
    if method_class(method).online:  # train a generator (in OUT_generator/) or reuse --generator, then sample
        from datafree.online import synthesize_online

        kd_over = _kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed)
        ds = synthesize_online(lm, method, out, num_images, generator_path=generator_path, student=student, seed=seed,
                               shard_size=batch_size, kd_config=kd_over, **overrides)  # fmt: skip
        click.echo(f"wrote {ds.manifest['images_written']} images to {ds.root} ({ds.manifest['num_shards']} shards)")
        return
    if generator_path is not None or student is not None or len(_kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed)) > 1:
        raise UserInputError(
            f"--generator, --student and the KD options apply to online methods (dafl, zskt, dfad), not {method!r}"
        )
    ds = synthesize_dataset(lm, method, out, num_images, seed=seed, batch_size=batch_size, **overrides)
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
@_add(kd_opts)
@seed_opt
@set_opt
@trust_opt
@device_opt
@quiet_opt
@threads_opt
def distill(
    teacher: str, student: str | None, data: Path | None, method: str | None, num_images: int | None, out: Path,
    epochs: int | None, steps_per_epoch: int | None, kd_batch_size: int | None, lr: float | None,
    temperature: float | None, seed: int, options: tuple[str, ...], trust_checkpoint: bool, device: str | None,
    quiet: bool, threads: int | None,
) -> None:  # fmt: skip
    """Train a student from the teacher on synthetic data; writes OUT/model.json. Rerun to resume."""
    from datafree.cards import load_model
    from datafree.errors import UserInputError
    from datafree.pipeline import DEFAULT_NUM_IMAGES, distill_to_dir, prepare_out_dir
    from datafree.sources import DatasetSource

    if (data is None) == (method is None):
        raise UserInputError("give exactly one of --data DIR (a synthetic dataset) or --method NAME")
    dev = _setup(device, quiet, threads)
    kd = _kd_config(
        epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=kd_batch_size, lr=lr, temperature=temperature, seed=seed
    )
    lm = load_model(teacher, dev, trust_checkpoint=trust_checkpoint)
    out = prepare_out_dir(out)
    if method is not None:
        from generators import method_class

        if method_class(method).online:  # DAFL / ZSKT / DFAD: generator trained inside the KD stage
            from datafree.online import distill_online_to_dir

            kd_over = _kd_overrides(epochs, steps_per_epoch, kd_batch_size, lr, temperature, seed)
            rep = distill_online_to_dir(lm, method, out, student_arch=student, kd=kd_over, seed=seed, **_parse_set(options))
            click.echo(f"student {rep['arch']}: test accuracy {rep['accuracy']:.4f}; card {out / 'model.json'}; "
                       f"generator {rep['generator']}")  # fmt: skip
            return
        from datafree.synthesis import synthesize_dataset

        ds = synthesize_dataset(lm, method, out / "data", num_images or DEFAULT_NUM_IMAGES, seed=seed, **_parse_set(options))
        data = ds.root
    from datafree.dataset import SyntheticDataset

    SyntheticDataset.open(data).check_compatible(lm.card)
    rep = distill_to_dir(lm, DatasetSource(data, lm.card, dev, seed=seed), out, student_arch=student, kd=kd, seed=seed)
    click.echo(f"student {rep['arch']}: test accuracy {rep['accuracy']:.4f}; card {out / 'model.json'}")


@cli.command()
@click.option("--model", "-m", "model", required=True, help="Card path, directory with model.json, or shipped name.")
@click.option("--data", "-d", type=click.Path(path_type=Path), default=None, help="ImageFolder dir or .npz (default: digits test split).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@trust_opt
@device_opt
def evaluate(model: str, data: Path | None, as_json: bool, trust_checkpoint: bool, device: str | None) -> None:
    """Accuracy of a model on real labelled data."""
    from datafree.evaluate import evaluate as run_eval

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
@_add(kd_opts)
@seed_opt
@set_opt
@device_opt
@quiet_opt
@threads_opt
def compress(
    teacher: str, method: str, student: str | None, num_images: int | None, out: Path, iterations: int | None,
    no_baseline: bool, epochs: int | None, steps_per_epoch: int | None, kd_batch_size: int | None, lr: float | None,
    temperature: float | None, seed: int, options: tuple[str, ...], device: str | None, quiet: bool,
    threads: int | None,
) -> None:  # fmt: skip
    """The main job: teacher -> smaller student on synthetic data, with report.json. Rerun to resume."""
    from datafree.pipeline import DEFAULT_NUM_IMAGES
    from datafree.pipeline import compress as run

    from generators import method_class

    dev = _setup(device, quiet, threads)
    if method_class(method).online:  # the method's own KD settings, with what was given here on top
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
    )  # fmt: skip
    t, s = rep["teacher"], rep["student"]
    click.echo(f"teacher {t['arch']}: test accuracy {t['accuracy']:.4f} ({t['params']} params)")
    click.echo(
        f"student {s['arch']}: test accuracy {s['accuracy']:.4f} ({s['params']} params), "
        f"{100 * s['ratio_to_teacher']:.1f}% of the teacher"
    )
    if "noise_baseline" in rep:
        click.echo(f"same student from Gaussian noise: {rep['noise_baseline']['accuracy']:.4f}")
    click.echo(f"stages (s): {rep['stages_seconds']}; report {Path(out) / 'report.json'}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="datafree")


if __name__ == "__main__":
    main()
