from dataclasses import dataclass, field

import pytest

from common.config import parse_config


@dataclass
class Demo:
    run_dir: str = field(metadata={"help": "where"})
    epochs: int = field(default=150, metadata={"help": "3MToken Sec. 3"})
    lr: float = 1e-4
    flag: bool = False
    name: str | None = None


def test_yaml_then_cli_override(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("run_dir: runs/x\nepochs: 3\nflag: true\n")
    cfg = parse_config(Demo, ["--config", str(cfg_file), "--epochs", "7", "--lr=0.5"])
    assert cfg == Demo(run_dir="runs/x", epochs=7, lr=0.5, flag=True, name=None)
    assert parse_config(Demo, ["--run-dir", "a", "--flag"]).flag is True
    assert parse_config(Demo, ["--run_dir", "a", "--flag", "false"]).flag is False


def test_unknown_yaml_key_and_missing_required_are_errors(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("run_dir: a\nepoch: 3\n")
    with pytest.raises(SystemExit):
        parse_config(Demo, ["--config", str(cfg_file)])
    assert "unknown option(s) epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(Demo, [])
