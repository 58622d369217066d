import numpy as np
import pyarrow as pa
import pytest

from data_gen.vectorize.musical import (
    KEY_OFFSET,
    KEY_UNKNOWN,
    TEMPO_IMPUTATION,
    MusicalVectorizer,
    musical_vector,
    tempo_bin,
)


@pytest.mark.parametrize("tempo,expected", [
    (30.0, 0), (120.5, 90), (249.99, 219), (29.9, TEMPO_IMPUTATION), (250.0, TEMPO_IMPUTATION),
    (None, TEMPO_IMPUTATION), (float("nan"), TEMPO_IMPUTATION),
])
def test_tempo_bins(tempo, expected):
    assert tempo_bin(tempo) == expected


def test_key_slots():
    assert KEY_OFFSET == 221 and KEY_UNKNOWN == 245
    c_major = musical_vector(120.0, 0, 1)
    assert c_major.shape == (246,) and c_major.sum() == 2
    assert c_major[90] == 1 and c_major[221] == 1
    a_minor = musical_vector(None, 9, 0)
    assert a_minor[TEMPO_IMPUTATION] == 1 and a_minor[221 + 12 + 9] == 1 and a_minor.sum() == 2
    no_mode = musical_vector(100.0, 2, None)
    assert no_mode[221 + 2] == 0.5 and no_mode[221 + 12 + 2] == 0.5 and no_mode.sum() == 2
    unknown = musical_vector(100.0, None, None)
    assert unknown[KEY_UNKNOWN] == 1


def test_presence_needs_tempo_or_key():
    batch = pa.RecordBatch.from_pylist([
        {"tempo": None, "key": None, "mode": None},
        {"tempo": 20.0, "key": None, "mode": None},
        {"tempo": None, "key": 3, "mode": 1},
    ], schema=pa.schema([("tempo", pa.float64()), ("key", pa.int8()), ("mode", pa.int8())]))
    emb, present = MusicalVectorizer().transform(batch)
    assert present.tolist() == [False, True, True]
    assert emb[0, TEMPO_IMPUTATION] == 1 and emb[0, KEY_UNKNOWN] == 1 and emb[0].sum() == 2
    np.testing.assert_array_equal(emb.sum(1), [2, 2, 2])
