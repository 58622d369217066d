"""ID quality (FusID paper, Table 1): token database + train/test split -> codebook under-utilisation, cardinality and
conflict rate, before and after `<ID-k>` disambiguation.

    music3m-eval-id-quality --tokenizer_dir runs/spotify/tokenizers/rqvae

CUR of a (modality, level) = share of its K entries that no track uses, on train and on test tracks (with
`test_only_codes`, App. D). Cardinality = distinct full IDs; conflict rate = share of tracks whose full ID another
track has (0 after disambiguation). Writes <tokenizer_dir>/eval/id_quality.json.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import parse_config
from eval.common import default_out, fmt, input_record, load_test_split, markdown_table, result_header, write_json
from tokenizer_ext.token_db import TokenDB, conflict_stats
from tokenizer_ext.tokens import MISSING


@dataclass
class IDQualityConfig:
    """ID quality of a token database: codebook under-utilisation, cardinality, conflict rate (FusID Table 1)."""

    tokenizer_dir: str = field(metadata={"help": "tokenizer directory with token_db.parquet (tokenizer_ext.train)"})
    out: str | None = field(default=None, metadata={"help": "output JSON (default TOKENIZER_DIR/eval/id_quality.json)"})


def codebook_usage(codes: np.ndarray, codebook_sizes: tuple[int, ...]) -> list[dict]:
    """int [n, L] codes (MISSING rows ignored) -> per level: entries used, CUR, and the used code ids."""
    present = codes[codes[:, 0] != MISSING]
    out = []
    for level, size in enumerate(codebook_sizes, start=1):
        used = np.unique(present[:, level - 1])
        out.append({"level": level, "codebook_size": int(size), "tracks": int(len(present)), "used": int(len(used)),
                    "cur": 1.0 - len(used) / size, "codes": used})
    return out


def conflict_row(full_ids: np.ndarray) -> dict:
    """conflict_stats plus the identity check tracks = cardinality + tracks_in_conflict - conflict_groups."""
    stats = conflict_stats(full_ids)
    stats["identity_holds"] = stats["tracks"] == (stats["cardinality"] + stats["tracks_in_conflict"]
                                                  - stats["conflict_groups"])
    return stats


def id_quality(db: TokenDB, is_test: np.ndarray) -> dict:
    """TokenDB + bool [N] test mask -> {'levels': [...], 'modality_ids': [...], 'ids': [...]}."""
    is_test = np.asarray(is_test, dtype=bool)
    subsets = {"all": np.ones(db.num_tracks, bool), "train": ~is_test, "test": is_test}
    levels = []
    for m in db.modalities:
        train = codebook_usage(db.codes[m][~is_test], db.codebook_sizes[m])
        test = codebook_usage(db.codes[m][is_test], db.codebook_sizes[m])
        for tr, te in zip(train, test):
            levels.append({"modality": m, "level": tr["level"], "codebook_size": tr["codebook_size"],
                           "train_tracks": tr["tracks"], "used_train": tr["used"], "cur_train": tr["cur"],
                           "test_tracks": te["tracks"], "used_test": te["used"], "cur_test": te["cur"],
                           "test_only_codes": int(len(np.setdiff1d(te["codes"], tr["codes"])))})
    modality_ids = []
    for m in db.modalities:
        present = db.presence(m)
        for name, mask in subsets.items():
            modality_ids.append({"modality": m, "subset": name, **conflict_row(db.codes[m][mask & present])})
    full = db.full_codes()
    dedup = db.dedup if db.dedup is not None else db.with_disambiguation().dedup
    full_dedup = np.concatenate([full, dedup[:, None]], axis=1)
    ids = []
    for name, mask in subsets.items():
        ids.append({"subset": name, "disambiguation": False, **conflict_row(full[mask])})
        ids.append({"subset": name, "disambiguation": True, **conflict_row(full_dedup[mask])})
    return {"levels": levels, "modality_ids": modality_ids, "ids": ids}


def run(cfg: IDQualityConfig) -> dict:
    tokenizer_dir = Path(cfg.tokenizer_dir)
    db = TokenDB.load(tokenizer_dir)
    is_test, split_source = load_test_split(tokenizer_dir, db.track_ids)
    result = id_quality(db, is_test)
    if not all(r["identity_holds"] for r in result["ids"] + result["modality_ids"]):
        raise AssertionError("tracks != cardinality + tracks_in_conflict - conflict_groups: conflict counting broken")
    return {**result_header("id_quality", cfg),
            "inputs": {"token_db": input_record(tokenizer_dir / "token_db.parquet")},
            "tokenizer": db.tokenizer, "modalities": list(db.modalities), "test_split": split_source,
            "counts": {"tracks": db.num_tracks, "train": int((~is_test).sum()), "test": int(is_test.sum())},
            **result}


def report_markdown(result: dict) -> str:
    levels = markdown_table(
        ["modality", "level", "K", "used (train)", "CUR train", "used (test)", "CUR test", "test-only codes"],
        [[r["modality"], r["level"], r["codebook_size"], r["used_train"], r["cur_train"], r["used_test"],
          r["cur_test"], r["test_only_codes"]] for r in result["levels"]])
    ids = markdown_table(
        ["subset", "disambiguation", "tracks", "cardinality", "conflict groups", "tracks in conflict",
         "conflict rate", "max group", "identity"],
        [[r["subset"], "yes" if r["disambiguation"] else "no", r["tracks"], r["cardinality"], r["conflict_groups"],
          r["tracks_in_conflict"], r["conflict_rate"], r["max_group"], "ok" if r["identity_holds"] else "FAILS"]
         for r in result["ids"]])
    per_mod = markdown_table(
        ["modality", "subset", "tracks", "cardinality", "conflict rate"],
        [[r["modality"], r["subset"], r["tracks"], r["cardinality"], r["conflict_rate"]]
         for r in result["modality_ids"] if r["subset"] != "all"])
    c = result["counts"]
    return "\n".join([f"ID quality ({result['tokenizer']} tokens; {fmt(c['train'])} train / {fmt(c['test'])} test "
                      f"tracks, split from {result['test_split']})", "", "Codebook usage per level:", "", levels, "",
                      "Full IDs (all modalities):", "", ids, "", "Per-modality IDs (tracks with the modality):", "",
                      per_mod])


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(IDQualityConfig, argv)
    result = run(cfg)
    out = write_json(cfg.out or default_out(cfg.tokenizer_dir, "id_quality"), result)
    print(report_markdown(result))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
