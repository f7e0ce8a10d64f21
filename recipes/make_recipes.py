"""Write the CIFAR recipes (``recipes/*.yaml``) and their table (``recipes/README.md``) from one place.

Each recipe is a ``--config`` file for one run: a method with its published CIFAR settings, one
teacher -> student pair, CIFAR-10 or CIFAR-100. The settings and the papers' numbers come from
/work/shared/REFERENCES.md (sections 2.1 and 3: the CMI and Fast-Datafree READMEs, which share the
teacher checkpoints; the reference scripts of DeepInversion-in-CMI, DAFL, ZSKT, DFAD, Fast-Datafree).
``tests/test_recipes.py`` checks that the files are what this script writes and that each validates.

    python recipes/make_recipes.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (pair id, teacher arch, student arch, label)
PAIRS = [
    ("resnet34_resnet18", "resnet34_cifar", "resnet18_cifar", "ResNet-34 -> ResNet-18"),
    ("wrn40_2_wrn16_2", "wrn40_2", "wrn16_2", "WRN-40-2 -> WRN-16-2"),
    ("wrn40_2_wrn16_1", "wrn40_2", "wrn16_1", "WRN-40-2 -> WRN-16-1"),
]
TEACHER_ACC = {("cifar10", "resnet34_cifar"): 95.70, ("cifar10", "wrn40_2"): 94.87,
               ("cifar100", "resnet34_cifar"): 78.05, ("cifar100", "wrn40_2"): 75.83}  # fmt: skip

# Published student top-1 (%), same teachers (CMI README; Fast-Datafree README for fast; DFAD only on
# its own ResNet-34-8x teacher, so no figure here). None: not published for this pair.
PAPER = {
    "deepinversion": {"cifar10": (93.26, 89.72, 83.04), "cifar100": (61.32, 61.34, 53.77)},
    "fast": {"cifar10": (94.05, 92.45, 89.29), "cifar100": (74.34, 65.12, 54.02)},
    "dafl": {"cifar10": (92.22, 81.55, 65.71), "cifar100": (74.47, 40.00, 22.50)},
    "zskt": {"cifar10": (93.32, 89.66, 83.74), "cifar100": (67.74, 28.44, 30.15)},
    "dfad": {"cifar10": (None, None, None), "cifar100": (None, None, None)},
}

# Published settings per method, as options of the command that runs it. Comments say where each
# setting comes from and where ours differs.
METHODS: dict[str, dict[str, Any]] = {
    "deepinversion": {
        "command": "compress",
        "source": "DeepInversion (ADI) as run by CMI's scripts/deepinv (the setting behind CMI's table): 256 "
        "images per round, 1000 Adam steps lr 0.1 betas (0.5, 0.99), bn 10, CE 1, adversarial "
        "(competition) 1 at JS T=3, TV 1e-3; 200 rounds = 51,200 images; KD KL T=20, SGD 0.1 "
        "momentum 0.9 wd 1e-4, cosine, 200 epochs x 400 steps at batch 256. Ours: the whole set is "
        "synthesized first, then KD (CMI interleaves rounds and KD).",
        "options": {
            "method": "deepinversion",
            "num-images": 51200,
            "iterations": 1000,
            "set": {
                "batch_size": 256,
                "lr": 0.1,
                "beta1": 0.5,
                "beta2": 0.99,
                "bn_weight": 10.0,
                "ce_weight": 1.0,
                "competition_weight": 1.0,
                "competition_temperature": 3.0,
                "tv_l2_weight": 0.001,
                "jitter": 2,
            },
            "epochs": 200,
            "steps-per-epoch": 400,
            "kd-batch-size": 256,
            "lr": 0.1,
            "temperature": 20.0,
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight-decay": 0.0001,
        },
    },  # fmt: skip
    "fast": {
        "command": "distill",
        "source": "Fast-Datafree (Fast-10): persistent meta-learned generator (nz 256, ngf 64), 10 inner "
        "steps "
        "at lr_g 2e-3 and lr_z 0.01, first-order MAML, bn 10 (EMA 0.9), oh 0.4, adv 1.1; one round "
        "of 256 images per epoch into the pool, 400 KD steps per round; KD 220 epochs, batch 256, SGD "
        "0.2, KL T=20, cosine, wd 1e-4 (the CMI code base's default). Ours: no 20-epoch "
        "synthesis-only warm-up and no re-init of the first "
        "layer at epoch 140.",
        "options": {
            "method": "fast",
            "pool": True,
            "set": {
                "batch_size": 256,
                "iterations": 10,
                "nz": 256,
                "ngf": 64,
                "lr": 0.002,
                "lr_z": 0.01,
                "bn_weight": 10.0,
                "bn_momentum": 0.9,
                "oh_weight": 0.4,
                "adv_weight": 1.1,
                "meta": "fomaml",
            },
            "epochs": 220,
            "steps-per-epoch": 400,
            "kd-batch-size": 256,
            "lr": 0.2,
            "temperature": 20.0,
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight-decay": 0.0001,
            "kd": {"kd_steps": 400},
        },
    },  # fmt: skip
    "dafl": {
        "command": "compress",
        "source": "DAFL (DAFL-train.py, CIFAR-10): generator batch 1024, latent 1000, lr_G 0.02; "
        "one-hot 0.05, "
        "information entropy 5, activation 0.01 (CIFAR-100: 0.5 / 20 / 0.1); student SGD 0.1, KL "
        "T=1; 2000 epochs x 120 iterations. Ours: cosine schedule instead of /10 at epochs 800 and "
        "1600; the entropy uses the natural log (DAFL: log10, a constant factor).",
        "options": {
            "method": "dafl",
            "set": {
                "batch_size": 1024,
                "latent_dim": 1000,
                "generator_lr": 0.02,
                "oh_weight": 0.05,
                "ie_weight": 5.0,
                "activation_weight": 0.01,
            },
            "epochs": 2000,
            "steps-per-epoch": 120,
            "kd-batch-size": 1024,
            "lr": 0.1,
            "temperature": 1.0,
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight-decay": 0.0005,
            "kd": {"kd_steps": 1},
        },
        "cifar100": {"set": {"oh_weight": 0.5, "ie_weight": 20.0, "activation_weight": 0.1}},
    },  # fmt: skip
    "zskt": {
        "command": "compress",
        "source": "ZSKT (scripts/ZeroShot/main0.sh): z batch 128, latent 100, generator Adam 1e-3, "
        "student Adam "
        "2e-3, 1 generator step then 10 student steps, 80,000 pseudo-batches with cosine annealing, "
        "grad-norm clip 5, attention beta 250, KL T=1.",
        "options": {
            "method": "zskt",
            "set": {
                "batch_size": 128,
                "latent_dim": 100,
                "generator_lr": 0.001,
                "generator_grad_clip": 5.0,
                "at_beta": 250.0,
                "lr_schedule": "cosine",
            },
            "epochs": 200,
            "steps-per-epoch": 4000,
            "kd-batch-size": 128,
            "lr": 0.002,
            "temperature": 1.0,
            "optimizer": "adam",
            "weight-decay": 0.0,
            "kd": {"kd_steps": 10, "g_steps": 1, "grad_clip": 5.0},
        },
    },  # fmt: skip
    "dfad": {
        "command": "compress",
        "source": "DFAD (DFAD_cifar.py): nz 256, batch 256, generator Adam 1e-3, 5 student steps (L1 between "
        "logits) per generator step, student SGD 0.1 momentum 0.9 wd 5e-4, 500 epochs x 50 "
        "iterations. Ours: cosine schedules instead of MultiStepLR at epochs 100 and 200.",
        "options": {
            "method": "dfad",
            "set": {"batch_size": 256, "latent_dim": 256, "generator_lr": 0.001},
            "epochs": 500,
            "steps-per-epoch": 250,
            "kd-batch-size": 256,
            "lr": 0.1,
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight-decay": 0.0005,
            "kd": {"loss": "l1", "kd_steps": 5},
        },
    },  # fmt: skip
}


def recipe(method: str, dataset: str, pair: tuple[str, str, str, str]) -> tuple[str, dict[str, Any], str]:
    """``(file name, options, header comment)`` of one recipe."""
    spec = METHODS[method]
    pid, teacher, student, label = pair
    opts: dict[str, Any] = {
        "teacher": f"cards/{dataset}_{teacher}.json",
        "student": student,
        "eval-data": f"{dataset}:data/{dataset}",
        "out": f"runs/{method}_{dataset}_{pid}",
    }
    for key, value in spec["options"].items():
        opts[key] = dict(value) if isinstance(value, dict) else value
    for key, value in spec.get(dataset, {}).items():
        opts[key] = {**opts.get(key, {}), **value} if isinstance(value, dict) else value
    opts["device"] = "cuda"
    paper = PAPER[method][dataset][[p[0] for p in PAIRS].index(pid)]
    name = f"{method}_{dataset}_{pid}.yaml"
    t_acc = TEACHER_ACC[(dataset, teacher)]
    header = (
        f"# usage: datafree {spec['command']} --config recipes/{name}\n"
        f"# {method} on {dataset.upper()}, {label}; published student top-1: "
        f"{'not published for this pair' if paper is None else f'{paper:.2f}'} (teacher {t_acc:.2f}).\n"
        f"# Needs the teacher card (datafree card {teacher} --weights CHECKPOINT --preset {dataset} --out "
        f"cards/{dataset}_{teacher}.json)\n# and torchvision's {dataset} files under data/{dataset} for the "
        "evaluation.\n"
    )
    return name, opts, header


def all_recipes() -> list[tuple[str, dict[str, Any], str]]:
    """Every recipe, in the README's order."""
    return [recipe(m, d, p) for m in METHODS for d in ("cifar10", "cifar100") for p in PAIRS]


