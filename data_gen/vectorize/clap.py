"""SC: audio file paths -> L2-normalised CLAP audio embeddings (float32 [n, projection_dim]) and presence.

The audio tower of a transformers `ClapModel` ("laion/clap-htsat-unfused" in production, 512-d; any directory saved
with `save_pretrained` that also holds the `ClapFeatureExtractor` config works). Audio is read as mono, resampled
to the extractor's rate (48 kHz) and cut to `max_seconds`. A track without a path is simply absent; a path that
is blank or cannot be read gives presence 0, a zero row, and an entry in `failures` (never a crash, never a fake).
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from data_gen.vectorize.base import Vectorizer

DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"


def _read(path: Path) -> tuple[np.ndarray, int]:
    """File -> (samples [frames, channels] float in [-1, 1], sample rate)."""
    try:
        import soundfile  # optional: reads FLAC / OGG / ... as well as WAV
    except ImportError:
        soundfile = None
    if soundfile is not None:
        try:
            data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
            return data, int(sr)
        except Exception:
            pass  # fall back to scipy (plain WAV)
    from scipy.io import wavfile

    sr, data = wavfile.read(str(path))
    if data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):  # int16 / int32 (24-bit WAV arrives left-justified in int32)
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    else:
        data = data.astype(np.float32)
    return (data[:, None] if data.ndim == 1 else data), int(sr)


def load_audio(path: str | Path, target_sr: int, max_seconds: float) -> np.ndarray:
    """Audio file -> float32 mono waveform at `target_sr`, at most `max_seconds` long. ValueError if unusable."""
    try:
        data, sr = _read(Path(path))
    except Exception as err:
        raise ValueError(f"{path}: cannot read audio ({type(err).__name__}: {err})") from None
    if data.size == 0 or sr <= 0:
        raise ValueError(f"{path}: empty audio")
    wav = data[: int(np.ceil(max_seconds * sr)), :].mean(axis=1)  # [frames]: cut first (cheaper), then mix down
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"{path}: audio contains NaN or infinite samples")
    if sr != target_sr:
        from scipy.signal import resample_poly

        g = gcd(int(target_sr), sr)
        wav = resample_poly(wav, int(target_sr) // g, sr // g)
    return np.asarray(wav[: int(max_seconds * target_sr)], dtype=np.float32)


class ClapAudioEncoder:
    """Waveforms (mono, at `sampling_rate`) -> unit-norm CLAP audio embeddings [n, dim]."""

    def __init__(self, model_name_or_path: str = DEFAULT_CLAP_MODEL, device: str = "cpu", batch_size: int = 16,
                 max_seconds: float = 10.0):
        from transformers import ClapFeatureExtractor, ClapModel  # deferred: slow to import

        self.model_name = str(model_name_or_path)
        self.device = device
        self.batch_size = batch_size
        self.model = ClapModel.from_pretrained(self.model_name).to(device).eval()
        self.feature_extractor = ClapFeatureExtractor.from_pretrained(self.model_name)
        self.sampling_rate = int(self.feature_extractor.sampling_rate)
        # Never longer than the extractor's window: longer clips would be cropped at random (non-deterministic).
        self.max_seconds = min(float(max_seconds), self.feature_extractor.nb_max_samples / self.sampling_rate)
        self.fused = bool(self.model.config.audio_config.enable_fusion)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def encode(self, waveforms: list[np.ndarray]) -> np.ndarray:
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.no_grad():
            for start in range(0, len(waveforms), self.batch_size):
                chunk = [np.asarray(w, dtype=np.float32)[: int(self.max_seconds * self.sampling_rate)]
                         for w in waveforms[start:start + self.batch_size]]
                inputs = self.feature_extractor(chunk, sampling_rate=self.sampling_rate, return_tensors="pt",
                                                truncation="fusion" if self.fused else "rand_trunc")
                # Clips fit the window, so none is "longer"; the extractor would flag one at random in fusion mode.
                is_longer = torch.zeros_like(inputs["is_longer"], dtype=torch.bool)
                feats = self.model.get_audio_features(input_features=inputs["input_features"].to(self.device),
                                                      is_longer=is_longer.to(self.device))
                if not isinstance(feats, torch.Tensor):  # transformers >= 5: a model output; older: the tensor
                    feats = feats.pooler_output
                feats = torch.nn.functional.normalize(feats.float(), dim=-1)  # [b, dim]
                out.append(feats.cpu().numpy().astype(np.float32))
        return np.concatenate(out)


class ClapVectorizer(Vectorizer):
    modality = "SC"
    columns = ("audio_path",)

    def __init__(self, model_name_or_path: str = DEFAULT_CLAP_MODEL, base_dir: str | Path | None = None,
                 device: str = "cpu", batch_size: int = 16, max_seconds: float = 10.0):
        self.encoder = ClapAudioEncoder(model_name_or_path, device=device, batch_size=batch_size,
                                        max_seconds=max_seconds)
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.failures: list[dict] = []

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return self.base_dir / p if self.base_dir is not None and not p.is_absolute() else p

    def transform(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        paths = batch.column("audio_path").to_pylist()
        ids = batch.column("track_id").to_pylist() if "track_id" in batch.schema.names else None
        emb = np.zeros((len(paths), self.dim), dtype=np.float32)
        present = np.zeros(len(paths), dtype=bool)
        enc = self.encoder
        for start in range(0, len(paths), enc.batch_size):  # load only one encoder batch of audio at a time
            rows, waves = [], []
            for i in range(start, min(start + enc.batch_size, len(paths))):
                if paths[i] is None:
                    continue  # no audio for this track: absent, not a failure
                failure = {"track_id": ids[i]} if ids is not None else {}
                if not str(paths[i]).strip():
                    self.failures.append({**failure, "path": paths[i], "reason": "empty audio_path"})
                    continue
                path = self._resolve(str(paths[i]).strip())
                try:
                    waves.append(load_audio(path, enc.sampling_rate, enc.max_seconds))
                    rows.append(i)
                except ValueError as err:
                    self.failures.append({**failure, "path": str(path), "reason": str(err)})
            if rows:
                emb[rows] = enc.encode(waves)
                present[rows] = True
        return emb, present

    def state(self) -> dict:
        return {"encoder": "clap", "model": self.encoder.model_name, "dim": self.dim,
                "sampling_rate": self.encoder.sampling_rate, "max_seconds": self.encoder.max_seconds,
                "num_failures": len(self.failures)}
