"""Text <-> ID alignment tasks for SFT (as in LC-Rec / MiniOneRec): catalog + token database -> chat examples.

    desc2id    a track's one-line description -> its whole ID (between the boundary tokens)
    id2desc    a track's ID -> its description (the loss is on the words)
    mod2code   one modality's words (tags, year, artist and title, mood, tempo) -> that modality's codes

The examples share the format of the D_qt examples (prompt, completion, track_id, query) and join them in the
training split; a deterministic share of tracks (`per_track` examples per task and track) keeps the mix stable.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from data_gen.catalog.reader import read_catalog
from data_gen.synth.track_facts import FACT_COLUMNS, stable_hash, track_facts
from data_gen.synth.words import describe_short, load_audio_scale, modality_phrases
from recipes.sft.data import request_chat
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import BEGIN_TOKEN, END_TOKEN

TASKS = ("desc2id", "id2desc", "mod2code")
MODALITY_LABELS = {"BM": "title and artist", "ST": "tags", "SC": "sound", "MC": "tempo and key", "RI": "release",
                   "AC": "artist roles", "SF": "song facts", "AB": "artist biography"}
_DESC2ID = ("Find the track: {d}", "Which track is this? {d}", "{d}")
_ID2DESC = ("Describe the track {i}", "What is {i}?", "Which song has the ID {i}?")
_MOD2CODE = ("{label}: {words}. Give the {m} codes.", "{m} codes for {label} '{words}'")


def parse_tasks(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    names = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec or ()) if t.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown alignment task(s) {unknown}; choose from {', '.join(TASKS)}")
    return tuple(dict.fromkeys(names))


def alignment_examples(catalog: str | Path, db: TokenDB, tasks: Sequence[str], system_prompt: str,
                       per_track: float = 1.0, seed: int = 0, run_dir: str | Path | None = None) -> list[dict]:
    """Examples of the given tasks for the catalog tracks that are in the token database.

    `per_track` < 1 keeps that share of (track, task) pairs (hash-chosen); > 1 writes that many phrasings."""
    tasks = parse_tasks(tasks)
    if not tasks:
        return []
    row_of = db.row_of()
    audio = load_audio_scale(run_dir or Path(catalog).parent, catalog)
    columns = [*FACT_COLUMNS, "audio_features"]
    out: list[dict] = []
    for batch in read_catalog(catalog, columns=columns):
        for record in batch.to_pylist():
            row = row_of.get(record["track_id"])
            if row is None:
                continue
            facts = track_facts(record, audio=audio)
            answer = "".join(db.tokens(row))
            body = answer.removeprefix(BEGIN_TOKEN).removesuffix(END_TOKEN)
            for task in tasks:
                for k in range(max(1, int(per_track))):
                    if per_track < 1 and stable_hash("align", seed, facts.track_id, task) / 2**64 >= per_track:
                        continue
                    rng = random.Random(stable_hash("align", seed, facts.track_id, task, k))
                    pair = _example(task, facts, answer, body, db, row, rng)
                    if pair is not None:
                        query, completion = pair
                        out.append({"prompt": request_chat(system_prompt, query),
                                    "completion": [{"role": "assistant", "content": completion}],
                                    "track_id": facts.track_id, "query": query, "task": task})
    return out


def _example(task: str, facts, answer: str, body: str, db: TokenDB, row: int, rng: random.Random
             ) -> tuple[str, str] | None:
    if task == "desc2id":
        return rng.choice(_DESC2ID).format(d=describe_short(facts)), answer
    if task == "id2desc":
        return rng.choice(_ID2DESC).format(i=body), describe_short(facts)
    phrases = modality_phrases(facts)
    present = [m for m in db.modalities if m in phrases and m in MODALITY_LABELS and db.codes[m][row, 0] >= 0]
    if not present:
        return None
    m = rng.choice(present)
    words = ", ".join(phrases[m][:3])
    codes = [t for t in db.tokens(row) if t.startswith(f"<{m}")]
    return rng.choice(_MOD2CODE).format(label=MODALITY_LABELS[m], words=words, m=m), "".join(codes)
