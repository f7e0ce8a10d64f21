"""Run configurations as YAML: ``--config FILE`` and the resolved options saved beside each output.

``--config FILE`` works on every command that computes; the resolved configuration is saved beside
each output (``OUT/config.yaml``) so ``--config OUT/config.yaml`` replays the run.

A config file is a mapping whose keys are the command's long option names, with dashes or
underscores (``kd-batch-size`` or ``kd_batch_size``); values are what the option takes. Options given
on the command line win over the file, the file wins over the defaults. Repeatable ``KEY=VALUE``
options (``set``, ``kd``) take a mapping (``kd: {weight_decay: 1.0e-4}``) or a list of ``KEY=VALUE``
strings. An unknown key is an error naming it.

KD settings: every field of :class:`datafree.distill.KDConfig` is reachable through ``--kd KEY=VALUE``
(:func:`parse_kd`), the common ones also as options of their own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import UserInputError
from .utils import atomic_write

__all__ = [
    "CONFIG_FILE",
    "read_config",
    "to_default_map",
    "resolved_config",
    "write_config",
    "parse_kd",
    "dump_yaml",
]

CONFIG_FILE = "config.yaml"


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a core dependency
        raise UserInputError("--config needs PyYAML: pip install pyyaml") from None
    return yaml


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (an empty file is an empty mapping).

    Args:
        path: the file.

    Returns:
        Its top-level mapping.
    """
    yaml = _yaml()
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"cannot read config {p}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserInputError(
            f"{p}: not valid YAML{where} ({getattr(e, 'problem', None) or 'syntax error'})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UserInputError(f"{p}: a config file must be a mapping of option names to values")
    return data


def _pairs(key: str, value: Any, where: str) -> list[str]:
    """A ``KEY=VALUE`` option's config value (mapping, list or one string) as ``["k=v", ...]``."""

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return ",".join(text(x) for x in v)
        return str(v)

    if isinstance(value, dict):
        return [f"{k}={text(v)}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UserInputError(f"{where}: {key} must be a mapping or a list of KEY=VALUE strings")


def _option_names(command: Any) -> dict[str, Any]:
    """``{long option name without dashes: click parameter}`` of a click command (and argument names)."""
    names: dict[str, Any] = {}
    for param in command.params:
        if param.name in (None, "config", "help"):
            continue
        longs = [o[2:] for o in getattr(param, "opts", []) if o.startswith("--")]
        for n in longs or [param.name]:
            names[n.replace("_", "-")] = param
    return names


def to_default_map(command: Any, config: dict[str, Any], where: str) -> dict[str, Any]:
    """A config mapping as click's ``default_map`` of ``command`` (parameter name -> value).

    Args:
        command: the click command.
        config: the mapping read from the file.
        where: the file, for messages.

    Returns:
        The default map; unknown keys are refused, naming them.
    """
    names = _option_names(command)
    unknown = [k for k in config if k.replace("_", "-") not in names]
    if unknown:
        raise UserInputError(
            f"{where}: unknown key(s) {', '.join(unknown)} for '{command.name}' "
            f"(valid: {', '.join(sorted(names))})"
        )
    out: dict[str, Any] = {}
    for key, value in config.items():
        param = names[key.replace("_", "-")]
        if getattr(param, "multiple", False):
            value = _pairs(key, value, where) if value is not None else []
        elif isinstance(value, (dict, list)):
            raise UserInputError(f"{where}: {key} takes one value, got {type(value).__name__}")
        out[param.name] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def resolved_config(command: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The values a command ran with, keyed by long option name (what :func:`to_default_map` reads back)."""
    by_param = {}
    for name, param in _option_names(command).items():
        by_param.setdefault(param.name, name)
    return {by_param[k]: _plain(v) for k, v in params.items() if k in by_param}


def dump_yaml(data: dict[str, Any]) -> str:
    """``data`` as block-style YAML, keys in the given order."""
    return _yaml().safe_dump(data, sort_keys=False, default_flow_style=False)


def write_config(out_dir: str | Path, command: Any, params: dict[str, Any]) -> Path:
    """Write ``out_dir/config.yaml`` (atomically): the resolved options of this run, for ``--config``."""
    path = Path(out_dir) / CONFIG_FILE
    for tmp in path.parent.glob(f".{CONFIG_FILE}.*.tmp"):  # torn by a kill of an earlier run mid-write
        tmp.unlink(missing_ok=True)
    header = f"# datafree {command.name}: the resolved options of this run; replay with --config {path}\n"
    with atomic_write(path) as f:
        f.write((header + dump_yaml(resolved_config(command, params))).encode())
    return path


def parse_kd(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--kd KEY=VALUE`` pairs as typed :class:`datafree.distill.KDConfig` overrides.

    Args:
        values: ``KEY=VALUE`` strings; keys are KDConfig fields (dashes or underscores).

    Returns:
        ``{field: typed value}``; unknown fields and bad values are user errors naming them.
    """
    from .distill import KDConfig

    fields = {f.name: f for f in dataclasses.fields(KDConfig)}
    defaults = KDConfig()
    out: dict[str, Any] = {}
    for item in values:
        key, sep, text = item.partition("=")
        k = key.strip().replace("-", "_")
        if not sep or not k:
            raise UserInputError(f"--kd expects KEY=VALUE, got {item!r}")
        if k not in fields:
            raise UserInputError(
                f"--kd: unknown KD option {key.strip()!r}; valid: {', '.join(sorted(fields))}"
            )
        default, text = getattr(defaults, k), text.strip()
        try:
            if isinstance(default, bool):
                if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(text)
                value: Any = text.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = int(text)
            elif isinstance(default, float):
                value = float(text)
            else:
                value = text
        except ValueError:
            raise UserInputError(f"--kd {k}={text!r} must be a {type(default).__name__}") from None
        out[k] = value
    return out
