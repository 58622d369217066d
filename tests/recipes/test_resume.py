"""The SFT recipe killed and resumed, re-run when finished, resumed from a named checkpoint: each compared with an
uninterrupted run of the same settings (tiny random Qwen2-shaped model on CPU, as in test_sft_recipe.py).

A run restarted from step 0 ends with the same losses as an uninterrupted one (training is deterministic), so each
test also counts the steps the last process trained: the log lines it printed and the mean loss it reports.
"""

import json
import logging
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tests.process import kill_when
from tests.recipes.test_sft_recipe import REPO, _command, _log_history, _run, workdir  # noqa: F401 (fixture)

STEPS = 6
SETTINGS = {"max_steps": STEPS, "save_steps": 2, "per_device_train_batch_size": 2}


def _losses(output_dir: Path) -> list[float]:
    return [h["loss"] for h in _log_history(output_dir) if "loss" in h]


def _steps_logged(proc: subprocess.CompletedProcess) -> int:
    """Training steps this process ran: the Trainer prints one {'loss': ...} line per step (logging_steps 1)."""
    return sum(line.startswith("{'loss'") for line in proc.stdout.splitlines())


def _train_loss(output_dir: Path) -> float:
    """Mean loss of the steps the last `train()` call ran (the Trainer's own train_loss metric)."""
    return json.loads((output_dir / "train_results.json").read_text())["train_loss"]


def _assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def straight(workdir):  # noqa: F811
    """An uninterrupted run, its checkpoints kept (steps 4 and 6)."""
    proc = _run(workdir, "straight", keep_checkpoints=True, save_total_limit=2, **SETTINGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = workdir / "straight"
    assert len(_losses(out)) == STEPS and _steps_logged(proc) == STEPS
    return out


def test_killed_run_resumes_to_the_uninterrupted_result(workdir, straight):  # noqa: F811
    out = workdir / "killed"
    # its own session, so that the launcher and the training process it starts are killed together
    returncode = kill_when(_command(workdir, "killed", **SETTINGS), lambda: bool(list(out.glob(
        "checkpoint-*/trainer_state.json"))), 600, 0.1, cwd=REPO, start_new_session=True)  # a complete checkpoint
    assert returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "trainer_state.json").exists()  # written only once the final model is saved
    done = max(json.loads(p.read_text())["global_step"] for p in out.glob("checkpoint-*/trainer_state.json"))
    assert 0 < done < STEPS

    resumed = _run(workdir, "killed", **SETTINGS)  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f"checkpoint-{done} (step {done})" in log  # the last complete one (killed while saving one: skipped)
    assert "There were missing keys" not in log  # the tied head is re-tied, not reported missing
    assert _steps_logged(resumed) == STEPS - done  # only the steps left, none twice
    reference = _losses(straight)
    assert [h["step"] for h in _log_history(out) if "loss" in h] == list(range(1, STEPS + 1))
    np.testing.assert_allclose(_losses(out), reference, rtol=1e-5)
    np.testing.assert_allclose(_train_loss(out), np.mean(reference[done:]), rtol=1e-5)
    _assert_same_weights(out, straight)
    assert (out / "music3m" / "bundle.json").exists()
    assert not list(out.glob("checkpoint-*"))  # keep_checkpoints: false (the default) -> removed at the end


def test_rerun_of_a_finished_run_trains_no_step(workdir, straight):  # noqa: F811
    out = workdir / "rerun"
    shutil.copytree(straight, out)
    state_before, model_before = (out / "trainer_state.json").read_bytes(), (out / "model.safetensors").read_bytes()
    shutil.rmtree(out / "music3m")  # a bundle lost after training is written again
    proc = _run(workdir, "rerun", keep_checkpoints=True, save_total_limit=2, **SETTINGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run complete" in proc.stdout + proc.stderr and _steps_logged(proc) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]  # no checkpoint-7
    assert (out / "trainer_state.json").read_bytes() == state_before
    assert (out / "model.safetensors").read_bytes() == model_before
    assert json.loads((out / "music3m" / "bundle.json").read_text())["modalities"] == ["ST", "RI"]

    # killed after its last checkpoint, before the final save: that checkpoint becomes the model, no step is trained
    for name in ("trainer_state.json", "model.safetensors"):
        (out / name).unlink()
    proc = _run(workdir, "rerun", **SETTINGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _steps_logged(proc) == 0 and "There were missing keys" not in proc.stdout + proc.stderr
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == STEPS
    _assert_same_weights(out, straight, atol=0)
    assert not list(out.glob("checkpoint-*"))


def test_resume_from_checkpoint_named_by_the_user_is_honoured(workdir, straight):  # noqa: F811
    out = workdir / "named"
    shutil.copytree(straight, out)  # a finished run: without the option it would be reused as it is
    proc = _run(workdir, "named", resume_from_checkpoint=str(out / "checkpoint-4"), **SETTINGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint-4 (step 4)" in proc.stdout + proc.stderr and _steps_logged(proc) == STEPS - 4
    reference = _losses(straight)
    np.testing.assert_allclose(_losses(out), reference, rtol=1e-5)
    np.testing.assert_allclose(_train_loss(out), np.mean(reference[4:]), rtol=1e-5)
    _assert_same_weights(out, straight)
    assert not list(out.glob("checkpoint-*"))


def test_resumed_tied_head_is_the_input_embedding(tmp_path):
    """Checkpoints do not store a head tied to the input embedding; after loading one, the head is the checkpoint's
    embedding, and the Trainer re-ties it instead of warning that lm_head.weight is missing."""
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

    from recipes.sft.trainer import tie_head_on_resume

    config = AutoConfig.for_model("qwen2", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, vocab_size=96, tie_word_embeddings=True)
    torch.manual_seed(0)
    trained = AutoModelForCausalLM.from_config(config)
    trained.save_pretrained(tmp_path / "checkpoint-1")
    assert "lm_head.weight" not in load_file(tmp_path / "checkpoint-1" / "model.safetensors")

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)  # other weights, as a fresh process builds it
    tie_head_on_resume(model)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True,
                                                          report_to="none"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    trainer_logger = logging.getLogger("transformers.trainer")
    trainer_logger.addHandler(handler)
    try:
        trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    finally:
        trainer_logger.removeHandler(handler)
    assert not [r for r in records if "missing keys" in r.getMessage()]
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert head.data_ptr() == embedding.data_ptr()
    torch.testing.assert_close(head, trained.get_input_embeddings().weight, rtol=0, atol=0)
