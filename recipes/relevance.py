"""The modality-relevance model of 3MTokenRec: a user query -> nine relevance scores in [0, 10] (AC ... TC).

    music3m-relevance --dr runs/spotify/dr/dr.jsonl --out_dir runs/spotify/relevance

A sentence-transformers encoder with a linear head (sigmoid scaled to [0, 10]), trained with MSE on D_r; train/test
follow D_r's `split` column. The report gives MAE and the accuracy of the rounded score on the held-out part.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.config import parse_config
from common.records import read_records
from common.registry import MODALITY_NAMES
from data_gen.vectorize.text import resolve_encoder_path

MAX_SCORE = 10.0


def read_dr(path: str | Path) -> list[dict]:
    """D_r JSONL/parquet -> rows with `query`, `split` and the nine integer scores (bad rows raise, naming the row)."""
    rows = read_records(path)
    for i, row in enumerate(rows, start=1):
        if not isinstance(row.get("query"), str) or not row["query"].strip():
            raise ValueError(f"{path}: row {i}: field 'query' missing or empty")
        for m in MODALITY_NAMES:
            v = row.get(m)
            if not isinstance(v, (int, float)) or not 0 <= v <= MAX_SCORE:
                raise ValueError(f"{path}: row {i}: field '{m}': expected a score in 0..10, got {v!r}")
    return rows


class RelevanceModel(nn.Module):
    """Sentence encoder + linear head: texts -> float [n, 9] scores in [0, 10]."""

    def __init__(self, encoder_name_or_path: str = "all-MiniLM-L6-v2", device: str = "cpu"):
        super().__init__()
        from sentence_transformers import SentenceTransformer

        self.encoder_name = encoder_name_or_path
        self.encoder = SentenceTransformer(resolve_encoder_path(encoder_name_or_path), device=device)
        dim = self.encoder.get_embedding_dimension() if hasattr(self.encoder, "get_embedding_dimension") \
            else self.encoder.get_sentence_embedding_dimension()
        self.head = nn.Linear(dim, len(MODALITY_NAMES)).to(device)
        self.device = device

    def forward(self, texts: list[str]) -> torch.Tensor:
        features = self.encoder.tokenize(texts)
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        emb = self.encoder(features)["sentence_embedding"]            # [n, dim]
        return torch.sigmoid(self.head(emb)) * MAX_SCORE               # [n, 9]

    @torch.no_grad()
    def predict(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Batch predict API used by retrieval: queries -> float32 [n, 9] (columns in registry order)."""
        self.eval()
        out = [self(texts[i:i + batch_size]).float().cpu().numpy() for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(MODALITY_NAMES)), np.float32)

    def save(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        self.encoder.save(str(out_dir / "encoder"))
        torch.save(self.head.state_dict(), out_dir / "head.pt")
        (out_dir / "relevance_config.json").write_text(json.dumps(
            {"encoder": self.encoder_name, "modalities": list(MODALITY_NAMES), "max_score": MAX_SCORE}, indent=2))

    @classmethod
    def load(cls, out_dir: str | Path, device: str = "cpu") -> RelevanceModel:
        out_dir = Path(out_dir)
        model = cls(str(out_dir / "encoder"), device=device)
        model.head.load_state_dict(torch.load(out_dir / "head.pt", map_location=device, weights_only=True))
        model.eval()
        return model


def metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """MAE and the accuracy of the rounded score over all (query, modality) pairs, plus per modality."""
    rounded = np.clip(np.rint(pred), 0, MAX_SCORE)
    return {"mae": float(np.abs(pred - target).mean()), "accuracy": float((rounded == target).mean()),
            "per_modality": {m: {"mae": float(np.abs(pred[:, i] - target[:, i]).mean()),
                                 "accuracy": float((rounded[:, i] == target[:, i]).mean())}
                             for i, m in enumerate(MODALITY_NAMES)}}


@dataclass
class RelevanceConfig:
    """Train the modality-relevance model on D_r."""

    dr: str = field(metadata={"help": "D_r file (data_gen.synth.dr): query, split, AC..TC scores"})
    out_dir: str = field(metadata={"help": "where the model and its report go"})
    encoder: str = field(default="all-MiniLM-L6-v2", metadata={"help": "sentence-transformers name or path"})
    epochs: int = field(default=5, metadata={"help": "training epochs"})
    batch_size: int = field(default=32, metadata={"help": "batch size"})
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate (encoder and head)"})
    seed: int = field(default=0, metadata={"help": "seed"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    max_train_rows: int | None = field(default=None, metadata={
        "help": "train on a seeded sample of this many training rows (and test on as many held-out rows)"})


def train(cfg: RelevanceConfig) -> dict:
    torch.manual_seed(cfg.seed)
    rows = read_dr(cfg.dr)
    train_rows = [r for r in rows if r.get("split", "train") == "train"]
    test_rows = [r for r in rows if r.get("split") == "test"]
    if cfg.max_train_rows:
        pick = np.random.default_rng(cfg.seed)
        train_rows = [train_rows[i] for i in sorted(pick.permutation(len(train_rows))[:cfg.max_train_rows])]
        test_rows = [test_rows[i] for i in sorted(pick.permutation(len(test_rows))[:cfg.max_train_rows])]
    if not train_rows or not test_rows:
        raise ValueError(f"{cfg.dr}: need both train and test rows (got {len(train_rows)} / {len(test_rows)})")
    model = RelevanceModel(cfg.encoder, device=cfg.device)
    targets = torch.tensor([[float(r[m]) for m in MODALITY_NAMES] for r in train_rows])
    # Start from the constant predictor: the head's bias gives the training mean of each modality, its weights are
    # small, so training only has to learn how the query moves the scores away from the mean.
    with torch.no_grad():
        mean = (targets.mean(0) / MAX_SCORE).clamp(0.01, 0.99)
        model.head.bias.copy_(torch.log(mean / (1 - mean)).to(cfg.device))
        model.head.weight.mul_(0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(train_rows))
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            pred = model([train_rows[i]["query"] for i in idx])
            loss = nn.functional.mse_loss(pred, targets[idx].to(cfg.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch, "train_mse": total / len(order)})
        print(f"epoch {epoch}: train MSE {history[-1]['train_mse']:.4f}", file=sys.stderr)
    test_target = np.array([[float(r[m]) for m in MODALITY_NAMES] for r in test_rows])
    # Reference: the per-modality mean of the training scores, whatever the query. A model that does not beat it has
    # learnt nothing from the query text (e.g. when the LLM answers every query with the same scores).
    constant = np.broadcast_to(targets.numpy().mean(axis=0), test_target.shape)
    report = {"train": len(train_rows), "test": len(test_rows), "history": history,
              "test_metrics": metrics(model.predict([r["query"] for r in test_rows]), test_target),
              "constant_baseline_metrics": metrics(constant, test_target),
              "distinct_train_score_vectors": len({tuple(t) for t in targets.tolist()}),
              "config": cfg.__dict__}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    report = train(parse_config(RelevanceConfig, argv))
    m = report["test_metrics"]
    print(f"held-out {report['test']} queries (train {report['train']}): MAE {m['mae']:.3f}, "
          f"rounded-score accuracy {m['accuracy']:.4f}")
    c = report["constant_baseline_metrics"]
    print(f"constant baseline (train mean per modality): MAE {c['mae']:.3f}, "
          f"rounded-score accuracy {c['accuracy']:.4f}; "
          f"{report['distinct_train_score_vectors']} distinct score vectors in train")
    print("| modality | MAE | accuracy |\n|---|---|---|")
    for name, v in m["per_modality"].items():
        print(f"| {name} | {v['mae']:.3f} | {v['accuracy']:.4f} |")


if __name__ == "__main__":
    main()
