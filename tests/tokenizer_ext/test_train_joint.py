"""The training command for the joint methods (PSRQ modal-joint, FusID, MusicRec) and the per-modality RQ-KMeans /
PSRQ on a small demo run: token database with joint groups, checkpoint reuse, training playlists only."""

import json
from pathlib import Path

import numpy as np
import pytest

from common.config import parse_config
from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.catalog.playlists import read_playlists
from data_gen.vectorize.run import VectorizeConfig
from data_gen.vectorize.run import run as vectorize_run
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokenizer import JointTokenizer, MusicTokenizer
from tokenizer_ext.train import TrainConfig, main, run

REPO = Path(__file__).resolve().parents[2]
MODALITIES = ("SC", "MC", "RI")

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("joint") / "run"
    ingest_run(IngestConfig(run_dir=str(run_dir), source="demo", num_tracks=200))
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities=",".join(MODALITIES)))
    ids = sorted(p.playlist_id for p in read_playlists(run_dir / "playlists.jsonl"))
    (run_dir / "splits").mkdir()
    (run_dir / "splits" / "playlists_train.txt").write_text("".join(f"{p}\n" for p in ids[: len(ids) // 2]))
    return run_dir


@pytest.mark.parametrize("method,sizes", [("rqkmeans", (32, 64, 128)), ("psrq", (128, 128, 128)),
                                          ("psrq_joint", (128, 128, 128)), ("fusid", (1024,) * 5),
                                          ("musicrec", (256,) * 4)])
def test_recipes(method, sizes):
    cfg = parse_config(TrainConfig, ["--config", str(REPO / f"recipes/tokenizers/{method}.yaml"), "--run_dir", "r"])
    assert cfg.method == method and cfg.codebook_sizes == sizes
    if method == "fusid":
        assert (cfg.sub_embedding_dim, cfg.fusion_hidden_dim, cfg.reg_weight, cfg.lr, cfg.batch_size) == \
            (128, 2048, 0.2, 5e-4, 128)
    if method == "musicrec":
        assert (cfg.shared_levels, cfg.d_z, cfg.align_weight, cfg.relation_weight) == (2, 32, 1e-2, 1e-4)


def test_new_fields_keep_old_checkpoint_keys():
    old = TrainConfig(run_dir="r", method="rqvae").model_settings()
    assert not {"reg_weight", "shared_levels", "train_playlists"} & set(old)
    assert set(TrainConfig(run_dir="r", method="psrq").model_settings()) == \
        {"method", "codebook_sizes", "test_fraction", "seed", "kmeans_full_batch_max_rows"}


@pytest.mark.parametrize("method,extra,groups", [
    ("rqkmeans", ["--codebook_sizes", "4", "3"], MODALITIES),
    ("psrq", ["--codebook_sizes", "4", "3"], MODALITIES),
    ("psrq_joint", ["--codebook_sizes", "8", "4"], ("MJ",)),
    ("fusid", ["--codebook_sizes", "8", "8", "8", "--sub_embedding_dim", "8", "--fusion_hidden_dim", "16",
               "--epochs", "1"], ("FU",)),
    ("musicrec", ["--codebook_sizes", "8", "4", "4", "--shared_levels", "1", "--d_z", "4", "--hidden_dims", "8",
                  "--epochs", "1", "--kmeans_init_iters", "2"], ("SH", *MODALITIES)),
])
def test_train_joint_end_to_end(run_dir, tmp_path, method, extra, groups, capsys):
    out_dir = tmp_path / method
    argv = ["--run_dir", str(run_dir), "--method", method, "--out_dir", str(out_dir), "--device", "cpu", *extra]
    main(argv)
    assert "conflict rate" in capsys.readouterr().out
    db = TokenDB.load(out_dir)
    assert db.modalities == groups and db.num_tracks == 200 and db.dedup is not None
    assert db.conflict_stats()["conflict_rate"] == 0.0
    assert db.tokens(0)[1].startswith(f"<{groups[0]}1-")
    tokenizer = MusicTokenizer.load(out_dir)
    assert isinstance(tokenizer, JointTokenizer) == (method in ("psrq_joint", "fusid", "musicrec"))
    again = run(parse_config(TrainConfig, argv))  # unchanged settings and inputs: the checkpoint is reused
    if isinstance(tokenizer, JointTokenizer):
        assert again["joint"]["status"] == "reused"
    else:
        assert {s["status"] for s in again["modalities"].values()} == {"reused"}
    assert all(np.array_equal(TokenDB.load(out_dir).codes[g], db.codes[g]) for g in groups)


def test_fusid_pairs_come_from_training_playlists_only(run_dir, tmp_path):
    argv = ["--run_dir", str(run_dir), "--method", "fusid", "--out_dir", str(tmp_path / "f"), "--device", "cpu",
            "--codebook_sizes", "4", "4", "--sub_embedding_dim", "4", "--fusion_hidden_dim", "8", "--epochs", "1"]
    summary = run(parse_config(TrainConfig, argv))
    total = len(read_playlists(run_dir / "playlists.jsonl"))
    pairs = summary["joint"]["pairs"]
    assert pairs["used"] == total // 2 and pairs["left_out"] == total - total // 2
    with pytest.raises(FileNotFoundError, match="training playlists"):
        run(parse_config(TrainConfig, argv + ["--train_playlists", str(tmp_path / "missing.txt"), "--overwrite"]))
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["counts"]["joint"]["pairs"]["pairs"] > 0
