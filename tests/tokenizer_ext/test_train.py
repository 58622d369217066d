"""The tokenizer training command end to end on a small demo run (SC, MC, RI): token DB, resume, re-encoding."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.config import parse_config
from data_gen.catalog.track_split import split_tracks
from data_gen.vectorize.embeddings import EmbeddingStore
from tests.tokenizer_ext.helpers import demo_run
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokenizer import MusicTokenizer
from tokenizer_ext.train import TrainConfig, main

REPO = Path(__file__).resolve().parents[2]
MODALITIES = ("SC", "MC", "RI")


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return demo_run(tmp_path_factory.mktemp("tok"), 300, MODALITIES)


def test_help():
    out = subprocess.run([sys.executable, "-m", "tokenizer_ext.train", "--help"], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert "--run_dir" in out.stdout and "--config" in out.stdout and "Sec. 3" in out.stdout


@pytest.mark.parametrize("method,sizes", [("rqvae", (32, 64, 128)), ("vqvae", (1024,)), ("kmeans", (1024,))])
def test_recipes_are_the_paper_configuration(method, sizes):
    cfg = parse_config(TrainConfig, ["--config", str(REPO / f"recipes/tokenizers/{method}.yaml"), "--run_dir", "r"])
    assert cfg.method == method and cfg.codebook_sizes == sizes
    assert (cfg.test_fraction, cfg.disambiguate, cfg.dead_code_reset) == (0.2, True, False)
    if method != "kmeans":
        assert (cfg.d_z, cfg.hidden_dims, cfg.beta, cfg.lr, cfg.batch_size, cfg.epochs) == \
            (32, (512, 256, 128), 0.25, 1e-4, 512, 150)
    assert parse_config(TrainConfig, ["--run_dir", "r", "--method", method]).codebook_sizes == sizes
    with pytest.raises(ValueError, match="one codebook level"):
        TrainConfig(run_dir="r", method="vqvae", codebook_sizes=(4, 8))


@pytest.mark.parametrize("method", ["rqvae", "vqvae", "kmeans"])
def test_train_end_to_end(run_dir, tmp_path, method, capsys):
    out_dir = tmp_path / method
    argv = ["--run_dir", str(run_dir), "--method", method, "--epochs", "2", "--modalities", "all",
            "--out_dir", str(out_dir), "--device", "cpu"]
    main(argv)
    table = capsys.readouterr().out
    assert "| SC | trained |" in table and "| TC | skipped" in table
    assert "after disambiguation: conflict rate 0.0000" in table

    store = EmbeddingStore(run_dir)
    db = TokenDB.load(out_dir)
    assert db.track_ids == store.track_ids and db.modalities == MODALITIES and db.tokenizer == method
    for m in MODALITIES:
        codes, present = db.codes[m], store.presence(m)
        assert not present.all()  # the demo catalog has tracks without this modality
        assert (codes[~present] == -1).all() and (codes[present] >= 0).all()
        assert (codes[present] < np.asarray(db.codebook_sizes[m])).all()
    assert db.dedup is not None and db.conflict_stats()["conflict_rate"] == 0.0

    split = json.loads((out_dir / "split.json").read_text())
    is_test = split_tracks(store.track_ids, 0.2, 0)
    assert (split["train"], split["test"], split["seed"], split["test_fraction"]) == \
        (int((~is_test).sum()), int(is_test.sum()), 0, 0.2)
    assert (out_dir / "test_tracks.txt").read_text().split() == [t for t, s in zip(store.track_ids, is_test) if s]

    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    epochs = 1 if method == "kmeans" else 2
    assert [(r["modality"], r["epoch"]) for r in log] == [(m, e) for m in MODALITIES for e in range(1, epochs + 1)]

    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["stage"] == "tokenize" and manifest["config"]["method"] == method
    assert set(manifest["counts"]["modalities"]) == set(MODALITIES) and "TC" in manifest["counts"]["skipped"]
    for m, rec in manifest["counts"]["modalities"].items():
        assert rec["train"] == int((store.presence(m) & ~is_test).sum())
        assert len(rec["dead_codes"]) == len(db.codebook_sizes[m])
        # kmeans here has one centroid per distinct row (K clipped), so it reconstructs its training rows exactly
        assert rec["recon"] < 1e-9 if method == "kmeans" else rec["recon"] > 0
        assert rec["val_recon"] >= 0
    conflicts = manifest["conflicts"]
    if method == "rqvae":  # 2 epochs of RQ-VAE on the demo leave tracks with identical code sequences
        assert conflicts["before_disambiguation"]["conflict_rate"] > 0
    assert conflicts["after_disambiguation"]["conflict_rate"] == 0.0
    tokenizer_json = json.loads((out_dir / "tokenizer.json").read_text())
    assert tokenizer_json["modalities"] == list(MODALITIES)
    assert tokenizer_json["dims"] == {m: store.dim(m) for m in MODALITIES}
    if method == "kmeans":  # 300 tracks: fewer training rows than 1024 clusters -> clipped
        assert all(rec["final"]["note"] and "clipped" in rec["final"]["note"]
                   for rec in (json.loads((out_dir / m / "checkpoint.json").read_text()) for m in MODALITIES))

    # re-running with the same settings reuses every checkpoint and rebuilds the same token DB
    log_before = (out_dir / "train_log.jsonl").read_text()
    main(argv)
    assert capsys.readouterr().out.count("| reused |") == len(MODALITIES)
    assert (out_dir / "train_log.jsonl").read_text() == log_before
    again = TokenDB.load(out_dir)
    for m in MODALITIES:
        np.testing.assert_array_equal(again.codes[m], db.codes[m])

    # the saved tokenizer encodes the run's embeddings into exactly the saved token DB
    tokenizer = MusicTokenizer.load(out_dir, device="cpu")
    assert tokenizer.modalities == MODALITIES and tokenizer.codebook_sizes == db.codebook_sizes
    rebuilt = tokenizer.encode_store(store, chunk_rows=64)  # chunks smaller than the catalog
    for m in MODALITIES:
        np.testing.assert_array_equal(rebuilt.codes[m], db.codes[m])
    np.testing.assert_array_equal(rebuilt.dedup, db.dedup)
    x = np.asarray(store.load("RI")[store.presence("RI")][:5])
    assert tokenizer.decode("RI", tokenizer.encode("RI", x)).shape == x.shape


def test_changed_settings_retrain_only_that_modality(run_dir, tmp_path, capsys):
    out_dir = tmp_path / "rq"
    base = ["--run_dir", str(run_dir), "--epochs", "1", "--out_dir", str(out_dir), "--device", "cpu"]
    main([*base, "--modalities", "SC,MC"])
    main([*base, "--modalities", "SC,MC,RI"])  # SC, MC reused, RI new
    out = capsys.readouterr().out
    assert "| SC | reused |" in out and "| MC | reused |" in out and "| RI | trained |" in out
    main([*base, "--modalities", "SC", "--seed", "1"])  # a new seed is a new model (and a new split)
    assert "| SC | trained |" in capsys.readouterr().out
    assert TokenDB.load(out_dir).modalities == ("SC",)
    km = ["--run_dir", str(run_dir), "--method", "kmeans", "--out_dir", str(tmp_path / "km"), "--modalities", "RI"]
    main(km)
    main([*km, "--epochs", "7", "--lr", "0.1"])  # settings k-means does not read: its checkpoint is reused
    assert "| RI | reused |" in capsys.readouterr().out


def test_grouped_training_builds_a_token_db_and_reuses_it(run_dir, tmp_path, capsys):
    out_dir = tmp_path / "grouped"
    argv = ["--run_dir", str(run_dir), "--epochs", "3", "--out_dir", str(out_dir), "--device", "cpu",
            "--grouped", "true"]
    main(argv)
    table = capsys.readouterr().out
    assert all(f"| {m} | trained |" in table for m in MODALITIES), table
    store, db = EmbeddingStore(run_dir), TokenDB.load(out_dir)
    assert db.modalities == MODALITIES
    for m in MODALITIES:
        present = store.presence(m)
        assert (db.codes[m][~present] == -1).all() and (db.codes[m][present] >= 0).all()
        record = json.loads((out_dir / m / "checkpoint.json").read_text())
        assert record["grouped"] and record["final"]["epoch"] == 3 and record["final"]["val_recon"] >= 0
    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    assert sorted((r["modality"], r["epoch"]) for r in log) == [(m, e) for m in sorted(MODALITIES) for e in (1, 2, 3)]
    losses = {m: [r["loss"] for r in log if r["modality"] == m] for m in MODALITIES}
    assert all(v[-1] < v[0] for v in losses.values()), losses
    tokenizer = MusicTokenizer.load(out_dir, device="cpu")  # saved like per-modality checkpoints
    np.testing.assert_array_equal(tokenizer.encode_store(store, chunk_rows=64).codes["MC"], db.codes["MC"])

    main(argv)  # same settings: reused
    assert capsys.readouterr().out.count("| reused |") == len(MODALITIES)
    main(argv[:-2])  # per-modality training is a different model: retrained, not the grouped checkpoint
    assert capsys.readouterr().out.count("| trained |") == len(MODALITIES)
    with pytest.raises(ValueError, match="grouped training is for rqvae and vqvae"):
        TrainConfig(run_dir="r", method="kmeans", grouped=True)


def test_grouped_matmul_dtype_auto_is_bf16_on_cuda_only_and_keys_the_checkpoint():
    cpu = TrainConfig(run_dir="r", grouped=True, device="cpu")
    cuda = TrainConfig(run_dir="r", grouped=True, device="cuda")
    assert cpu.matmul_dtype() == "float32" and cuda.matmul_dtype() == "bfloat16"
    # float32 keeps the key of the grouped checkpoints trained before the option; bf16 products are another model
    assert "grouped_matmul_dtype" not in cpu.model_settings()
    assert cuda.model_settings()["grouped_matmul_dtype"] == "bfloat16"
    explicit = TrainConfig(run_dir="r", grouped=True, device="cpu", grouped_matmul_dtype="bfloat16")
    assert explicit.model_settings()["grouped_matmul_dtype"] == "bfloat16"
    assert "grouped_matmul_dtype" not in TrainConfig(run_dir="r", device="cuda").model_settings()  # not grouped


def test_reuse_from_copies_checkpoints_trained_on_the_same_inputs_only(run_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "other" / "run"  # another run of the same catalog whose MC embeddings differ
    shutil.copytree(run_dir, other)
    mc = np.load(other / "embeddings" / "MC.npy")
    mc[0] *= 2
    np.save(other / "embeddings" / "MC.npy", mc)
    base = ["--epochs", "1", "--device", "cpu", "--modalities", "SC,MC,RI"]
    main(["--run_dir", str(run_dir), "--out_dir", str(tmp_path / "a"), *base])
    capsys.readouterr()
    main(["--run_dir", str(other), "--out_dir", str(tmp_path / "b"), "--reuse_from", str(tmp_path / "a"), *base])
    captured = capsys.readouterr()
    assert "| SC | reused |" in captured.out and "| RI | reused |" in captured.out, captured.out
    assert "| MC | trained |" in captured.out and "[MC] not reused from" in captured.err
    assert "other embeddings" in captured.err
    for m in ("SC", "RI"):
        record = json.loads((tmp_path / "b" / m / "checkpoint.json").read_text())
        assert record["reused_from"] == str(tmp_path / "a" / m)
        assert all((tmp_path / "b" / m / f.name).read_bytes() == f.read_bytes()
                   for f in (tmp_path / "a" / m).iterdir() if f.name != "checkpoint.json")
    # the same token database as training the other run from scratch (one-thread training is deterministic)
    main(["--run_dir", str(other), "--out_dir", str(tmp_path / "c"), *base])
    reused, scratch = TokenDB.load(tmp_path / "b"), TokenDB.load(tmp_path / "c")
    for m in ("SC", "MC", "RI"):
        np.testing.assert_array_equal(reused.codes[m], scratch.codes[m])
    # other model settings: nothing is copied
    capsys.readouterr()
    main(["--run_dir", str(other), "--out_dir", str(tmp_path / "d"), "--reuse_from", str(tmp_path / "a"), *base,
          "--lr", "0.01"])
    captured = capsys.readouterr()
    assert captured.out.count("| trained |") == 3 and captured.err.count("other model settings") == 3
