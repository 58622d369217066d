"""RQ-KMeans, PSRQ (per modality and modal-joint), FusID and MusicRec shared-specific RQ on tiny inputs: shapes,
losses, encode/decode, save/load identity, token strings of the joint groups, and the ID-quality identities."""

import numpy as np
import pytest
import torch

from data_gen.catalog.playlists import Playlist
from eval.id_quality import id_quality
from tokenizer_ext.quantizers.base import JOINT_QUANTIZERS, QUANTIZERS
from tokenizer_ext.quantizers.fusid import (
    FusIDQuantizer,
    contrastive_loss,
    covariance_loss,
    sample_pairs,
    variance_loss,
)
from tokenizer_ext.quantizers.joint import JointFeatures, cooccurrence_pairs
from tokenizer_ext.quantizers.musicrec import MusicRecQuantizer, info_nce, relation_loss
from tokenizer_ext.quantizers.psrq import PSRQJointQuantizer, PSRQQuantizer, RQKMeansQuantizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import GROUP_NAMES, MISSING, codes_to_tokens, parse_token, tokens_to_codes

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


def _blobs(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, d)) * 3
    return (centers[rng.integers(0, 4, n)] + rng.normal(size=(n, d)) * 0.3).astype(np.float32)


def _joint_inputs(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = {"BM": rng.normal(size=(n, 8)).astype(np.float32), "RI": rng.normal(size=(n, 3)).astype(np.float32),
         "TC": rng.normal(size=(n, 4)).astype(np.float32)}
    present = {"BM": np.ones(n, bool), "RI": np.ones(n, bool), "TC": rng.random(n) > 0.3}
    present["BM"][:3] = False
    return x, present


def test_registries():
    assert {"rqkmeans", "psrq"} <= set(QUANTIZERS)
    assert {"psrq_joint", "fusid", "musicrec"} <= set(JOINT_QUANTIZERS)


@pytest.mark.parametrize("cls", [RQKMeansQuantizer, PSRQQuantizer])
def test_residual_kmeans_shapes_decode_and_save_load(cls, tmp_path):
    x = _blobs()
    q = cls(codebook_sizes=(4, 3, 2), seed=0)
    logs = []
    q.fit(x, x[:10], log=logs.append)
    codes = q.encode(x)
    assert codes.shape == (len(x), 3) and codes.dtype == np.int64
    assert q.codebook_sizes == (4, 3, 2) and (codes < np.array([4, 3, 2])).all()
    x_hat = q.decode(codes)
    assert x_hat.shape == x.shape
    # each extra level can only help on the training rows (level 1 alone = its centroids)
    level1 = q.levels[0].centroids[codes[:, 0], :x.shape[1]]
    assert np.mean((x_hat - x) ** 2) <= np.mean((level1 - x) ** 2) + 1e-6
    assert logs[0]["recon"] == pytest.approx(float(np.mean((x_hat - x) ** 2)), rel=1e-5)
    q.save(tmp_path / "q")
    loaded = cls.load(tmp_path / "q")
    assert np.array_equal(loaded.encode(x), codes) and np.allclose(loaded.decode(codes), x_hat)


def test_psrq_levels_cluster_residual_and_original():
    x = _blobs()
    q = PSRQQuantizer(codebook_sizes=(4, 3), seed=0)
    q.fit(x)
    assert q.levels[1].centroids.shape == (3, 2 * x.shape[1])  # [residual ; original] centroids
    rq = RQKMeansQuantizer(codebook_sizes=(4, 3), seed=0)
    rq.fit(x)
    assert rq.levels[1].centroids.shape == (3, x.shape[1])
    codes = q.encode(x)
    by_hand = sum(km.centroids[codes[:, i], :x.shape[1]] for i, km in enumerate(q.levels))
    assert np.allclose(q.decode(codes), by_hand)  # x_hat = sum of the residual halves


def test_joint_features_standardise_and_zero_fill():
    x, present = _joint_inputs()
    f = JointFeatures({m: v.shape[1] for m, v in x.items()}).fit(x, present)
    out = f.transform(x, present)
    assert out.shape == (80, 15) and f.flags(present).shape == (80, 3)
    assert np.all(out[~present["TC"]][:, f.slices()["TC"]] == 0)
    bm = out[present["BM"]][:, f.slices()["BM"]]
    assert np.allclose((bm ** 2).sum(axis=1).mean(), 1.0, atol=1e-4)  # each modality weighs 1 on average
    assert np.allclose(f.inverse_block("RI", f.transform_block("RI", x["RI"])), x["RI"], atol=1e-5)


def test_cooccurrence_pairs_by_hand():
    playlists = [Playlist("p1", "", ["a", "b", "c"]), Playlist("p2", "", ["a", "b", "z"]), Playlist("p3", "", ["d"])]
    pairs, scores = cooccurrence_pairs(playlists, {"a": 0, "b": 1, "c": 2, "d": 3}, 4)
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    # a, b share 2 playlists, each in 2: 2 / sqrt(2 * 2) = 1; a, c share 1: 1 / sqrt(2 * 1)
    assert np.allclose(scores, [1.0, 1 / np.sqrt(2), 1 / np.sqrt(2)])


def test_fusid_losses_on_tiny_inputs():
    e = torch.zeros(4, 2, 3)
    assert float(contrastive_loss(e, e, torch.ones(4))) == 0.0  # positives at distance 0
    assert float(contrastive_loss(e, e, torch.zeros(4))) == 1.0  # negatives want distance 1
    assert float(variance_loss(e, 1.0, eps=0.0)) == 1.0  # collapsed features: hinge at gamma
    g = torch.Generator().manual_seed(0)
    same = torch.randn(64, 1, 3, generator=g).repeat(1, 2, 1)  # e_1 == e_2: maximal cross-covariance
    indep = torch.randn(64, 2, 3, generator=g)
    assert float(covariance_loss(same)) > 5 * float(covariance_loss(indep))
    assert float(covariance_loss(torch.randn(8, 1, 3))) == 0.0  # one sub-embedding: no pairs


def test_fusid_negative_pairs_never_cooccur():
    pairs = np.array([[0, 1], [0, 2], [3, 4]])
    sampled, y = sample_pairs(pairs, np.ones(3, np.float32), 6, 200, np.random.default_rng(0))
    known = {tuple(p) for p in pairs.tolist()}
    assert len(sampled) == 200 and y.sum() == 100
    assert all(tuple(p) in known for p in sampled[y == 1].tolist())
    assert not any(tuple(p) in known for p in sampled[y == 0].tolist())
    assert (sampled[:, 0] < sampled[:, 1]).all()


def test_fusid_fit_encode_save_load(tmp_path):
    x, present = _joint_inputs()
    pairs = np.array([[i, i + 1] for i in range(0, 78, 2)])
    q = FusIDQuantizer(codebook_sizes=(4, 4, 4), sub_embedding_dim=8, fusion_hidden_dim=16, batch_size=16, epochs=2,
                       device="cpu")
    logs = []
    q.fit(x, present, pairs, log=logs.append)
    assert [r["epoch"] for r in logs] == [1, 2, "pq"]
    assert {"contrastive", "covariance", "variance"} <= set(logs[0])
    codes = q.encode(x, present)["FU"]
    assert codes.shape == (80, 3) and codes.min() >= 0 and codes.max() < 4
    assert q.embed(x, present).shape == (80, 3, 8)
    with pytest.raises(NotImplementedError):
        q.decode({"FU": codes}, "BM")
    q.save(tmp_path / "f")
    loaded = FusIDQuantizer.load(tmp_path / "f")
    assert np.array_equal(loaded.encode(x, present)["FU"], codes)
    none = {m: np.zeros(80, bool) for m in present}
    assert (q.encode(x, none)["FU"] == MISSING).all()  # no modality at all: no joint code


def test_musicrec_losses_and_round_trip(tmp_path):
    a = torch.eye(4)
    assert float(relation_loss(a, a)) == 0.0
    assert float(info_nce(a, a, 0.01)) < 1e-3 < float(info_nce(a, a.flip(0), 0.01))
    x, present = _joint_inputs()
    q = MusicRecQuantizer(codebook_sizes=(4, 4, 3), shared_levels=1, d_z=4, hidden_dims=(8,), batch_size=32,
                          epochs=3, kmeans_init_iters=2, device="cpu")
    logs = []
    q.fit(x, present, log=logs.append)
    assert len(logs) == 3 and logs[0]["align"] > 0 and logs[0]["relation"] > 0
    assert q.codebook_sizes == {"SH": (4,), "BM": (4, 3), "RI": (4, 3), "TC": (4, 3)}
    codes = q.encode(x, present)
    assert codes["SH"].shape == (80, 1) and (codes["SH"] >= 0).all()
    assert codes["TC"].shape == (80, 2) and np.array_equal(codes["TC"][:, 0] == MISSING, ~present["TC"])
    assert np.array_equal(codes["BM"][:, 0] == MISSING, ~present["BM"])
    rows = np.flatnonzero(present["RI"])
    x_hat = q.decode({g: c[rows] for g, c in codes.items()}, "RI")
    assert x_hat.shape == (len(rows), 3) and np.isfinite(x_hat).all()
    q.save(tmp_path / "m")
    loaded = MusicRecQuantizer.load(tmp_path / "m", device="cpu")
    again = loaded.encode(x, present)
    assert all(np.array_equal(again[g], codes[g]) for g in codes)
    assert np.allclose(loaded.decode({g: c[rows] for g, c in codes.items()}, "RI"), x_hat, atol=1e-6)


def test_musicrec_without_collaborative_losses():
    x, present = _joint_inputs()
    q = MusicRecQuantizer(codebook_sizes=(4, 3), shared_levels=1, d_z=4, hidden_dims=(8,), batch_size=40, epochs=1,
                          kmeans_init_iters=1, align_modality="", device="cpu")
    logs = []
    q.fit(x, present, log=logs.append)
    assert logs[0]["align"] == 0.0 and logs[0]["relation"] == 0.0 and q.align_head is None


def test_psrq_joint_round_trip(tmp_path):
    x, present = _joint_inputs()
    q = PSRQJointQuantizer(codebook_sizes=(4, 3))
    q.fit(x, present)
    codes = q.encode(x, present)
    assert set(codes) == {"MJ"} and codes["MJ"].shape == (80, 2)
    assert q.decode(codes, "BM").shape == (80, 8)
    q.save(tmp_path / "p")
    assert np.array_equal(PSRQJointQuantizer.load(tmp_path / "p").encode(x, present)["MJ"], codes["MJ"])


def test_joint_group_tokens_round_trip():
    assert GROUP_NAMES[:3] == ("SH", "MJ", "FU") and GROUP_NAMES[3] == "AC"
    assert parse_token("<FU3-17>") == ("FU", 3, 17) and parse_token("<SH-none>") == ("SH", None, None)
    codes = {"TC": [1, 2], "SH": [5, 6], "BM": [-1, -1]}
    toks = codes_to_tokens(codes, dedup=0)
    assert toks[1:3] == ["<SH1-5>", "<SH2-6>"] and "<BM-none>" in toks  # SH before every modality
    assert tokens_to_codes(toks, {"SH": 2, "BM": 2, "TC": 2}) == (codes, 0)
    with pytest.raises(ValueError):
        tokens_to_codes(["<TC1-1>", "<TC2-2>", "<SH1-5>", "<SH2-6>"], {"SH": 2, "TC": 2})


def test_joint_token_db_and_id_quality_identities(tmp_path):
    n = 50
    rng = np.random.default_rng(0)
    codes = {"FU": rng.integers(0, 3, size=(n, 2)).astype(np.int32)}
    db = TokenDB([f"t{i}" for i in range(n)], {"FU": (3, 3)}, codes, tokenizer="fusid")
    assert db.modalities == ("FU",) and db.tokens(0)[1].startswith("<FU1-")
    db.save(tmp_path)
    loaded = TokenDB.load(tmp_path)
    assert loaded.modalities == ("FU",) and np.array_equal(loaded.codes["FU"], codes["FU"])
    assert "<FU2-2>" in loaded.vocabulary()
    result = id_quality(loaded, np.arange(n) % 5 == 0)
    for row in result["ids"]:
        assert row["identity_holds"]
        assert row["tracks"] == row["cardinality"] + row["tracks_in_conflict"] - row["conflict_groups"]
    assert [r["conflict_rate"] for r in result["ids"] if r["disambiguation"]] == [0.0, 0.0, 0.0]
