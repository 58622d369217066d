import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen.vectorize.sonic import AudioFeatureVectorizer


def test_standardisation_by_hand(tmp_path):
    rows = [{"audio_features": [1.0, 5.0]}, {"audio_features": [3.0, 5.0]}, {"audio_features": None}]
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("audio_features", pa.list_(pa.float32()))])), path)
    vec = AudioFeatureVectorizer()
    vec.fit(path)
    assert vec.mean.tolist() == [2.0, 5.0] and vec.std.tolist() == [1.0, 1.0]  # constant feature -> std 1
    emb, present = vec.transform(pq.read_table(path).to_batches()[0])
    np.testing.assert_allclose(emb, [[-1, 0], [1, 0], [0, 0]])
    assert present.tolist() == [True, True, False]
    # statistics travel in the state so that new tracks are encoded identically
    again = AudioFeatureVectorizer(vec.state()["mean"], vec.state()["std"])
    np.testing.assert_array_equal(again.transform(pq.read_table(path).to_batches()[0])[0], emb)


def test_no_features_at_all_is_a_clear_error(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"audio_features": pa.array([None], pa.list_(pa.float32()))}), path)
    with pytest.raises(ValueError, match="no track has audio_features"):
        AudioFeatureVectorizer().fit(path)
