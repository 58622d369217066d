"""Stage 2: `run_dir/embeddings/` -> trained tokenizer + token database in `run_dir/tokenizers/<method>/`.

    music3m-train-tokenizer --run_dir runs/spotify --config recipes/tokenizers/rqvae.yaml [--modalities BM,TC]

Splits the tracks by track hash, trains each modality's quantizer on its present training rows (or one joint
quantizer on all of them; a checkpoint with unchanged settings and inputs is reused, so a killed run resumes with
its finished modalities and retrains the one it was training; `grouped: true` also keeps its state every 10 epochs
and resumes mid-training), then encodes every track into the token database.
FusID's co-occurrence pairs come only from the training playlists and training tracks.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.config import parse_config
from common.manifest import config_hash, file_sha256, write_manifest
from common.registry import get_modality, parse_modalities
from data_gen.catalog.track_split import split_tracks
from data_gen.vectorize.embeddings import EmbeddingStore
from tokenizer_ext.config import JOINT_METHODS, TokenizerConfig
from tokenizer_ext.quantizers.base import JOINT_QUANTIZERS, QUANTIZERS, ModalityQuantizer
from tokenizer_ext.quantizers.joint import cooccurrence_pairs, training_playlists
from tokenizer_ext.tokenizer import JointTokenizer, MusicTokenizer, build_joint_quantizer, build_quantizer

GROUPED_STATE = "grouped_state.pt"  # grouped training's state between epochs, removed when the run ends
CHECKPOINT_RECORD = "checkpoint.json"  # inside <MOD>/, written last: its presence means the checkpoint is complete
LOG_FILE = "train_log.jsonl"


@dataclass(kw_only=True)
class TrainConfig(TokenizerConfig):
    """Train one quantizer per modality on a run's embeddings and build its token database."""

    run_dir: str = field(metadata={"help": "run directory with embeddings/ (from data_gen.vectorize.run)"})
    out_dir: str | None = field(default=None, metadata={
        "help": "tokenizer directory (default RUN_DIR/tokenizers/METHOD)"})
    overwrite: bool = field(default=False, metadata={"help": "retrain modalities whose checkpoint is up to date"})
    reuse_from: str | None = field(default=None, metadata={
        "help": "another tokenizer folder (e.g. the same settings on another run of the same catalog; its run is the "
                "run_dir of its manifest.json): a modality whose checkpoint there was trained with these settings on "
                "the same tracks, presence, train/test split and embedding bytes is copied instead of trained; the "
                "others are trained"})


