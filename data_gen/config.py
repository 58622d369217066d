"""Dataclass configs from a YAML file plus command-line overrides -> a filled dataclass instance.

`parse_config(MyConfig)` accepts `--config file.yaml` and `--field_name value` (or `--field-name value`) for every
field; command-line values win over the YAML, the YAML wins over the dataclass defaults. Help texts come from
`field(metadata={"help": ...})`, so `--help` documents every setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _base_type(tp: Any) -> Any:
    """Strip Optional[...] / `X | None` to X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _str2bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description or (cls.__doc__ or "").strip().split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=str, default=None, help="YAML file with any of the options below")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        kwargs: dict[str, Any] = {"help": f.metadata.get("help", ""), "dest": f.name}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            kwargs["default"] = f.default_factory()  # type: ignore[misc]
        else:
            kwargs["required"] = True
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["type"] = _str2bool
            kwargs["nargs"] = "?"
            kwargs["const"] = True
        elif origin in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs["type"] = inner
            kwargs["nargs"] = "+"
        elif tp in (int, float, str):
            kwargs["type"] = tp
        else:
            kwargs["type"] = str
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        names = {f"--{f.name}", f"--{f.name.replace('_', '-')}"}
        parser.add_argument(*sorted(names), **kwargs)
    return parser


def parse_config(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse `cls` from `--config` YAML and command-line flags."""
    parser = build_parser(cls, description)
    argv = sys.argv[1:] if argv is None else argv
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", type=str, default=None)
    pre, _ = pre_parser.parse_known_args(argv)
    if pre.config:
        data = yaml.safe_load(Path(pre.config).read_text()) or {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            parser.error(f"{pre.config}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**data)
        for action in parser._actions:  # YAML satisfies required options
            if action.dest in data:
                action.required = False
    ns = parser.parse_args(argv)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if isinstance(values[f.name], list) and typing.get_origin(_base_type(typing.get_type_hints(cls)[f.name])) is tuple:
            values[f.name] = tuple(values[f.name])
    return cls(**values)
