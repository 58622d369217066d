"""Plots of the token space (3MToken Appendix D): token database (+ catalog genres) -> PNG files + numbers in JSON.

    music3m-eval-plots --tokenizer_dir runs/spotify/tokenizers/rqvae [--run_dir runs/spotify]

token_usage_<MOD>.png: per level, the share of train and test tracks on each code (Fig. 3). genre_purity.png: per
modality, the share of tracks whose level-1 code's majority genre is their own (Fig. 2). Spotify genres are playlist
labels: a probe, not ground truth. The numbers go to <tokenizer_dir>/eval/plots.json.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from common.config import parse_config
from eval.common import (
    EVAL_DIR,
    default_out,
    load_test_split,
    markdown_table,
    resolve_run_dir,
    result_header,
    write_json,
)
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import MISSING


@dataclass
class PlotsConfig:
    """Token usage histograms (train vs test) and level-1 genre purity plots (3MToken Appendix D)."""

    tokenizer_dir: str = field(metadata={"help": "tokenizer directory (tokenizer_ext.train)"})
    run_dir: str | None = field(default=None, metadata={
        "help": "run directory with catalog.parquet for genres (default: the one recorded in tokenizer.json)"})
    out_dir: str | None = field(default=None, metadata={"help": "PNG folder (default TOKENIZER_DIR/eval/plots)"})
    out: str | None = field(default=None, metadata={"help": "numbers as JSON (default TOKENIZER_DIR/eval/plots.json)"})
    dpi: int = field(default=120, metadata={"help": "PNG resolution"})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def token_usage(db: TokenDB, is_test: np.ndarray) -> dict[str, list[dict]]:
    """-> {modality: [{level, codebook_size, train: counts[K], test: counts[K]}]} over tracks with the modality."""
    out = {}
    for m in db.modalities:
        codes, present = db.codes[m], db.presence(m)
        levels = []
        for level, size in enumerate(db.codebook_sizes[m], start=1):
            train = np.bincount(codes[present & ~is_test, level - 1], minlength=size)
            test = np.bincount(codes[present & is_test, level - 1], minlength=size)
            levels.append({"level": level, "codebook_size": int(size), "train": train.tolist(), "test": test.tolist()})
        out[m] = levels
    return out


def genre_purity(codes: np.ndarray, genres: np.ndarray) -> dict:
    """Level-1 codes [n] + genre labels [n] (None/'' = unknown, skipped) -> purity, majority baseline, counts.

    purity = sum over codes of (tracks of the code's most common genre) / tracks."""
    known = np.array([g is not None and g != "" for g in genres], dtype=bool) & (codes != MISSING)
    codes, genres = codes[known], np.asarray(genres, dtype=object)[known]
    if not len(codes):
        return {"tracks": 0, "purity": None, "majority_baseline": None, "codes_used": 0, "genres": 0}
    labels, g = np.unique(genres.astype(str), return_inverse=True)
    used, c = np.unique(codes, return_inverse=True)
    table = np.zeros((len(used), len(labels)), np.int64)
    np.add.at(table, (c.reshape(-1), g.reshape(-1)), 1)
    return {"tracks": int(len(codes)), "purity": float(table.max(axis=1).sum() / len(codes)),
            "majority_baseline": float(np.bincount(g.reshape(-1)).max() / len(codes)),
            "codes_used": int(len(used)), "genres": int(len(labels))}


def plot_token_usage(modality: str, levels: list[dict], path: Path, dpi: int) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(levels), figsize=(4.5 * len(levels), 3.2), squeeze=False)
    for ax, lv in zip(axes[0], levels):
        x = np.arange(lv["codebook_size"])
        for name, offset, color in (("train", -0.2, "tab:blue"), ("test", 0.2, "tab:orange")):
            counts = np.asarray(lv[name], dtype=float)
            share = counts / counts.sum() if counts.sum() else counts
            ax.bar(x + offset, share, width=0.4, label=name, color=color)
        ax.set_title(f"{modality} level {lv['level']} (K={lv['codebook_size']})")
        ax.set_xlabel("code index")
        ax.set_ylabel("share of tracks")
    axes[0][0].legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_genre_purity(purity: dict[str, dict], path: Path, dpi: int) -> Path:
    plt = _pyplot()
    mods = [m for m, r in purity.items() if r["purity"] is not None]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * max(1, len(mods)), 3.5))
    x = np.arange(len(mods))
    ax.bar(x - 0.2, [purity[m]["purity"] for m in mods], width=0.4, label="level-1 code purity")
    ax.bar(x + 0.2, [purity[m]["majority_baseline"] for m in mods], width=0.4, label="one code (majority genre)")
    ax.set_xticks(x, mods)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of tracks")
    ax.set_title("Genre purity of level-1 codes")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def run(cfg: PlotsConfig) -> dict:
    tokenizer_dir = Path(cfg.tokenizer_dir)
    out_dir = Path(cfg.out_dir or tokenizer_dir / EVAL_DIR / "plots")
    out_dir.mkdir(parents=True, exist_ok=True)
    db = TokenDB.load(tokenizer_dir)
    is_test, split_source = load_test_split(tokenizer_dir, db.track_ids)
    usage = token_usage(db, is_test)
    files = [str(plot_token_usage(m, levels, out_dir / f"token_usage_{m}.png", cfg.dpi)) for m, levels in usage.items()]

    purity: dict[str, dict] = {}
    note = None
    run_dir = resolve_run_dir(tokenizer_dir, cfg.run_dir)
    catalog = run_dir / "catalog.parquet" if run_dir else None
    if catalog is None or not catalog.exists():
        note = "no catalog.parquet (pass --run_dir): genre purity skipped"
    elif "genre" not in pq.read_schema(catalog).names:
        note = f"{catalog} has no genre column: genre purity skipped"
    else:
        table = pq.read_table(catalog, columns=["track_id", "genre"])
        genre_of = dict(zip(table.column("track_id").to_pylist(), table.column("genre").to_pylist()))
        genres = np.array([genre_of.get(t) for t in db.track_ids], dtype=object)
        purity = {m: genre_purity(db.codes[m][:, 0], genres) for m in db.modalities}
        if any(r["purity"] is not None for r in purity.values()):
            files.append(str(plot_genre_purity(purity, out_dir / "genre_purity.png", cfg.dpi)))
        else:
            note = "no track has both a genre and a code: genre purity skipped"
    return {**result_header("plots", cfg), "tokenizer": db.tokenizer, "test_split": split_source,
            "run_dir": str(run_dir) if run_dir else None, "token_usage": usage, "genre_purity": purity,
            "genre_note": note, "files": files}


def report_markdown(result: dict) -> str:
    lines = ["Plots: " + ", ".join(result["files"])]
    if result["genre_purity"]:
        lines += ["", "Genre purity of level-1 codes (genre = catalog column `genre`):", "",
                  markdown_table(["modality", "tracks", "codes used", "genres", "purity", "majority baseline"],
                                 [[m, r["tracks"], r["codes_used"], r["genres"], r["purity"], r["majority_baseline"]]
                                  for m, r in result["genre_purity"].items()])]
    if result["genre_note"]:
        lines += ["", result["genre_note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(PlotsConfig, argv)
    result = run(cfg)
    out = write_json(cfg.out or default_out(cfg.tokenizer_dir, "plots"), result)
    print(report_markdown(result))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
