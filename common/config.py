"""Command options: dataclasses -> `transformers.HfArgumentParser`, with `--config file.yaml` as in TRL's TrlParser.

The YAML sets defaults, the command line wins; help texts come from `field(metadata={"help": ...})`. Every command
of the repository parses its options through `parse_config`, the SFT recipe through TRL's TrlParser (same rules).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")


def parse_config(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse dataclass `cls` from `--config` YAML and command-line flags."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(cls, description=description or (cls.__doc__ or "").strip().split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=str, default=None, help="YAML file with any of the options below")
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=str, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        data = yaml.safe_load(Path(known.config).read_text()) or {}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            parser.error(f"{known.config}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**data)
        for action in parser._actions:  # values from the YAML satisfy required options (TrlParser does the same)
            if action.dest in data:
                action.required = False
    return parser.parse_args_into_dataclasses(args=argv)[0]
