"""SC / CLAP: a tiny random CLAP saved to disk, sine-wave WAV files -> embeddings, presence and failures."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from scipy.io import wavfile
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

from data_gen.vectorize.clap import ClapAudioEncoder, ClapVectorizer, load_audio

SR = 48000
DIM = 16


def _sine(freq: float, sr: int, seconds: float) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> str:
    """Randomly initialised CLAP small enough for CPU tests, saved with its feature extractor."""
    # HTSAT constraints: freq_ratio = spec_size // num_mel_bins (= 4); the mel image is spec_size * freq_ratio (128)
    # frames wide, which must be >= the extractor's frames (1 s / hop 480 + 1 = 101); spec_size / patch_stride (8)
    # must be divisible by window_size and by 2 per extra stage; audio hidden_size = patch_embeds_hidden_size * 2.
    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32),
        audio_config=dict(spec_size=32, num_mel_bins=8, window_size=4, patch_size=4, patch_stride=(4, 4),
                          depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=8, hidden_size=16),
        projection_dim=DIM,
    )
    path = tmp_path_factory.mktemp("tiny_clap")
    ClapModel(config).save_pretrained(path)
    ClapFeatureExtractor(feature_size=8, sampling_rate=SR, hop_length=480, max_length_s=1, fft_window_size=512,
                         truncation="rand_trunc").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    low = (0.5 * _sine(440, SR, 1.0)).astype(np.float32)  # float32, 48 kHz mono
    wavfile.write(d / "low.wav", SR, low)
    high = (0.5 * 32767 * _sine(3000, 16000, 1.0)).astype(np.int16)  # int16, 16 kHz stereo
    wavfile.write(d / "high.wav", 16000, np.stack([high, high], axis=1))
    wavfile.write(d / "empty.wav", SR, np.zeros(0, dtype=np.int16))
    return d


@pytest.fixture(scope="module")
def vectorizer(tiny_clap, audio_dir) -> ClapVectorizer:
    return ClapVectorizer(tiny_clap, base_dir=audio_dir, batch_size=2)


def test_load_audio_resamples_and_mixes_to_mono(audio_dir, tmp_path):
    wav = load_audio(audio_dir / "high.wav", SR, 10.0)
    assert wav.dtype == np.float32 and wav.shape == (48000,)
    assert 0.4 < np.abs(wav).max() < 0.6  # int16 normalised to [-1, 1]
    # stereo mixdown: left = sine, right = silence -> half amplitude, one channel
    left = (0.8 * 32767 * _sine(440, 16000, 1.0)).astype(np.int16)
    wavfile.write(tmp_path / "lr.wav", 16000, np.stack([left, np.zeros_like(left)], axis=1))
    mono = load_audio(tmp_path / "lr.wav", 16000, 10.0)
    assert mono.shape == (16000,)
    np.testing.assert_allclose(mono, left / 32768.0 / 2, atol=1e-6)
    assert load_audio(audio_dir / "low.wav", SR, 0.25).shape == (12000,)  # truncation to max_seconds


def test_load_audio_errors_name_the_path(audio_dir, tmp_path):
    for bad in (audio_dir / "missing.wav", audio_dir / "empty.wav"):
        with pytest.raises(ValueError, match=bad.name):
            load_audio(bad, SR, 10.0)
    (tmp_path / "junk.wav").write_bytes(b"not a wav file")
    with pytest.raises(ValueError, match="junk.wav"):
        load_audio(tmp_path / "junk.wav", SR, 10.0)


def test_encoder_shape_norm_determinism(tiny_clap, audio_dir):
    enc = ClapAudioEncoder(tiny_clap, batch_size=2)
    assert enc.dim == DIM and enc.sampling_rate == SR and enc.max_seconds == 1.0  # clamped to the window
    waves = [load_audio(audio_dir / n, SR, 10.0) for n in ("low.wav", "high.wav", "low.wav")]
    a, b = enc.encode(waves), enc.encode(waves)
    assert a.shape == (3, DIM) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0], a[2], atol=1e-6)  # same audio, different batch -> same embedding
    assert np.abs(a[0] - a[1]).max() > 1e-3  # different sines -> different embeddings
    assert enc.encode([]).shape == (0, DIM)


def test_vectorizer_presence_and_failures(vectorizer, audio_dir):
    vectorizer.failures.clear()
    batch = pa.RecordBatch.from_pylist([
        {"track_id": "t0", "audio_path": "low.wav"},
        {"track_id": "t1", "audio_path": "missing.wav"},
        {"track_id": "t2", "audio_path": ""},
        {"track_id": "t3", "audio_path": str(audio_dir / "high.wav")},  # absolute path
        {"track_id": "t4", "audio_path": None},  # no audio: absent, not a failure
    ])
    emb, present = vectorizer.transform(batch)
    assert emb.shape == (5, DIM) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert present.tolist() == [True, False, False, True, False]
    assert not emb[~present].any()
    alone = vectorizer.transform(pa.RecordBatch.from_pylist(
        [{"track_id": "t0", "audio_path": "low.wav"}, {"track_id": "t3", "audio_path": "high.wav"}]))[0]
    np.testing.assert_allclose(emb[[0, 3]], alone, atol=1e-6)
    assert [f["track_id"] for f in vectorizer.failures] == ["t1", "t2"]
    assert vectorizer.failures[0]["path"] == str(audio_dir / "missing.wav")
    assert "missing.wav" in vectorizer.failures[0]["reason"]
    assert vectorizer.failures[1]["reason"] == "empty audio_path"
    state = vectorizer.state()
    assert state["model"] and state["dim"] == DIM and state["sampling_rate"] == SR and state["num_failures"] == 2


def test_vectorizer_without_track_id_column(vectorizer):
    vectorizer.failures.clear()
    emb, present = vectorizer.transform(pa.RecordBatch.from_pylist([{"audio_path": "nope.wav"}]))
    assert emb.shape == (1, DIM) and present.tolist() == [False]
    assert set(vectorizer.failures[0]) == {"path", "reason"}


def test_vectorize_stage_uses_clap_for_audio_paths(tiny_clap, audio_dir, tmp_path):
    """A catalog with audio paths goes through the CLAP tower in the vectorize stage; failures are written down."""
    import json

    from data_gen.catalog.ingest import IngestConfig
    from data_gen.catalog.ingest import run as ingest_run
    from data_gen.vectorize.embeddings import EmbeddingStore
    from data_gen.vectorize.run import VectorizeConfig
    from data_gen.vectorize.run import run as vectorize_run

    rows = [{"track_id": "a", "audio_path": "low.wav"}, {"track_id": "b", "audio_path": "high.wav"},
            {"track_id": "c", "audio_path": "missing.wav"}, {"track_id": "d"}]
    cat = audio_dir / "catalog.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    ingest_run(IngestConfig(run_dir=str(run_dir), source="catalog", input=str(cat)))
    summary = vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="SC", clap_model=tiny_clap,
                                            device="cpu"))
    assert summary["modalities"]["SC"] == {"status": "done", "dim": DIM, "present": 2, "absent": 2}
    store = EmbeddingStore(run_dir)
    assert store.presence("SC").tolist() == [True, True, False, False]
    expected = ClapAudioEncoder(tiny_clap).encode([load_audio(audio_dir / "low.wav", SR, 1.0)])
    np.testing.assert_allclose(store.load("SC")[0], expected[0], atol=1e-5)
    failures = [json.loads(x) for x in (run_dir / "embeddings" / "SC.failures.jsonl").read_text().splitlines()]
    assert [f["track_id"] for f in failures] == ["c"] and "missing.wav" in failures[0]["reason"]
    assert store.info("SC")["failures"] == 1