def write_split(out_dir: Path, track_ids: list[str], is_test: np.ndarray, cfg: TrainConfig) -> dict:
    """split.json (seed, fraction, counts) + test_tracks.txt, so evaluation uses exactly the held-out tracks."""
    split = {"seed": cfg.seed, "test_fraction": cfg.test_fraction, "tracks": len(track_ids),
             "train": int((~is_test).sum()), "test": int(is_test.sum()), "method": "sha1(seed:track_id)"}
    (out_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n")
    (out_dir / "test_tracks.txt").write_text("".join(t + "\n" for t, test in zip(track_ids, is_test) if test))
    return split


def _log_modality(line: str) -> str | None:
    try:
        return json.loads(line).get("modality")
    except json.JSONDecodeError:  # a line cut short by a killed run
        return None


def _clear_for_training(out_dir: Path, modality: str) -> None:
    """Before a modality is (re)trained: remove its checkpoint record (a run killed while retraining must not leave
    an old record over new weights), its earlier epochs in the log (other modalities' lines stay), and any line a
    killed run left unfinished."""
    (out_dir / modality / CHECKPOINT_RECORD).unlink(missing_ok=True)
    log_path = out_dir / LOG_FILE
    if log_path.exists():
        lines = log_path.read_text().splitlines(keepends=True)
        tmp = log_path.with_suffix(".tmp")  # replaced in one step: a kill here loses no other modality's lines
        tmp.write_text("".join(ln for ln in lines if ln.endswith("\n") and _log_modality(ln) not in (None, modality)))
        tmp.replace(log_path)


def _settings(cfg: TrainConfig, store: EmbeddingStore, modality: str) -> str:
    """The checkpoint-reuse key of a modality: the model settings and its embeddings' settings, width and count."""
    info = store.info(modality)
    return config_hash({**cfg.model_settings(), "modality": modality,
                        "embeddings": {k: info.get(k) for k in ("settings", "dim", "present")}})


def _copy_checkpoint(modality: str, cfg: TrainConfig, store: EmbeddingStore, settings: str, out_dir: Path) -> None:
    """--reuse_from: copy the modality's checkpoint from that tokenizer folder when it was trained with these model
    settings on the same tracks (in the same order), presence, train/test split (its test_tracks.txt against the one
    write_split wrote here) and embedding bytes; its record gets this run's key and says where it came from. When
    not copied, the reason is printed."""
    src = Path(cfg.reuse_from)
    record_path = src / modality / CHECKPOINT_RECORD
    manifest = src / "manifest.json"
    if not record_path.exists() or not manifest.exists():
        print(f"[{modality}] not reused: no finished checkpoint in {src}", file=sys.stderr)
        return
    src_store = EmbeddingStore(json.loads(manifest.read_text())["config"]["run_dir"])
    record = json.loads(record_path.read_text())
    matrix = f"{get_modality(modality).name}.npy"
    checks = (("model settings", lambda: record.get("settings") == _settings(cfg, src_store, modality)),
              ("tracks", lambda: src_store.track_ids == store.track_ids),
              ("presence", lambda: np.array_equal(src_store.presence(modality), store.presence(modality))),
              ("train/test split", lambda: (src / "test_tracks.txt").read_bytes()
               == (out_dir / "test_tracks.txt").read_bytes()),
              ("embeddings", lambda: file_sha256(src_store.dir / matrix) == file_sha256(store.dir / matrix)))
    differ = next((what for what, same in checks if not same()), None)
    if differ:
        print(f"[{modality}] not reused from {src}: other {differ}", file=sys.stderr)
        return
    _clear_for_training(out_dir, modality)
    shutil.copytree(src / modality, out_dir / modality, dirs_exist_ok=True)
    record = {**record, "settings": settings, "reused_from": str(src / modality)}
    (out_dir / modality / CHECKPOINT_RECORD).write_text(json.dumps(record, indent=2) + "\n")  # written last


def _reuse_or_rows(modality: str, cfg: TrainConfig, store: EmbeddingStore, is_test: np.ndarray, out_dir: Path):
    """-> ("reused", quantizer, record) when the checkpoint matches the settings and inputs; ("skipped", None,
    record) without 2 present training rows; else ("train", (load train rows, load test rows), partial record): the
    loaders read the memory-mapped matrix when called, so several modalities need not sit in memory at once."""
    settings = _settings(cfg, store, modality)
    ckpt_dir, record_path = out_dir / modality, out_dir / modality / CHECKPOINT_RECORD
    if not cfg.overwrite and cfg.reuse_from and not record_path.exists():
        _copy_checkpoint(modality, cfg, store, settings, out_dir)
    if record_path.exists() and not cfg.overwrite:
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings:
            return "reused", QUANTIZERS[cfg.method].load(ckpt_dir, device=cfg.device), {**record, "status": "reused"}
    present = store.presence(modality)
    train_rows, test_rows = np.flatnonzero(present & ~is_test), np.flatnonzero(present & is_test)
    record = {"modality": modality, "method": cfg.method, "settings": settings, "train": int(len(train_rows)),
              "test": int(len(test_rows))}
    if len(train_rows) < 2:
        return "skipped", None, {**record, "status": "skipped", "reason": "fewer than 2 present training tracks"}
    store.check_finite(modality, np.flatnonzero(present))
    matrix = store.load(modality)  # memory-mapped; only this modality's present rows are read
    return "train", (lambda: np.asarray(matrix[train_rows]), lambda: np.asarray(matrix[test_rows])), \
        {**record, "dim": int(matrix.shape[1])}


def _save_trained(quantizer: ModalityQuantizer, record: dict, history: list[dict], seconds: float,
                  out_dir: Path) -> dict:
    """Checkpoint + its record (written last: its presence means the checkpoint is complete) -> the record."""
    modality = record["modality"]
    quantizer.save(out_dir / modality)
    record = {**record, "status": "trained", "codebook_sizes": list(quantizer.codebook_sizes),
              "seconds": round(seconds, 2), "final": history[-1] if history else {}}
    (out_dir / modality / CHECKPOINT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def train_modality(modality: str, cfg: TrainConfig, store: EmbeddingStore, is_test: np.ndarray,
                   out_dir: Path) -> tuple[ModalityQuantizer | None, dict]:
    """Train (or reuse) one modality's quantizer -> (quantizer or None when it has no training rows, record)."""
    status, payload, record = _reuse_or_rows(modality, cfg, store, is_test, out_dir)
    if status != "train":
        return payload, record
    x_train, x_test = payload[0](), payload[1]()
    quantizer = build_quantizer(cfg)
    log_path = out_dir / LOG_FILE
    _clear_for_training(out_dir, modality)
    history: list[dict] = []
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as fh, \
            tqdm(total=getattr(quantizer, "epochs", 1), desc=f"{modality} ({cfg.method})", unit="epoch",
                 file=sys.stderr, disable=None) as bar:
        # val_recon = held-out test tracks, for monitoring only
        quantizer.fit(x_train, x_test, log=_progress_logger(fh, bar, history, modality))
    return quantizer, _save_trained(quantizer, record, history, time.time() - t0, out_dir)


def train_modalities_grouped(modalities: list[str], cfg: TrainConfig, store: EmbeddingStore, is_test: np.ndarray,
                             out_dir: Path) -> dict[str, tuple[ModalityQuantizer | None, dict]]:
    """`grouped: true` (RQ-VAE / VQ-VAE): the modalities to train go through
    tokenizer_ext.quantizers.rqvae_grouped.train_grouped together (batched by input width, concurrent on the GPU);
    reuse and skips as train_modality -> per modality (quantizer or None, record)."""
    from tokenizer_ext.quantizers.rqvae_grouped import train_grouped

    results, jobs = {}, {}
    for m in modalities:
        status, payload, record = _reuse_or_rows(m, cfg, store, is_test, out_dir)
        if status == "train":
            jobs[m] = (payload, record)
        else:
            results[m] = (payload, record)
    if not jobs:
        return results
    quantizers = {m: build_quantizer(cfg) for m in jobs}
    log_path = out_dir / LOG_FILE
    for m in jobs:
        _clear_for_training(out_dir, m)
    histories: dict[str, list[dict]] = {m: [] for m in jobs}
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as fh, \
            tqdm(total=cfg.epochs * len(jobs), desc=f"{'+'.join(jobs)} ({cfg.method}, grouped)", unit="epoch",
                 file=sys.stderr, disable=None) as bar:
        train_grouped(quantizers, {m: load for m, ((load, _), _) in jobs.items()},
                      shapes={m: (record["train"], record["dim"]) for m, (_, record) in jobs.items()},
                      x_val={m: load for m, ((_, load), _) in jobs.items()},
                      log={m: _progress_logger(fh, bar, histories[m], m) for m in jobs},
                      data_dtype=cfg.grouped_data_dtype, matmul_dtype=cfg.matmul_dtype(),
                      state_path=out_dir / GROUPED_STATE,  # every 10 epochs: a killed run resumes mid-training
                      state_key={m: record["settings"] for m, (_, record) in jobs.items()})
    seconds = time.time() - t0
    for m, (_, record) in jobs.items():
        results[m] = (quantizers[m], _save_trained(quantizers[m], {**record, "grouped": True}, histories[m], seconds,
                                                   out_dir))
    return results


def _progress_logger(fh, bar, history: list[dict], label: str | None):
    """One epoch record -> history, the JSONL log (tagged with the modality or group) and the progress bar."""
    def log(epoch_record: dict) -> None:
        history.append(epoch_record)
        fh.write(json.dumps({"modality": label, **epoch_record}) + "\n")
        fh.flush()
        bar.update(1)
        bar.set_postfix(loss=f"{epoch_record['loss']:.4g}", dead=sum(epoch_record["dead_codes"]))
    return log


def load_pairs(cfg: TrainConfig, track_ids: list[str], train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Co-occurring pairs of training tracks in the training playlists -> (int [P, 2] indices into train_rows,
    float [P] normalised co-occurrence, record)."""
    run_dir = Path(cfg.run_dir)
    playlists_path = cfg.playlists or run_dir / "playlists.jsonl"
    train_ids = cfg.train_playlists or run_dir / "splits" / "playlists_train.txt"
    if train_ids != "all" and not Path(train_ids).exists():
        raise FileNotFoundError(f"{train_ids}: no list of training playlists; {cfg.method} learns from playlist "
                                "co-occurrence and must not see evaluation playlists (write the split with "
                                "data_gen.catalog.split, pass --train_playlists FILE, or --train_playlists all "
                                "where no playlist is used for evaluation)")
    playlists, record = training_playlists(playlists_path, str(train_ids))
    row_of = {track_ids[r]: i for i, r in enumerate(train_rows)}
    pairs, scores = cooccurrence_pairs(playlists, row_of, len(train_rows))
    return pairs, scores, {**record, "pairs": int(len(pairs))}


def _open_run(cfg: TrainConfig):
    """-> (embedding store, output dir, the requested modalities that have embeddings, {skipped: reason}). A modality
    asked for by name but without embeddings is an error; under 'all' it is skipped and reported."""
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
    return store, out_dir, [m for m in requested if m in available], skipped


def run_joint(cfg: TrainConfig) -> dict:
    """Train one joint quantizer on every requested modality (see the module docstring)."""
    store, out_dir, inputs, skipped = _open_run(cfg)
    if not inputs:
        raise ValueError(f"{store.dir}: none of the requested modalities has embeddings")
    track_ids = store.track_ids
    is_test = split_tracks(track_ids, cfg.test_fraction, cfg.seed)
    split = write_split(out_dir, track_ids, is_test, cfg)
    tokenizer = JointTokenizer(cfg.tokenizer_config(), build_joint_quantizer(cfg), {m: store.dim(m) for m in inputs})
    presence = {m: store.presence(m) for m in inputs}
    train_rows = np.flatnonzero(~is_test & np.any(np.stack([presence[m] for m in inputs], axis=1), axis=1))
    settings = config_hash({**cfg.model_settings(), "inputs": inputs,
                            "embeddings": {m: {k: store.info(m).get(k) for k in ("settings", "dim", "present")}
                                           for m in inputs}})
    ckpt_dir, record_path = out_dir / JointTokenizer.JOINT_DIR, out_dir / JointTokenizer.JOINT_DIR / CHECKPOINT_RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() and not cfg.overwrite else {}
    if record.get("settings") == settings:
        tokenizer.quantizer = JOINT_QUANTIZERS[cfg.method].load(ckpt_dir, device=cfg.device)
        record = {**record, "status": "reused"}
    else:
        for m in inputs:
            store.check_finite(m, np.flatnonzero(presence[m]))
        x, present = tokenizer.read_inputs(store, train_rows)
        pairs = scores = None
        pair_record = None
        if cfg.method == "fusid":
            pairs, scores, pair_record = load_pairs(cfg, track_ids, train_rows)
        log_path = out_dir / LOG_FILE
        log_path.unlink(missing_ok=True)
        record_path.unlink(missing_ok=True)  # written again once the new checkpoint is complete
        history: list[dict] = []
        t0 = time.time()
        with open(log_path, "a", encoding="utf-8") as fh, \
                tqdm(total=getattr(tokenizer.quantizer, "epochs", 1), desc=cfg.method, unit="epoch", file=sys.stderr,
                     disable=None) as bar:
            tokenizer.quantizer.fit(x, present, pairs, log=_progress_logger(fh, bar, history, "joint"),
                                    pair_scores=scores)
        tokenizer.quantizer.save(ckpt_dir)
        record = {"method": cfg.method, "settings": settings, "status": "trained", "inputs": inputs,
                  "train": int(len(train_rows)), "test": int(is_test.sum()), "pairs": pair_record,
                  "codebook_sizes": {g: list(s) for g, s in tokenizer.codebook_sizes.items()},
                  "seconds": round(time.time() - t0, 2), "epochs": [h for h in history if h.get("epoch") != "pq"][-1:],
                  "final": history[-1] if history else {}}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    db, conflicts = _save_tokenizer_and_db(cfg, tokenizer, store, out_dir)
    counts = {"tracks": len(track_ids), "split": split, "joint": {k: record.get(k) for k in
                                                                  ("status", "inputs", "train", "test", "pairs",
                                                                   "codebook_sizes", "seconds", "final")},
              "modalities": {}, "skipped": skipped, "present": {g: int(db.presence(g).sum()) for g in db.modalities},
              "vocabulary_size": len(db.vocabulary())}
    return _finish(cfg, store, out_dir, counts, conflicts)


def _save_tokenizer_and_db(cfg: TrainConfig, tokenizer, store: EmbeddingStore, out_dir: Path):
    """Save the tokenizer, encode every catalog track, add `<ID-k>` when asked, save the token database."""
    tokenizer.save(out_dir)
    db = tokenizer.encode_store(store, disambiguate=False)
    conflicts = {"before_disambiguation": db.conflict_stats()}
    if cfg.disambiguate:
        db = db.with_disambiguation()
        conflicts["after_disambiguation"] = db.conflict_stats()
    db.meta["tokenizer_dir"] = str(out_dir)
    db.save(out_dir)
    return db, conflicts


def _finish(cfg: TrainConfig, store: EmbeddingStore, out_dir: Path, counts: dict, conflicts: dict) -> dict:
    """Write the tokenize manifest and return the run summary (per-modality and joint runs alike)."""
    write_manifest(out_dir / "manifest.json", "tokenize", cfg,
                   inputs={"tracks": store.dir / "tracks.parquet", "presence": store.dir / "presence.npy",
                           "embeddings_manifest": store.dir / "manifest.json"},
                   counts=counts, extra={"conflicts": conflicts})
    return {**counts, "conflicts": conflicts, "out_dir": str(out_dir)}


def run(cfg: TrainConfig) -> dict:
    if cfg.method in JOINT_METHODS:
        return run_joint(cfg)
    store, out_dir, present, skipped = _open_run(cfg)
    track_ids = store.track_ids
    is_test = split_tracks(track_ids, cfg.test_fraction, cfg.seed)
    split = write_split(out_dir, track_ids, is_test, cfg)

    quantizers, records = {}, {}
    grouped = train_modalities_grouped(present, cfg, store, is_test, out_dir) if cfg.grouped else {}
    for m in present:
        quantizer, records[m] = grouped[m] if m in grouped else train_modality(m, cfg, store, is_test, out_dir)
        if quantizer is None:
            if cfg.modalities not in (None, "", "all"):
                raise ValueError(f"{store.dir}: requested modality {m} cannot be trained: {records[m]['reason']}")
            skipped[m] = records.pop(m)["reason"]
            print(f"[{m}] skipped: {skipped[m]}", file=sys.stderr)
        else:
            quantizers[m] = quantizer
            print(f"[{m}] {records[m]['status']}", file=sys.stderr)
    if not quantizers:
        raise ValueError(f"{store.dir}: none of the requested modalities "
                         f"({', '.join(parse_modalities(cfg.modalities))}) can be trained")

    tokenizer = MusicTokenizer(cfg.tokenizer_config(), quantizers, {m: store.dim(m) for m in quantizers})
    db, conflicts = _save_tokenizer_and_db(cfg, tokenizer, store, out_dir)

    modalities = {m: {"status": r["status"], "train": r["train"], "test": r["test"], "dim": r["dim"],
                      "codebook_sizes": r["codebook_sizes"], "seconds": r["seconds"],
                      **{k: r["final"].get(k) for k in ("loss", "recon", "codebook", "commitment", "val_recon",
                                                        "dead_codes")}}
                  for m, r in records.items()}
    counts = {"tracks": len(track_ids), "split": split, "modalities": modalities, "skipped": skipped,
              "present": {m: int(db.presence(m).sum()) for m in db.modalities},
              "vocabulary_size": len(db.vocabulary())}
    return _finish(cfg, store, out_dir, counts, conflicts)


def summary_table(summary: dict) -> str:
    if summary.get("joint"):
        j = summary["joint"]
        final = {k: v for k, v in (j.get("final") or {}).items() if isinstance(v, (int, float)) and k != "epoch"}
        lines = [f"joint quantizer ({j['status']}): inputs {', '.join(j['inputs'] or [])}; {j['train']:,} training "
                 f"tracks; codebooks {j['codebook_sizes']}; {j['seconds']} s",
                 f"co-occurrence pairs: {j['pairs']}" if j.get("pairs") else "co-occurrence pairs: not used",
                 "last log record: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items())]
        for name, c in summary["conflicts"].items():
            lines.append(f"\n{name.replace('_', ' ')}: conflict rate {c['conflict_rate']:.4f} "
                         f"({c['tracks_in_conflict']:,} tracks in {c['conflict_groups']:,} groups, "
                         f"{c['cardinality']:,} distinct IDs)")
        return "\n".join(lines)
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
