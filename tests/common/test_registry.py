import pytest

from common.registry import MC_DIM, MODALITIES, MODALITY_NAMES, RI_DIM, get_modality, modality_index, parse_modalities


def test_order_and_defaults_follow_the_paper():
    assert MODALITY_NAMES == ("AC", "BM", "ST", "SC", "MC", "RI", "SF", "AB", "TC")
    assert all(m.codebook_sizes == (32, 64, 128) for m in MODALITIES)
    assert sum(m.num_tokens for m in MODALITIES) == 9 * 224 == 2016
    assert [m.paper_dim for m in MODALITIES] == [4096, 4096, 4096, 128, 247, 18, 4096, 4096, 128]
    assert RI_DIM == 18 and MC_DIM == 220 + 1 + 25


def test_lookup_and_parsing():
    assert get_modality("sc").title == "Sonic Characteristics"
    assert modality_index("TC") == 8
    assert parse_modalities("tc, AC,bm") == ("AC", "BM", "TC")
    assert parse_modalities(None) == MODALITY_NAMES == parse_modalities("all")
    with pytest.raises(KeyError, match="unknown modality 'XX'"):
        parse_modalities("BM,XX")
