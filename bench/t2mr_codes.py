"""How a tokenizer's codes group an artist's tracks, and what a saved T2MR generation's beams are (no GPU).

    python -m bench.t2mr_codes --run_dir runs/spotify_bench --tokenizers rqvae kmeans \
        --artists "Janelle Monáe" "Michael Learns To Rock" "Don Omar"
    python -m bench.t2mr_codes --run_dir runs/spotify_bench --tokenizers rqvae \
        --generations runs/t2mr_eval_r5/3MTokenRec/t2mr_eval/generations_3MTokenRec.json --request "This Is Janelle"
    python -m bench.t2mr_codes --run_dir runs/spotify_val --tokenizers rqvae rqvae_cb256 --quality true
    python -m bench.t2mr_codes --run_dir runs/spotify_val --tokenizers rqvae kmeans --quality true --group_by album

Hierarchical matching ranks the catalog by shared code prefixes, so an artist request is answered well only when the
artist's tracks share a prefix that few other tracks have. Table 1, per tokenizer and artist, for each level of the
modality's code (BM by default): how many distinct prefixes the artist's tracks have, and how many of them sit in
the prefix that holds most of them, out of how many catalog tracks. Table 2: the beams of one saved request, each
resolved to its catalog track (artist, title, relevant or not). Table 3 (--quality), per tokenizer, no model: the
retrieval ceilings on the playlists (the answer is one member's ID) and the same-artist (or same-album, --group_by
album) P@10 of the ranking from a track's own ID, with all modalities and with the chosen modality alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from common.config import parse_config
from data_gen.catalog.playlists import read_playlists
from eval.t2mr import member_ceilings
from inference.matching import HierarchicalIndex
from inference.retrieval import Retriever, parse_sequence
from tokenizer_ext.token_db import TokenDB


@dataclass
class T2MRCodesConfig:
    run_dir: str = field(metadata={"help": "run with catalog.parquet and tokenizers/NAME"})
    tokenizers: list[str] = field(default_factory=lambda: ["rqvae"], metadata={"help": "tokenizers/NAME folders"})
    modality: str = field(default="BM", metadata={"help": "whose codes to group by"})
    artists: list[str] = field(default_factory=list, metadata={"help": "artists (catalog's artist field) to inspect"})
    generations: str | None = field(default=None, metadata={"help": "saved music3m-t2mr --save_generations JSON"})
    request: str | None = field(default=None, metadata={"help": "with --generations: the request starting so"})
    playlists: str | None = field(default=None, metadata={
        "help": "playlists JSONL whose members are the relevant tracks (default RUN/splits/playlists_eval.jsonl)"})
    quality: bool = field(default=False, metadata={"help": "table 3: ceilings and same-artist P@k per tokenizer"})
    group_by: str = field(default="artist", metadata={
        "help": "table 3: what 'the same' means: artist, or album (an artist's album: albums of the same name by "
                "different artists stay apart)", "choices": ["artist", "album"]})
    artist_sample: int = field(default=2000, metadata={
        "help": "table 3: tracks (of groups with two or more) ranked from their own ID, a seeded sample; 0: all"})
    k: int = field(default=10, metadata={"help": "ranking depth"})
    seed: int = field(default=0, metadata={"help": "the sample and the ceilings' random member"})


def artist_spread(db: TokenDB, artists: np.ndarray, artist: str, modality: str) -> list[dict]:
    """Per level of `modality`'s code: the artist's tracks, their distinct prefixes, and the largest prefix (how many
    of the artist's tracks and how many catalog tracks it holds)."""
    codes = db.codes[modality]
    rows = np.flatnonzero(artists == artist)
    if not len(rows):
        raise SystemExit(f"artist {artist!r}: no track of the catalog has it")
    out = []
    for level in range(codes.shape[1]):
        prefixes, counts = np.unique(codes[rows, : level + 1], axis=0, return_counts=True)
        top = prefixes[np.argmax(counts)]
        holders = int(np.all(codes[:, : level + 1] == top, axis=1).sum())
        out.append({"level": level + 1, "tracks": len(rows), "prefixes": len(prefixes),
                    "largest_holds": int(counts.max()), "largest_size": holders})
    return out


def group_labels(by_id: dict, track_ids: list[str], group_by: str) -> np.ndarray:
    """Per track, its group for table 3: the catalog's artist, or artist + album; "" where a field is empty."""
    def label(row: dict) -> str:
        if group_by == "artist":
            return row["artist"] or ""
        return f"{row['artist']}\t{row['album']}" if row["artist"] and row["album"] else ""
    return np.asarray([label(by_id[t]) for t in track_ids], dtype=object)


def same_group_precision(index: HierarchicalIndex, groups: np.ndarray, rows: np.ndarray, k: int,
                         weights: dict | None = None) -> float:
    """Mean share of the k tracks ranked from a track's own ID (the track itself excluded) in its group (artist or
    album)."""
    ranked = index.rank_rows(rows, weights, k=k, exclude_self=True)
    return float(np.mean(groups[ranked] == groups[rows][:, None]))


def beam_tracks(db: TokenDB, beams: list[list[str]], logprobs: list[float]) -> list[tuple[float, str | None]]:
    """(log-prob, catalog track id or None when the beam is not a catalog ID) per beam."""
    retriever = Retriever(db)
    out = []
    for beam, lp in zip(beams, logprobs):
        parsed = parse_sequence(beam, db)
        row = retriever.exact_row(*parsed) if parsed else None
        out.append((float(lp), None if row is None else db.track_ids[row]))
    return out


def quality_table(cfg: T2MRCodesConfig, tokenizers: dict, playlists: list, lists: str) -> None:
    """Table 3: per tokenizer (name -> (TokenDB, group per row)), the ceilings on `playlists` and same-group P@k."""
    same = f"same-{cfg.group_by} P@{cfg.k}"
    print(f"\nTokenizers without a model ({lists}: {len(playlists)} playlists; {same}: ", end="")
    header = True
    for name, (db, groups) in tokenizers.items():
        names, counts = np.unique(groups, return_counts=True)
        many = set(names[counts > 1]) - {""}
        pool = np.flatnonzero([g in many for g in groups])
        rng = np.random.default_rng(cfg.seed)
        rows = pool if not cfg.artist_sample or cfg.artist_sample >= len(pool) else \
            np.sort(rng.choice(pool, cfg.artist_sample, replace=False))
        if header:
            print(f"{len(rows):,} of the {len(pool):,} tracks whose {cfg.group_by} has two or more, seed {cfg.seed})\n")
            print(f"| tokenizer | {cfg.modality} codebooks | ceiling P@{cfg.k}: random / expected / best member | "
                  f"{same}: all modalities / {cfg.modality} only |")
            print("|---|---|---|---|")
            header = False
        index = HierarchicalIndex.from_token_db(db)
        row_of = db.row_of()
        members = [[row_of[t] for t in p.tracks if t in row_of] for p in playlists]
        c = member_ceilings(index, members, cfg.k, cfg.seed)
        alone = {m: float(m == cfg.modality) for m in db.modalities}
        print(f"| {name} | {list(db.codebook_sizes[cfg.modality])} | {c['ceiling_random_member_P@10']:.4f} / "
              f"{c['ceiling_expected_member_P@10']:.4f} / {c['ceiling_best_member_P@10']:.4f} | "
              f"{same_group_precision(index, groups, rows, cfg.k):.4f} / "
              f"{same_group_precision(index, groups, rows, cfg.k, alone):.4f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(T2MRCodesConfig, argv)
    run = Path(cfg.run_dir)
    catalog = pq.read_table(run / "catalog.parquet", columns=["track_id", "artist", "album", "title"]).to_pylist()
    by_id = {r["track_id"]: r for r in catalog}
    lists = cfg.playlists or str(run / "splits" / "playlists_eval.jsonl")
    playlists = read_playlists(lists) if cfg.quality or cfg.generations else []
    tokenizers = {}  # name -> (token DB, artist per row; "" where the catalog has none)
    for name in cfg.tokenizers:
        db = TokenDB.load(run / "tokenizers" / name)
        tokenizers[name] = db, group_labels(by_id, db.track_ids, "artist")
    if cfg.quality:
        quality_table(cfg, {name: (db, group_labels(by_id, db.track_ids, cfg.group_by))
                            for name, (db, _) in tokenizers.items()}, playlists, lists)
    gen = json.loads(Path(cfg.generations).read_text()) if cfg.generations else None
    for name, (db, artists) in tokenizers.items():
        if cfg.artists:
            print(f"\n{name}: {cfg.modality} codes of an artist's tracks\n")
            print("| artist | level | tracks | distinct prefixes | largest prefix holds | of catalog tracks |")
            print("|---|---|---|---|---|---|")
            for artist in cfg.artists:
                for s in artist_spread(db, artists, artist, cfg.modality):
                    print(f"| {artist} | {s['level']} | {s['tracks']} | {s['prefixes']} | {s['largest_holds']} | "
                          f"{s['largest_size']} |")
        if gen is not None:
            hits = [i for i, q in enumerate(gen["queries"]) if q.startswith(cfg.request or "")]
            if not hits:
                raise SystemExit(f"{cfg.generations}: no request starts with {cfg.request!r}")
            i = hits[0]
            relevant = next((set(p.tracks) for p in playlists if p.name == gen["queries"][i]), set())
            print(f"\n{name}: beams for {gen['queries'][i]!r} ({len(relevant)} relevant tracks)\n")
            print("| beam | log-prob | relevant | artist | title |")
            print("|---|---|---|---|---|")
            g = gen["generations"][i]
            for b, (lp, track) in enumerate(beam_tracks(db, g["beams"], g["logprobs"]), 1):
                rec = by_id.get(track, {})
                print(f"| {b} | {lp:.3f} | {'yes' if track in relevant else 'no'} | {rec.get('artist')} | "
                      f"{rec.get('title')} |")


if __name__ == "__main__":
    main()
