"""K-means baseline: codes/decode shapes, decode = centroid, K clipping, MiniBatchKMeans for large n, save/load."""

import numpy as np

from tokenizer_ext.quantizers.base import QUANTIZERS
from tokenizer_ext.quantizers.kmeans import KMeansQuantizer


def _clusters(n_per=50, k=4, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = 20.0 * rng.standard_normal((k, d)).astype(np.float32)
    label = np.repeat(np.arange(k), n_per)
    return (centers[label] + 0.1 * rng.standard_normal((len(label), d))).astype(np.float32), label


def test_codes_and_decode_is_centroid():
    x, label = _clusters()
    logs = []
    quantizer = KMeansQuantizer(num_clusters=4, seed=0)
    quantizer.fit(x, x[:10], log=logs.append)
    codes = quantizer.encode(x)
    assert codes.shape == (len(x), 1) and codes.dtype == np.int64 and quantizer.codebook_sizes == (4,)
    assert all(len(np.unique(codes[label == c])) == 1 for c in range(4))
    assert len(np.unique(codes)) == 4
    recon = quantizer.decode(codes)
    assert recon.shape == x.shape
    np.testing.assert_array_equal(recon, quantizer.centroids[codes[:, 0]])
    for c in range(4):  # the centroid is the mean of its cluster
        np.testing.assert_allclose(quantizer.centroids[codes[label == c][0, 0]], x[label == c].mean(0), atol=1e-4)
    (record,) = logs
    assert record["dead_codes"] == [0] and record["algorithm"] == "KMeans" and record["note"] is None
    assert record["recon"] < 0.02 and record["loss"] == record["recon"]
    assert record["val_recon"] < 0.02


def test_k_is_clipped_to_distinct_rows():
    x, _ = _clusters(n_per=3, k=3)
    x = np.concatenate([x, x[:2]])  # 11 rows, 9 distinct
    logs = []
    quantizer = KMeansQuantizer(seed=0)  # paper default: 1024 clusters
    assert quantizer.codebook_sizes == (1024,)
    quantizer.fit(x, log=logs.append)
    assert quantizer.codebook_sizes == (9,) and quantizer.centroids.shape == (9, 6)
    assert "clipped from 1024 to 9" in logs[0]["note"]
    np.testing.assert_allclose(quantizer.decode(quantizer.encode(x)), x, atol=1e-6)  # one centroid per row


def test_minibatch_for_large_n_and_save_load(tmp_path):
    x, _ = _clusters(n_per=100, k=8)
    logs = []
    quantizer = KMeansQuantizer(num_clusters=8, seed=1, full_batch_max_rows=100)
    quantizer.fit(x, log=logs.append)
    assert logs[0]["algorithm"] == "MiniBatchKMeans"
    quantizer.save(tmp_path / "km")
    loaded = QUANTIZERS["kmeans"].load(tmp_path / "km")
    assert loaded.codebook_sizes == (8,)
    np.testing.assert_array_equal(loaded.encode(x), quantizer.encode(x))
    np.testing.assert_array_equal(loaded.decode(loaded.encode(x)), quantizer.decode(quantizer.encode(x)))
