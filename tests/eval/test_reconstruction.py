import numpy as np
import pytest

from eval.reconstruction import ReconstructionConfig, ReconstructionStats, reconstruction_metrics, run
from tests.eval.helpers import write_store

train = pytest.importorskip("tokenizer_ext.train")  # the trained tokenizers come from stage 2


def test_metrics_by_hand():
    out = reconstruction_metrics(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert out == {"tracks": 2, "mse": 0.25, "cosine": 1.0}  # squared errors 0, 0, 0, 1 over 4 elements
    out = reconstruction_metrics(np.array([[1.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 1.0], [0.0, 0.0]]))
    assert out["mse"] == pytest.approx((1 + 1 + 9 + 16) / 4)
    assert out["cosine"] == 0.0  # orthogonal, and a zero reconstruction counts as cosine 0
    with pytest.raises(ValueError, match="shape"):
        reconstruction_metrics(np.zeros((2, 3)), np.zeros((2, 4)))


def test_streamed_batches_equal_one_pass():
    rng = np.random.default_rng(0)
    x, x_hat = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    stats = ReconstructionStats()
    for start in range(0, 50, 7):
        stats.update(x[start:start + 7], x_hat[start:start + 7])
    one = reconstruction_metrics(x, x_hat)
    streamed = stats.result()
    assert streamed["mse"] == pytest.approx(one["mse"]) and streamed["cosine"] == pytest.approx(one["cosine"])
    cos = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(x, x_hat)])
    assert one["cosine"] == pytest.approx(cos) and one["mse"] == pytest.approx(np.mean((x - x_hat) ** 2))


def _run_dir(tmp_path, n=120):
    """BM: three distinct vectors repeated (k-means with K = 3 recovers them exactly); SC: noise, 1/4 missing."""
    rng = np.random.default_rng(1)
    ids = [f"t{i:03d}" for i in range(n)]
    bm = np.eye(5)[np.arange(n) % 3] * 2 + 0.5
    sc = rng.normal(size=(n, 4))
    sc_present = np.arange(n) % 4 != 0
    sc[~sc_present] = 0.0
    return write_store(tmp_path / "run", ids, {"BM": (bm, np.ones(n, bool)), "SC": (sc, sc_present)}), sc_present


def test_kmeans_tokenizer_reconstructs_exact_centroids(tmp_path):
    run_dir, sc_present = _run_dir(tmp_path)
    train.run(train.TrainConfig(run_dir=str(run_dir), method="kmeans", codebook_sizes=(3,), modalities="BM,SC"))
    tok = run_dir / "tokenizers" / "kmeans"
    result = run(ReconstructionConfig(tokenizer_dir=str(tok)))  # run dir found through the tokenizer's manifest
    rows = {r["modality"]: r for r in result["rows"]}
    test = np.array([t.strip() for t in (tok / "test_tracks.txt").read_text().splitlines()])
    test_rows = np.array([int(t[1:]) for t in test])
    assert rows["BM"]["tracks"] == len(test_rows)
    assert rows["BM"]["mse"] == pytest.approx(0.0, abs=1e-10) and rows["BM"]["cosine"] == pytest.approx(1.0)
    assert rows["SC"]["tracks"] == int(sc_present[test_rows].sum())  # only test tracks that have SC
    assert rows["average"]["mse"] == pytest.approx((rows["BM"]["mse"] + rows["SC"]["mse"]) / 2)
    assert rows["average"]["cosine"] == pytest.approx((rows["BM"]["cosine"] + rows["SC"]["cosine"]) / 2)


def test_rqvae_numbers_equal_decoding_by_hand(tmp_path):
    from data_gen.vectorize.embeddings import EmbeddingStore
    from tokenizer_ext.token_db import TokenDB
    from tokenizer_ext.tokenizer import MusicTokenizer

    run_dir, _ = _run_dir(tmp_path)
    train.run(train.TrainConfig(run_dir=str(run_dir), method="rqvae", modalities="SC", d_z=4, hidden_dims=(16,),
                                codebook_sizes=(4, 2), epochs=2, batch_size=32, device="cpu"))
    tok_dir = run_dir / "tokenizers" / "rqvae"
    result = run(ReconstructionConfig(tokenizer_dir=str(tok_dir), run_dir=str(run_dir), batch_size=7))
    sc = result["rows"][0]
    db, tokenizer, store = TokenDB.load(tok_dir), MusicTokenizer.load(tok_dir), EmbeddingStore(run_dir)
    test = set((tok_dir / "test_tracks.txt").read_text().split())
    rows = [i for i, t in enumerate(db.track_ids) if t in test and db.presence("SC")[i]]
    expected = reconstruction_metrics(np.asarray(store.load("SC")[rows]), tokenizer.decode("SC", db.codes["SC"][rows]))
    assert sc["modality"] == "SC" and sc["tracks"] == len(rows) > 0
    assert sc["mse"] == pytest.approx(expected["mse"], rel=1e-5)
    assert sc["cosine"] == pytest.approx(expected["cosine"], rel=1e-5)
