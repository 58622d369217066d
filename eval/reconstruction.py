"""Reconstruction (3MToken Table 2, Appendix C): tokenizer + embeddings -> MSE and cosine similarity per modality.

    music3m-eval-reconstruction --tokenizer_dir runs/spotify/tokenizers/rqvae [--run_dir runs/spotify]

Test tracks are decoded from their codes and compared with their embeddings; the last row averages the modalities, as
Table 2 does. A tokenizer without a decoder (FusID) gets "n/a" rows. Writes <tokenizer_dir>/eval/reconstruction.json.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import parse_config
from data_gen.vectorize.embeddings import EmbeddingStore
from eval.common import (
    default_out,
    input_record,
    load_test_split,
    markdown_table,
    resolve_run_dir,
    result_header,
    write_json,
)
from tokenizer_ext.token_db import TokenDB


@dataclass
class ReconstructionConfig:
    """Reconstruction MSE and cosine similarity per modality on the test tracks (3MToken Table 2)."""

    tokenizer_dir: str = field(metadata={"help": "tokenizer directory (tokenizer_ext.train)"})
    run_dir: str | None = field(default=None, metadata={
        "help": "run directory with embeddings/ (default: the one recorded in tokenizer.json)"})
    batch_size: int = field(default=8192, metadata={"help": "tracks decoded per batch"})
    out: str | None = field(default=None, metadata={
        "help": "output JSON (default TOKENIZER_DIR/eval/reconstruction.json)"})


class ReconstructionStats:
    """Running sums for MSE (over elements) and mean cosine (over rows), fed batch by batch."""

    def __init__(self):
        self.sq_err = 0.0
        self.elements = 0
        self.cos_sum = 0.0
        self.rows = 0

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        x_hat = np.asarray(x_hat, np.float64)
        if x.shape != x_hat.shape:
            raise ValueError(f"embedding {x.shape} and reconstruction {x_hat.shape} differ in shape")
        self.sq_err += float(((x - x_hat) ** 2).sum())
        self.elements += x.size
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1)
        dots = (x * x_hat).sum(axis=1)
        self.cos_sum += float(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0).sum())
        self.rows += len(x)

    def result(self) -> dict:
        return {"tracks": self.rows, "mse": self.sq_err / self.elements if self.elements else float("nan"),
                "cosine": self.cos_sum / self.rows if self.rows else float("nan")}


def reconstruction_metrics(x: np.ndarray, x_hat: np.ndarray) -> dict:
    """float [n, d] embeddings and reconstructions -> {'tracks', 'mse', 'cosine'} (zero vectors: cosine 0)."""
    stats = ReconstructionStats()
    stats.update(x, x_hat)
    return stats.result()


def run(cfg: ReconstructionConfig) -> dict:
    from tokenizer_ext.tokenizer import MusicTokenizer  # the trained quantizers; only this command needs them

    tokenizer_dir = Path(cfg.tokenizer_dir)
    run_dir = resolve_run_dir(tokenizer_dir, cfg.run_dir)
    if run_dir is None:
        raise ValueError("no run directory: pass --run_dir (tokenizer.json records none that exists)")
    db = TokenDB.load(tokenizer_dir)
    tokenizer = MusicTokenizer.load(tokenizer_dir)
    store = EmbeddingStore(run_dir)
    is_test, split_source = load_test_split(tokenizer_dir, db.track_ids)
    store_row = {t: i for i, t in enumerate(store.track_ids)}
    idx = np.fromiter((store_row.get(t, -1) for t in db.track_ids), dtype=np.int64, count=db.num_tracks)
    joint = getattr(tokenizer, "joint", False)
    rows = []
    for m in (tokenizer.input_modalities if joint else db.modalities):
        if m not in store.modalities():
            continue
        in_store = (idx >= 0) & np.asarray(store.presence(m))[np.maximum(idx, 0)]
        coded = db.presence(db.modalities[0]) if joint else db.presence(m)
        test_rows = np.flatnonzero(is_test & coded & in_store)
        if joint and not tokenizer.can_decode(m):
            rows.append({"modality": m, "tracks": int(len(test_rows)), "mse": None, "cosine": None,
                         "note": f"{db.tokenizer} has no decoder"})
            continue
        emb = store.load(m)
        stats = ReconstructionStats()
        for start in range(0, len(test_rows), cfg.batch_size):
            batch = test_rows[start:start + cfg.batch_size]
            order = np.argsort(idx[batch])  # read the memory map in ascending row order
            batch = batch[order]
            x_hat = (tokenizer.decode_groups({g: db.codes[g][batch] for g in db.modalities}, m) if joint
                     else tokenizer.decode(m, db.codes[m][batch]))
            stats.update(np.asarray(emb[idx[batch]], np.float32), x_hat)
        rows.append({"modality": m, **stats.result()})
    scored = [r for r in rows if r["tracks"] and r["mse"] is not None]
    average = {"modality": "average", "tracks": None,  # modalities cover different tracks: no single count
               "mse": float(np.mean([r["mse"] for r in scored])) if scored else None,
               "cosine": float(np.mean([r["cosine"] for r in scored])) if scored else None}
    return {**result_header("reconstruction", cfg),
            "inputs": {"token_db": input_record(tokenizer_dir / "token_db.parquet")},
            "tokenizer": db.tokenizer, "run_dir": str(run_dir), "test_split": split_source,
            "rows": rows + [average]}


def report_markdown(result: dict) -> str:
    table = markdown_table(["modality", "test tracks", "MSE", "cosine"],
                           [[r["modality"], r["tracks"], "n/a" if r["mse"] is None and r["tracks"] else r["mse"],
                             "n/a" if r["cosine"] is None and r["tracks"] else r["cosine"]] for r in result["rows"]])
    return "\n".join([f"Reconstruction on test tracks ({result['tokenizer']} tokens; split from "
                      f"{result['test_split']}; average = unweighted mean over modalities, as 3MToken Table 2)",
                      "", table])


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ReconstructionConfig, argv)
    result = run(cfg)
    out = write_json(cfg.out or default_out(cfg.tokenizer_dir, "reconstruction"), result)
    print(report_markdown(result))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