def render(opts: dict[str, Any], header: str, source: str) -> str:
    """The YAML text of one recipe."""
    import yaml

    wrapped = "\n".join(f"# {line}" for line in _wrap(f"Settings: {source}", 100))
    return header + wrapped + "\n" + yaml.safe_dump(opts, sort_keys=False, default_flow_style=False)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


def readme() -> str:
    """The README table of the recipes with the papers' numbers."""
    rows = []
    for name, _, _ in all_recipes():
        method, dataset = name.split("_", 2)[:2]
        pid = name[len(method) + len(dataset) + 2 : -5]
        pair = next(p for p in PAIRS if p[0] == pid)
        paper = PAPER[method][dataset][[p[0] for p in PAIRS].index(pid)]
        t_acc = TEACHER_ACC[(dataset, pair[1])]
        cmd = METHODS[method]["command"]
        rows.append(f"| [{name}]({name}) | `{cmd}` | {method} | {dataset} | {pair[3]} | {t_acc:.2f} | "
                    f"{'-' if paper is None else f'{paper:.2f}'} |")  # fmt: skip
    return (
        "# Recipes: the published CIFAR settings of each method\n\n"
        "Each file is a `--config` for one run on a GPU: `datafree COMMAND --config recipes/FILE.yaml` (the\n"
        "command is on the file's first line). Options given on the command line override the file, e.g.\n"
        "`--out`, `--device cuda:1`, `--epochs 5` for a quick try. Written by "
        "`python recipes/make_recipes.py`;\n"
        "`tests/test_recipes.py` checks every file parses and validates against the command's options, the\n"
        "backend's settings and the KD settings (without running).\n\n"
        "Before running one you need:\n\n"
        "1. the teacher as a card, e.g. from the CMI / Fast-Datafree CIFAR checkpoints "
        "(`cifar10_resnet34.pth`,\n"
        "   `cifar10_wrn40_2.pth`, ...): `datafree card resnet34_cifar --weights cifar10_resnet34.pth "
        "--preset\n"
        "   cifar10 --out cards/cifar10_resnet34_cifar.json` (the file names the recipes expect are\n"
        "   `cards/{cifar10,cifar100}_{resnet34_cifar,wrn40_2}.json`);\n"
        "2. CIFAR in torchvision's on-disk layout under `data/cifar10` / `data/cifar100` (the\n"
        "   `cifar-10-batches-py` / `cifar-100-python` folders), used only for `--eval-data`: the accuracy\n"
        "   in `report.json` is measured on the CIFAR test split. Synthesis and KD never read it.\n\n"
        "Published student top-1 (%) with the same teacher checkpoints (CMI README; Fast-10 from the\n"
        "Fast-Datafree README; DFAD published CIFAR numbers only for its own ResNet-34-8x teacher: 93.3 /\n"
        "67.7, so none here). We have not run these recipes (no GPU here): they are the papers' settings,\n"
        "not results of ours. Each file's header says where its settings come from and where ours differ.\n\n"
        "| recipe | command | method | data | teacher -> student | teacher | paper student |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def expected_files() -> dict[str, str]:
    """``{file name: text}`` of everything this script writes."""
    files = {
        name: render(opts, header, METHODS[name.split("_", 1)[0]]["source"])
        for name, opts, header in all_recipes()
    }
    files["README.md"] = readme()
    return files


def main() -> None:
    """Write the recipes and the README into this directory."""
    for name, text in expected_files().items():
        (HERE / name).write_text(text)
    print(f"wrote {len(all_recipes())} recipes and README.md to {HERE}")


if __name__ == "__main__":
    main()
