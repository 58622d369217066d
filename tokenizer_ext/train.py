"""Stage 2: `run_dir/embeddings/` -> per-modality tokenizer + token database in `run_dir/tokenizers/<method>/`.

    python -m tokenizer_ext.train --run_dir runs/spotify --config recipes/tokenizers/rqvae.yaml [--modalities BM,TC]

Steps: split the tracks 80/20 by track hash -> for each requested modality that has embeddings, train its
quantizer on the present rows of the training split (or reuse its checkpoint when settings and inputs are
unchanged) -> encode every track into the token database (-1 where a modality is missing, then <ID-k>
disambiguation) -> manifest. The layout of the output directory is described in tokenizer_ext/tokenizer.py.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data_gen.config import parse_config
from data_gen.embeddings import EmbeddingStore
from data_gen.manifest import config_hash, write_manifest
from data_gen.registry import parse_modalities
from tokenizer_ext.base import QUANTIZERS, ModalityQuantizer
from tokenizer_ext.config import TokenizerConfig
from tokenizer_ext.split import split_tracks
from tokenizer_ext.tokenizer import MusicTokenizer, build_quantizer

CHECKPOINT_RECORD = "checkpoint.json"  # inside <MOD>/, written last: its presence means the checkpoint is complete
LOG_FILE = "train_log.jsonl"


@dataclass(kw_only=True)
class TrainConfig(TokenizerConfig):
    """Train one quantizer per modality on a run's embeddings and build its token database."""

    run_dir: str = field(metadata={"help": "run directory with embeddings/ (from data_gen.vectorize)"})
    out_dir: str | None = field(default=None, metadata={
        "help": "tokenizer directory (default RUN_DIR/tokenizers/METHOD)"})
    overwrite: bool = field(default=False, metadata={"help": "retrain modalities whose checkpoint is up to date"})


def write_split(out_dir: Path, track_ids: list[str], is_test: np.ndarray, cfg: TrainConfig) -> dict:
    """split.json (seed, fraction, counts) + test_tracks.txt, so evaluation uses exactly the held-out tracks."""
    split = {"seed": cfg.seed, "test_fraction": cfg.test_fraction, "tracks": len(track_ids),
             "train": int((~is_test).sum()), "test": int(is_test.sum()), "method": "sha1(seed:track_id)"}
    (out_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n")
    (out_dir / "test_tracks.txt").write_text("".join(t + "\n" for t, test in zip(track_ids, is_test) if test))
    return split


def _drop_log_lines(log_path: Path, modality: str) -> None:
    """Remove a modality's earlier epochs from the log before it is retrained (other modalities' lines stay)."""
    if log_path.exists():
        lines = log_path.read_text().splitlines(keepends=True)
        log_path.write_text("".join(ln for ln in lines if json.loads(ln).get("modality") != modality))


def train_modality(modality: str, cfg: TrainConfig, store: EmbeddingStore, is_test: np.ndarray,
                   out_dir: Path) -> tuple[ModalityQuantizer | None, dict]:
    """Train (or reuse) one modality's quantizer -> (quantizer or None when it has no training rows, record)."""
    info = store.info(modality)
    settings = config_hash({**cfg.model_settings(), "modality": modality,
                            "embeddings": {k: info.get(k) for k in ("settings", "dim", "present")}})
    ckpt_dir, record_path = out_dir / modality, out_dir / modality / CHECKPOINT_RECORD
    if record_path.exists() and not cfg.overwrite:
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings:
            return QUANTIZERS[cfg.method].load(ckpt_dir, device=cfg.device), {**record, "status": "reused"}
    present = store.presence(modality)
    train_rows, test_rows = np.flatnonzero(present & ~is_test), np.flatnonzero(present & is_test)
    if len(train_rows) < 2:
        return None, {"modality": modality, "status": "skipped", "train": int(len(train_rows)),
                      "test": int(len(test_rows)), "reason": "fewer than 2 present training tracks"}
    store.check_finite(modality, np.flatnonzero(present))
    matrix = store.load(modality)  # memory-mapped; only this modality's present rows are read
    x_train, x_test = np.asarray(matrix[train_rows]), np.asarray(matrix[test_rows])

    quantizer = build_quantizer(cfg)
    log_path = out_dir / LOG_FILE
    _drop_log_lines(log_path, modality)
    history: list[dict] = []
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as fh, \
            tqdm(total=getattr(quantizer, "epochs", 1), desc=f"{modality} ({cfg.method})", unit="epoch",
                 file=sys.stderr, disable=None) as bar:
        def log(epoch_record: dict) -> None:
            history.append(epoch_record)
            fh.write(json.dumps({"modality": modality, **epoch_record}) + "\n")
            fh.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_record['loss']:.4g}", dead=sum(epoch_record["dead_codes"]))

        quantizer.fit(x_train, x_test, log=log)  # val_recon = held-out test tracks, for monitoring only
    quantizer.save(ckpt_dir)
    record = {"modality": modality, "method": cfg.method, "settings": settings, "status": "trained",
              "train": int(len(train_rows)), "test": int(len(test_rows)), "dim": int(x_train.shape[1]),
              "codebook_sizes": list(quantizer.codebook_sizes), "seconds": round(time.time() - t0, 2),
              "final": history[-1] if history else {}}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return quantizer, record


