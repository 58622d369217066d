"""bench.t2mr_data: every request file of a run is built without the run's held-out playlist names."""

import json

import bench.t2mr_data as t2mr_data


def test_request_files_drop_the_held_out_names(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "splits" / "seen").mkdir(parents=True)
    (run / "splits" / "playlists_train.jsonl").write_text("")
    (run / "splits" / "seen" / "playlists_eval.jsonl").write_text("")
    configs = {}

    def fake_dqt_run(cfg):  # records each file's options instead of writing requests
        configs[cfg.out_dir.split("/")[-1]] = cfg
        out = tmp_path / "run" / "dqt" / cfg.out_dir.split("/")[-1]
        out.mkdir(parents=True)
        (out / "dqt_manifest.json").write_text(json.dumps({"counts": {"rows": 1}}))

    monkeypatch.setattr(t2mr_data, "dqt_run", fake_dqt_run)
    counts = t2mr_data.build_requests(t2mr_data.T2MRDataConfig(csv="unused.csv"), run)
    held_out = str(run / "splits" / "playlists_eval.jsonl")
    # basic and rich are the held-out-track files of round 1 (their own track split); every other file is a
    # request source of the recipes, and none may hold a held-out playlist's name
    assert {k for k, c in configs.items() if c.exclude_requests == held_out} == \
        {"playlists", "basic_all", "artist", "album", "artist2", "album2", "era", "mention"}
    assert configs["album2"].num_queries == 2 and configs["album2"].intents == "album"
    assert configs["playlists"].mode == "playlists" and counts["playlists"] == 1
