"""bench.sft_scaling's launches: the one-GPU row sees one GPU, the multi-GPU launches see all (no GPU needed)."""

import json

from bench import sft_scaling
from bench.sft_scaling import SFTScalingConfig, one_gpu_env


def test_one_gpu_env_keeps_only_the_first_visible_gpu():
    assert one_gpu_env({"PATH": "/bin"}) == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0"}
    assert one_gpu_env({"CUDA_VISIBLE_DEVICES": "3,5"})["CUDA_VISIBLE_DEVICES"] == "3"
    assert one_gpu_env({"CUDA_VISIBLE_DEVICES": ""})["CUDA_VISIBLE_DEVICES"] == "0"


def test_run_launches_one_gpu_then_each_setup_on_all(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    calls = []

    class Done:
        returncode = 0

    def fake_run(cmd, env=None, **kw):
        calls.append((cmd, env))
        out = cmd[cmd.index("--out") + 1]
        gpus = 1 if env else 2
        row = {"key": "fast128_compile_fused", "label": "fused", "gpus": gpus, "tokens_per_s": 50000.0 * gpus ** 0.5,
               "losses": [12.0, 8.0]}
        (tmp_path / "o").mkdir(exist_ok=True)
        with open(out, "w") as f:
            json.dump({"rows": [row]}, f)
        return Done()

    monkeypatch.setattr(sft_scaling.subprocess, "run", fake_run)
    sft_scaling.run(SFTScalingConfig(token_db_dir="tok", dqt_path="dqt", out_dir=str(tmp_path / "o"),
                                     rows="fast128_compile_fused", configs=["ddp"], gpus=2))
    (one_cmd, one_env), (ddp_cmd, ddp_env) = calls
    assert one_env["CUDA_VISIBLE_DEVICES"] == "0" and ddp_env is None  # the launcher sees both GPUs
    assert "--num_processes" in ddp_cmd and ddp_cmd[ddp_cmd.index("--num_processes") + 1] == "2"
    assert "| fused | ddp | 2 | 70,711 | 1.41 |" in capsys.readouterr().out