def run(cfg: TrainConfig) -> dict:
    store = EmbeddingStore(cfg.run_dir)
    out_dir = Path(cfg.out_dir or Path(cfg.run_dir) / "tokenizers" / cfg.method)
    out_dir.mkdir(parents=True, exist_ok=True)
    available = store.modalities()
    requested = parse_modalities(cfg.modalities)
    skipped = {m: f"no embeddings in this run ({store.info(m).get('status')})" for m in requested if m not in available}
    if skipped and cfg.modalities not in (None, "", "all"):  # asked for by name: say so instead of skipping
        raise ValueError(f"{store.dir}: requested modalities without embeddings: "
                         + "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    for m, reason in skipped.items():
        print(f"[{m}] skipped: {reason}", file=sys.stderr)

    track_ids = store.track_ids
    is_test = split_tracks(track_ids, cfg.test_fraction, cfg.seed)
    split = write_split(out_dir, track_ids, is_test, cfg)

    quantizers, records = {}, {}
    for m in (m for m in requested if m in available):
        quantizer, records[m] = train_modality(m, cfg, store, is_test, out_dir)
        if quantizer is None:
            if cfg.modalities not in (None, "", "all"):
                raise ValueError(f"{store.dir}: requested modality {m} cannot be trained: {records[m]['reason']}")
            skipped[m] = records.pop(m)["reason"]
            print(f"[{m}] skipped: {skipped[m]}", file=sys.stderr)
        else:
            quantizers[m] = quantizer
            print(f"[{m}] {records[m]['status']}", file=sys.stderr)
    if not quantizers:
        raise ValueError(f"{store.dir}: none of the requested modalities ({', '.join(requested)}) can be trained")

    tokenizer = MusicTokenizer(cfg.tokenizer_config(), quantizers, {m: store.dim(m) for m in quantizers})
    tokenizer.save(out_dir)
    db = tokenizer.encode_store(store, disambiguate=False)
    conflicts = {"before_disambiguation": db.conflict_stats()}
    if cfg.disambiguate:
        db = db.with_disambiguation()
        conflicts["after_disambiguation"] = db.conflict_stats()
    db.meta["tokenizer_dir"] = str(out_dir)
    db.save(out_dir)

    modalities = {m: {"status": r["status"], "train": r["train"], "test": r["test"], "dim": r["dim"],
                      "codebook_sizes": r["codebook_sizes"], "seconds": r["seconds"],
                      **{k: r["final"].get(k) for k in ("loss", "recon", "codebook", "commitment", "val_recon",
                                                        "dead_codes")}}
                  for m, r in records.items()}
    counts = {"tracks": len(track_ids), "split": split, "modalities": modalities, "skipped": skipped,
              "present": {m: int(db.presence(m).sum()) for m in db.modalities},
              "vocabulary_size": len(db.vocabulary())}
    write_manifest(out_dir / "manifest.json", "tokenize", cfg,
                   inputs={"tracks": store.dir / "tracks.parquet", "presence": store.dir / "presence.npy",
                           "embeddings_manifest": store.dir / "manifest.json"},
                   counts=counts, extra={"conflicts": conflicts})
    return {**counts, "conflicts": conflicts, "out_dir": str(out_dir)}


def summary_table(summary: dict) -> str:
    lines = ["| modality | status | train | test | codebooks | recon | test recon | dead codes |",
             "|---|---|---|---|---|---|---|---|"]
    for m, s in summary["modalities"].items():
        lines.append(f"| {m} | {s['status']} | {s['train']:,} | {s['test']:,} | {s['codebook_sizes']} | "
                     f"{s['recon']:.4g} | {'-' if s['val_recon'] is None else format(s['val_recon'], '.4g')} | "
                     f"{s['dead_codes']} |")
    for m, reason in summary["skipped"].items():
        lines.append(f"| {m} | skipped: {reason} | - | - | - | - | - | - |")
    for name, c in summary["conflicts"].items():
        lines.append(f"\n{name.replace('_', ' ')}: conflict rate {c['conflict_rate']:.4f} "
                     f"({c['tracks_in_conflict']:,} tracks in {c['conflict_groups']:,} groups, "
                     f"{c['cardinality']:,} distinct IDs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(TrainConfig, argv)
    summary = run(cfg)
    print(summary_table(summary))
    print(f"tokenizer and token database: {summary['out_dir']}")


if __name__ == "__main__":
    main()
