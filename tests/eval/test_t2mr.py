"""Recommend + T2MR end to end on a tiny bundle (random Llama, word-level tokenizer with a chat template): every
generated top beam is a catalog track, rankings are catalog rows, metrics are computed on the same queries for every
system, and a merged run reproduces the merged system's numbers."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eval.t2mr import T2MRConfig, load_queries, run
from inference.bundle import load_bundle
from inference.recommend import Recommender, RequestError
from inference.retrieval import parse_sequence
from recipes.sft.bundle import save_bundle_extras
from tests.inference.test_decoding import _db, _word_tokenizer

CHAT = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant {% endif %}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2mr")
    db = _db(n=120)
    db.save(root / "tok")
    tok = _word_tokenizer(db)
    tok.chat_template = CHAT
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    save_bundle_extras(root / "model", root / "tok", system_prompt="you are a music recommender")
    run_dir = root / "run"
    run_dir.mkdir()
    pq.write_table(pa.table({"track_id": db.track_ids, "title": [f"song {i}" for i in range(db.num_tracks)],
                             "artist": [f"band {i % 7}" for i in range(db.num_tracks)],
                             "album": ["rock album" if i % 2 else "jazz album" for i in range(db.num_tracks)]}),
                   run_dir / "catalog.parquet")
    playlists = [{"playlist_id": "p1", "name": "rock", "tracks": [f"t{i}" for i in range(1, 40, 2)]},
                 {"playlist_id": "p2", "name": "jazz", "tracks": [f"t{i}" for i in range(0, 40, 2)] + ["unknown"]},
                 {"playlist_id": "p3", "name": "gone", "tracks": ["not-in-catalog"]}]
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(p) + "\n" for p in playlists))
    return root, db


def test_recommend_returns_catalog_tracks(bundle):
    root, db = bundle
    rec = Recommender(load_bundle(root / "model"), num_beams=3, catalog=root / "run" / "catalog.parquet")
    out = rec.recommend(["play some rock", "jazz"], k=5)
    assert [len(r) for r in out] == [5, 5]
    ids = set(db.track_ids)
    for tracks in out:
        assert all(t["track_id"] in ids and t["title"].startswith("song ") for t in tracks)
        scores = [t["score"] for t in tracks]
        assert scores == sorted(scores, reverse=True)
    gens = rec.generate(["rock"])
    assert rec.well_formed(gens).all() and len(gens[0].beams) == 3
    # the top beam is a catalog track (catalog mode): retrieving it alone puts a track with exactly its codes first,
    # with the maximum score (every level of every present group matched)
    codes, _ = parse_sequence(gens[0].beams[0], db)
    best = rec.retriever.retrieve(gens[0].beams[:1], k=1)
    row = int(best.rows[0])
    assert all(db.codes[m][row].tolist() == codes[m] for m in db.modalities)
    assert best.scores[0] == sum(len(db.codebook_sizes[m]) for m in db.modalities if codes[m][0] >= 0)


def test_load_queries_drops_and_counts(bundle):
    root, db = bundle
    names, relevant, counts = load_queries(root / "run" / "eval.jsonl", db.track_ids)
    assert names == ["rock", "jazz"] and counts["playlists_read"] == 3 and counts["dropped_no_catalog_track"] == 1
    assert len(relevant[1]) == 20  # the unknown track is not counted


def test_t2mr_end_to_end_and_merge(bundle, tmp_path):
    root, db = bundle
    cfg = T2MRConfig(run_dir=str(root / "run"), playlists=str(root / "run" / "eval.jsonl"),
                     out_dir=str(tmp_path / "a"), bundles=[f"Tiny={root / 'model'}"], baselines=["bm25"],
                     num_beams=2, k=10)
    result = run(cfg)
    systems = result["systems"]
    expected = {"Tiny w/o modality selection", "BM25", *(f"Tiny unimodal {m}" for m in db.modalities)}
    assert set(systems) == expected
    for s in systems.values():
        m = s["metrics"]
        assert all(0.0 <= v <= 1.0 for v in m.values())
        assert len(s["ranked_track_ids"]) == 2 and all(len(r) <= 10 for r in s["ranked_track_ids"])
    assert systems["Tiny w/o modality selection"]["well_formed_top_beam"] == 1.0
    # BM25 on "rock"/"jazz": the album word decides; every top-10 track of each query is relevant
    assert systems["BM25"]["metrics"]["P@10"] == pytest.approx(1.0)
    assert systems["BM25"]["P@10 95% CI"] == pytest.approx((1.0, 1.0)) and "P@10 - BM25 95% CI" not in systems["BM25"]
    tiny = systems["Tiny w/o modality selection"]
    lo, hi = tiny["P@10 - BM25 95% CI"]  # paired difference to BM25 over the same two requests
    assert lo <= tiny["metrics"]["P@10"] - 1.0 <= hi and tiny["P@10 95% CI"][0] <= tiny["metrics"]["P@10"]
    assert "P@10 - BM25, 95% CI" in (tmp_path / "a" / "t2mr.md").read_text()
    per_request = np.asarray(tiny["P@10 per request"])
    assert tiny["requests vs BM25"] == {  # BM25 hits both requests with P@10 1
        "hit": int((per_request > 0).sum()), "reference hit": 2, "both": int((per_request > 0).sum()),
        "P@10 sum where only this hits": 0.0, "P@10 sum where only the reference hits": float(
            np.round(2 - (per_request > 0).sum(), 4))}
    assert "Per request against BM25 (BM25 gets a relevant track into the top 10 for 2 requests)" in \
        (tmp_path / "a" / "t2mr.md").read_text()
    assert (tmp_path / "a" / "t2mr.md").read_text().count("|") > 10 and (tmp_path / "a" / "t2mr_precision.png").exists()
    merged = run(T2MRConfig(run_dir=cfg.run_dir, playlists=cfg.playlists, out_dir=str(tmp_path / "b"),
                            baselines=[], merge=[str(tmp_path / "a" / "t2mr.json")], k=10))
    for name in expected:
        assert merged["systems"][name]["metrics"] == pytest.approx(systems[name]["metrics"])
    np.testing.assert_array_equal(merged["query_texts"], result["query_texts"])


def test_saved_generations_score_like_the_bundle_and_split_seen_requests(bundle, tmp_path):
    root, db = bundle
    save_bundle_extras(root / "model", root / "tok", system_prompt="you are a music recommender",
                       train_requests=["Rock!", "play some pop"])  # "rock" is a seen request, "jazz" is not
    cfg = T2MRConfig(run_dir=str(root / "run"), playlists=str(root / "run" / "eval.jsonl"),
                     out_dir=str(tmp_path / "live"), bundles=[f"Tiny={root / 'model'}"], baselines=["bm25"],
                     num_beams=4, k=10, save_generations=True, rankings=["match", "beams"], beams_used=[1],
                     unimodal=False, weights=["BMonly:BM=1"])
    live = run(cfg)
    names = set(live["systems"])
    assert {"Tiny w/o modality selection", "Tiny w/o modality selection [beams, 4 beams]",
            "Tiny w/o modality selection [match, 1 beams]", "Tiny weights BMonly", "BM25"} <= names
    s = live["systems"]["Tiny w/o modality selection"]
    assert s["seen"] == [True, False] and s["seen requests"] == 1 and s["unseen requests"] == 1
    assert live["systems"]["BM25"]["P@10 seen"] == pytest.approx(1.0)  # baselines split the same way
    d = live["diagnostics"]["Tiny"]
    assert 0 <= d["ceiling_expected_member_P@10"] <= d["ceiling_best_member_P@10"] <= 1
    assert d["ceiling_best_member_P@10"] > 0 and 1 <= d["distinct_top_beam_tracks"] <= 2
    assert set(d["level1_agreement"]) == set(db.modalities)
    gen_file = tmp_path / "live" / "generations_Tiny.json"
    offline = run(T2MRConfig(run_dir=cfg.run_dir, playlists=cfg.playlists, out_dir=str(tmp_path / "offline"),
                             generations=[f"Tiny={gen_file}"], baselines=["none"], rankings=["match", "beams"],
                             beams_used=[1, 16], unimodal=False, weights=["BMonly:BM=1"], num_beams=4))
    assert set(offline["systems"]) == names - {"BM25"}  # 16 is above the 4 beams saved: no row of its own
    for name, system in offline["systems"].items():
        assert system["metrics"] == pytest.approx(live["systems"][name]["metrics"]), name
        assert system["ranked_track_ids"] == live["systems"][name]["ranked_track_ids"]
    assert "P@10 unseen" in (tmp_path / "offline" / "t2mr.md").read_text()
    # a near-zero beam temperature leaves only the top beam: the merged ranking is the one-beam ranking
    sharp = run(T2MRConfig(run_dir=cfg.run_dir, playlists=cfg.playlists, out_dir=str(tmp_path / "sharp"),
                           generations=[f"Tiny={gen_file}"], baselines=["none"], beams_used=[1], unimodal=False,
                           num_beams=4, beam_temperature=1e-6, diagnostics=False))["systems"]
    assert sharp["Tiny w/o modality selection"]["ranked_track_ids"] == \
        sharp["Tiny w/o modality selection [match, 1 beams]"]["ranked_track_ids"]
    assert offline["systems"]["Tiny w/o modality selection"]["ranked_track_ids"] != \
        offline["systems"]["Tiny w/o modality selection [match, 1 beams]"]["ranked_track_ids"]
    # the neighbours ranking reads the run's embeddings and ranks as the Retriever does with them
    import shutil

    from inference.neighbours import ContentSpace
    from inference.retrieval import Retriever
    from tests.eval.helpers import write_store

    run_dir = tmp_path / "run_with_embeddings"
    shutil.copytree(cfg.run_dir, run_dir)
    rng = np.random.default_rng(0)
    write_store(run_dir, db.track_ids, {m: (rng.normal(size=(db.num_tracks, 5)), rng.random(db.num_tracks) < 0.9)
                                        for m in db.modalities})
    near = run(T2MRConfig(run_dir=str(run_dir), playlists=cfg.playlists, out_dir=str(tmp_path / "near"),
                          generations=[f"Tiny={gen_file}"], baselines=["none"], rankings=["neighbours"],
                          unimodal=False, num_beams=4, diagnostics=False, tune_weights=True))["systems"]
    retriever = Retriever(db, content=ContentSpace.from_run(run_dir, db.track_ids, db.modalities))
    generations = json.loads(gen_file.read_text())["generations"]
    expected = [[db.track_ids[r] for r in retriever.retrieve(g["beams"], g["logprobs"], k=10,
                                                             ranking="neighbours").rows] for g in generations]
    assert near["Tiny w/o modality selection"]["ranking"] == "neighbours"
    assert near["Tiny w/o modality selection"]["ranked_track_ids"] == expected
    assert near["Tiny w/o modality selection"]["ranked_track_ids"] != \
        offline["systems"]["Tiny w/o modality selection"]["ranked_track_ids"]
    assert "Tiny tuned weights" in near


def test_fused_system_is_the_reciprocal_rank_fusion_of_the_deep_lists(bundle, tmp_path):
    from inference.retrieval import reciprocal_rank_fusion

    root, _ = bundle
    base = dict(run_dir=str(root / "run"), playlists=str(root / "run" / "eval.jsonl"),
                bundles=[f"Tiny={root / 'model'}"], baselines=["bm25"], num_beams=2, k=10,
                unimodal=False, diagnostics=False)
    plain = run(T2MRConfig(out_dir=str(tmp_path / "plain"), **base))["systems"]
    parts = ["Tiny w/o modality selection", "BM25"]
    fused = run(T2MRConfig(out_dir=str(tmp_path / "fused"), fuse=[" + ".join(parts)], fuse_depth=20, rrf_k=5,
                           **base))["systems"]
    label = "RRF(Tiny w/o modality selection, BM25)"
    assert set(fused) == set(plain) | {label}
    assert fused[label]["kind"] == "fusion" and fused[label]["systems"] == parts
    for name in parts:  # ranked 20 deep for the fusion; scored at 10 as before
        assert fused[name]["metrics"] == pytest.approx(plain[name]["metrics"])
        assert all(a[:10] == b for a, b in zip(fused[name]["ranked_track_ids"], plain[name]["ranked_track_ids"]))
        assert max(len(r) for r in fused[name]["ranked_track_ids"]) == 20, name
    expected = [reciprocal_rank_fusion([fused[p]["ranked_track_ids"][i] for p in parts], rrf_k=5)[:20]
                for i in range(2)]
    assert fused[label]["ranked_track_ids"] == expected
    relevant = [{f"t{i}" for i in range(1, 40, 2)}, {f"t{i}" for i in range(0, 40, 2)}]
    p10 = np.mean([len(set(r[:10]) & rel) / 10 for r, rel in zip(expected, relevant)])
    assert fused[label]["metrics"]["P@10"] == pytest.approx(p10)
    assert label in (tmp_path / "fused" / "t2mr.md").read_text()
    with pytest.raises(ValueError, match="unknown: \\['Dense \\(MiniLM\\)'\\]"):
        run(T2MRConfig(out_dir=str(tmp_path / "bad"), fuse=["BM25 + Dense (MiniLM)"], **base))


def test_tune_weights_finds_the_modality_that_scores():
    from eval.t2mr import tune_weights

    result = tune_weights(lambda w: w["ST"] - 0.1 * w["BM"], ["BM", "ST"], [0.0, 1.0, 4.0])
    assert result["weights"] == {"BM": 0.0, "ST": 4.0} and result["objective"] == pytest.approx(4.0)


def test_request_overlap_counts_where_each_system_wins():
    from eval.t2mr import request_overlap

    model = np.array([0.3, 0.0, 0.1, 0.0, 0.5])
    bm25 = np.array([0.0, 1.0, 0.2, 0.0, 0.0])
    assert request_overlap(model, bm25) == {"hit": 3, "reference hit": 2, "both": 1,
                                            "P@10 sum where only this hits": 0.8,
                                            "P@10 sum where only the reference hits": 1.0}


def test_neighbours_ranking_weighs_the_content_a_joint_group_stands_for(tmp_path):
    """A FusID-style token DB has one joint code group (FU) standing for BM and SC: the neighbours ranking must apply
    weights given per content modality (here BM only), not resolve them over FU alone (which zeroed every score)."""
    from inference.neighbours import ContentSpace, content_modalities
    from inference.retrieval import Retriever
    from tests.eval.helpers import write_store
    from tokenizer_ext.token_db import TokenDB

    rng = np.random.default_rng(3)
    n = 60
    db = TokenDB([f"t{i}" for i in range(n)], {"FU": (4, 8)},
                 {"FU": np.stack([rng.integers(0, 4, n), rng.integers(0, 8, n)], axis=1)}, tokenizer="fusid",
                 meta={"input_modalities": ["BM", "SC"]}).with_disambiguation()
    db.save(tmp_path / "tok")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pq.write_table(pa.table({"track_id": db.track_ids, "title": [f"song {i}" for i in range(n)],
                             "artist": [f"band {i % 5}" for i in range(n)], "album": ["album"] * n}),
                   run_dir / "catalog.parquet")
    write_store(run_dir, db.track_ids, {m: (rng.normal(size=(n, 4)), np.ones(n, bool)) for m in ("BM", "SC")})
    playlists = [{"playlist_id": "p1", "name": "first", "tracks": [f"t{i}" for i in range(0, 30, 3)]},
                 {"playlist_id": "p2", "name": "second", "tracks": [f"t{i}" for i in range(30, 60, 3)]}]
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(p) + "\n" for p in playlists))
    generations = [{"beams": [db.tokens(r) for r in rows], "logprobs": [-0.1, -1.5]} for rows in ((40, 7), (12, 55))]
    gen_file = tmp_path / "generations.json"
    gen_file.write_text(json.dumps({"queries": ["first", "second"], "token_db_dir": str(tmp_path / "tok"),
                                    "num_beams": 2, "generations": generations}))
    systems = run(T2MRConfig(run_dir=str(run_dir), playlists=str(run_dir / "eval.jsonl"), out_dir=str(tmp_path / "out"),
                             generations=[f"Fu={gen_file}"], baselines=["none"], rankings=["neighbours"],
                             unimodal=False, num_beams=2, diagnostics=False, weights=["BMonly:BM=1"]))["systems"]
    retriever = Retriever(db, content=ContentSpace.from_run(run_dir, db.track_ids, content_modalities(db)))
    expected = [[db.track_ids[r] for r in retriever.retrieve(g["beams"], g["logprobs"], {"FU": 1.0, "BM": 1.0},
                                                             k=10, ranking="neighbours").rows] for g in generations]
    assert expected[0] != expected[1] and expected[0] != db.track_ids[:10]  # the requests rank differently
    assert systems["Fu weights BMonly"]["ranked_track_ids"] == expected


def test_scores_at_a_depth_beyond_ten():
    from eval.t2mr import score

    ranked = np.array([list(range(20)), list(range(20, 40))])
    relevant = [[0, 15, 99], [39]]  # request 0: hits at ranks 1 and 16; request 1: a hit at rank 20
    deep, top10 = score(ranked, relevant, 20), score(ranked[:, :10], relevant, 10)
    assert deep["R@20"] == pytest.approx((2 / 3 + 1) / 2) and deep["Hit@20"] == 1.0
    assert top10["R@10"] == pytest.approx(1 / 6) and top10["Hit@10"] == 0.5
    assert deep["P@10"] == top10["P@10"] == pytest.approx(0.05) and "P@20" not in deep


def test_artist_first_variant_leads_every_system_with_its_top_tracks_artist(bundle, tmp_path):
    root, _ = bundle
    res = run(T2MRConfig(run_dir=str(root / "run"), playlists=str(root / "run" / "eval.jsonl"),
                         bundles=[f"Tiny={root / 'model'}"], baselines=["bm25"], num_beams=2, k=10, unimodal=False,
                         diagnostics=False, artist_first=True, fuse_depth=30, out_dir=str(tmp_path / "af")))["systems"]
    catalog = pq.read_table(root / "run" / "catalog.parquet").to_pylist()
    artist = {r["track_id"]: r["artist"] for r in catalog}
    for label in ("Tiny w/o modality selection", "BM25"):
        plain, led = res[label]["ranked_track_ids"], res[f"{label}, artist first"]["ranked_track_ids"]
        assert res[f"{label}, artist first"]["artist_first"] is True
        for p, a in zip(plain, led):
            lead = artist[p[0]]
            n_lead = sum(v == lead for v in artist.values())  # the artist's catalog tracks (17 or 18 of 120)
            front = [t for t in p if artist[t] == lead]
            assert a[:len(front)] == front  # the artist's ranked tracks first, in ranked order
            assert [artist[t] for t in a[:n_lead]] == [lead] * n_lead  # then all its others
            assert a[n_lead:] == [t for t in p if artist[t] != lead][:30 - n_lead]  # then the rest, in order
            assert len(a) == 30 == len(p)


def test_recommender_artist_first_leads_the_answer_with_its_top_artist(bundle):
    root, db = bundle
    catalog = root / "run" / "catalog.parquet"
    plain = Recommender(load_bundle(root / "model"), num_beams=3, catalog=catalog, ranking="beams", hybrid_depth=40)
    led = Recommender(load_bundle(root / "model"), num_beams=3, catalog=catalog, ranking="beams", hybrid_depth=40,
                      artist_first=True)
    deep = plain.recommend(["play some rock"], k=40)[0]
    out = led.recommend(["play some rock"], k=10)[0]
    lead = deep[0]["artist"]
    n_lead = sum(f"band {i % 7}" == lead for i in range(db.num_tracks))
    assert [t["rank"] for t in out] == list(range(1, 11)) and all(t["artist"] == lead for t in out)  # >= 17 tracks
    front = [t["track_id"] for t in deep if t["artist"] == lead]
    assert [t["track_id"] for t in out[:len(front)]] == front[:10]  # the answer's own tracks of the artist first
    filled = [t for t in out if t.get("artist_fill")]
    assert len(filled) == max(0, 10 - len(front)) and all(t["score"] == 0 for t in filled) and n_lead >= 17
    assert [t["track_id"] for t in filled] == sorted(t["track_id"] for t in filled)  # then by track ID
    with pytest.raises(RequestError, match="artist"):
        Recommender(load_bundle(root / "model"), num_beams=3, artist_first=True)
