import numpy as np
import pyarrow as pa
import pytest

from data_gen.vectorize.release import ReleaseVectorizer, release_vector


def test_full_date_1999_07_14_by_hand():
    vec = release_vector("1999-07-14")
    expected = np.zeros(18, np.float32)
    expected[0] = 89 / 115                                  # (1999 - 1910) / (2025 - 1910)
    expected[1], expected[2] = 0.0, -1.0                    # July: angle 2*pi*6/12 = pi
    expected[3], expected[4] = 0.48530196, -0.87434661      # day 14: angle 2*pi*13/31
    expected[5 + 7] = 1.0                                   # decade bins: pre-1930, 30s, ..., 90s is bin 7
    expected[17] = 1.0                                      # available, not imputed
    np.testing.assert_allclose(vec, expected, atol=1e-6)


def test_year_only_date_leaves_month_and_day_off_the_circle():
    vec = release_vector("1965")
    assert vec[0] == pytest.approx(55 / 115)
    assert vec[1:5].tolist() == [0, 0, 0, 0]
    assert vec[5 + 4] == 1 and vec[5:16].sum() == 1  # 1960s
    assert (vec[16], vec[17]) == (0, 1)
    march = release_vector("1965-03")
    assert march[3:5].tolist() == [0, 0] and march[1] == pytest.approx(np.sin(2 * np.pi * 2 / 12))


@pytest.mark.parametrize("date,decade_bin,year_norm", [
    ("1929-12-31", 0, 19 / 115), ("1930", 1, 20 / 115), ("1899", 0, 0.0), ("2020-01-01", 10, 110 / 115),
    ("2031", 10, 1.0),
])
def test_decade_edges_and_clipping(date, decade_bin, year_norm):
    vec = release_vector(date)
    assert int(np.argmax(vec[5:16])) == decade_bin
    assert vec[0] == pytest.approx(year_norm)


def test_missing_date_is_the_imputation_vector_with_presence_0():
    emb, present = ReleaseVectorizer().transform(pa.RecordBatch.from_pylist(
        [{"release_date": None}, {"release_date": "2001-02-03"}]))
    assert emb.shape == (2, 18) and present.tolist() == [False, True]
    assert emb[0].tolist() == [0.0] * 16 + [1.0, 0.0]
