"""experiments/gpu.py on the CPU: the bundle round-trips and stays under the travel limit, the checkpoint parts
join back into the same weights, a study fits its steps to the time left, and (slow) the steps
run end to end on a tiny model and file what they wrote, so a GPU's minutes find no bug."""

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import gpu
from conftest import REPO
from data import Example, UsageError
from rift import load_classifier, predict_proba


@pytest.fixture
def tiny_data(tmp_path):
    """A data folder with a few rows of each file the check step bundles."""
    folder = tmp_path / "data"
    for relative in gpu.STEP_DATA["check"]:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"good": ["fine"]}' if relative.endswith(".json") else "sentence\tlabel\na fine film\t1\n")
    return folder


def test_the_bundle_round_trips_fp16_weights_and_the_data(tiny_model, tiny_data, tmp_path):
    bundle = tmp_path / "bundle"
    gpu.make_bundle(bundle, ("check",), str(tiny_model), str(tiny_data))
    packed = load_file(bundle / "model" / "model.safetensors")
    assert {v.dtype for v in packed.values() if v.is_floating_point()} == {torch.float16}
    model, data = gpu.unpack_bundle(bundle, tmp_path / "work")
    original, unpacked = load_file(tiny_model / "model.safetensors"), load_file(f"{model}/model.safetensors")
    assert unpacked.keys() == original.keys()
    for key, value in original.items():
        assert unpacked[key].dtype == value.dtype
        assert torch.equal(unpacked[key], value.half().to(value.dtype) if value.is_floating_point() else value)
    for relative in gpu.STEP_DATA["check"]:
        assert (tiny_data / relative).read_bytes() == (tmp_path / "work" / "data" / relative).read_bytes()
    assert data == str(tmp_path / "work" / "data")


def test_a_bundle_over_the_travel_limit_is_refused_and_removed(tiny_model, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "TRAVEL_LIMIT", 2**20)  # the tracked tree alone is larger
    with pytest.raises(UsageError, match="over the 1 MiB that travel"):
        gpu.make_bundle(tmp_path / "bundle", ("check",), str(tiny_model), str(tiny_data))
    assert not (tmp_path / "bundle").exists()


def test_unpacking_a_folder_that_is_no_bundle_says_so(tmp_path):
    with pytest.raises(UsageError, match="make gpu-bundle"):
        gpu.unpack_bundle(tmp_path, tmp_path / "work")


def test_the_checkpoint_parts_join_into_the_same_classifier(tiny_classifier, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "PART_SIZE", 50_000)  # several parts from a tiny model
    returned = tmp_path / "returned"
    returned.mkdir()
    parts = gpu.split_checkpoint(tiny_classifier, returned, "snli-rift")
    assert len(parts) > 1 and all(p.stat().st_size <= 50_000 for p in parts)
    with tarfile.open(returned / "snli.tar.xz", "w:xz") as tar:  # the records carry the small files
        for path in tiny_classifier.iterdir():
            if path.suffix != ".safetensors":
                tar.add(path, arcname=f"rift/model/{path.name}")
    target = gpu.join_checkpoint(returned, tmp_path / "joined")
    joined, original = load_classifier(str(target))[0].state_dict(), load_classifier(str(tiny_classifier))[0].state_dict()
    assert all(torch.equal(joined[k], original[k].half().float()) for k in original)
    with pytest.raises(UsageError, match="exists already"):
        gpu.join_checkpoint(returned, target)
    parts[-1].write_bytes(parts[-1].read_bytes()[:-10])  # a part cut short
    with pytest.raises(UsageError, match="do not join"):
        gpu.join_checkpoint(returned, tmp_path / "again")


def test_recheck_counts_the_clean_predictions_that_agree_and_the_successes_that_still_flip(tiny_classifier, tmp_path):
    model, tokenizer = load_classifier(str(tiny_classifier))
    model.eval()
    texts = ["a fine film", "the plot was dull", "good acting", "a bad story"]
    predicted = predict_proba(model, tokenizer, [Example(tuple(t.split()), 0) for t in texts], 64).argmax(-1).tolist()
    # a success the model really flips (its label is not what it predicts for the perturbed text), a
    # success it does not, a failure; one clean prediction recorded wrongly
    records = [{"status": "successful", "original": texts[0], "perturbed": texts[1], "label": 1 - predicted[1],
                "context": None, "pred_before": predicted[0]},
               {"status": "successful", "original": texts[1], "perturbed": texts[2], "label": predicted[2],
                "context": None, "pred_before": predicted[1]},
               {"status": "failed", "original": texts[3], "perturbed": texts[3], "label": predicted[3], "context": None,
                "pred_before": 1 - predicted[3]}]
    run = tmp_path / "run"
    (run / "eval" / "pwws").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"resolved": {"max_length": 64}}))
    (run / "eval" / "pwws" / "adversarial.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(UsageError, match="no run records"):
        gpu.recheck(tiny_classifier, tmp_path)
    assert gpu.recheck(tiny_classifier, run) == [{"evaluation": "pwws", "examples": 3, "clean_predictions_agreeing": 2,
                                                  "successes": 2, "successes_still_flipping": 1}]


def test_the_records_leave_the_checkpoints_behind(tmp_path):
    root = tmp_path / "runs"
    for relative in ("rift/config.json", "rift/best/model.safetensors", "rift/last/state.json", "rift/eval/ascc/results.json"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("{}")
    gpu.pack_records(root, tmp_path / "records.tar.xz")
    with tarfile.open(tmp_path / "records.tar.xz") as tar:
        assert sorted(tar.getnames()) == ["rift/config.json", "rift/eval/ascc/results.json"]


@pytest.mark.parametrize("seconds, step_s, expected", [(10_000, 0.1, 2000), (380, 0.1, 2000), (250, 0.1, 1000),
                                                      (100, 0.1, 4)])
def test_a_study_trains_the_steps_that_fit_and_no_more_than_its_own(seconds, step_s, expected):
    study = gpu.fitted_steps(gpu.GPU_SNLI, seconds, step_s)
    flags = dict(zip(study.train[::2], study.train[1::2]))
    assert int(flags["--max-steps"]) == expected
    assert int(flags["--eval-every"]) == int(flags["--save-every"]) == expected // 4
    assert replace(study, train=gpu.GPU_SNLI.train) == gpu.GPU_SNLI  # nothing else changed


def test_every_study_step_has_its_reserve_and_keeps_it_free():
    assert set(gpu.STUDY_RESERVE_S) == set(gpu.STUDY_STEPS)
    for study in gpu.STUDY_STEPS.values():
        flags = gpu.fitted_steps(study, gpu.STUDY_RESERVE_S[study.name] + 13, 1.0).train
        assert int(flags[flags.index("--max-steps") + 1]) == 8  # 13 s at 1.3 s a step beside the others: 10, in fours


def test_the_sst2_step_trains_two_epochs_of_every_sentence_and_attacks_the_pilots_sentences_first(shared_data):
    import attacks
    import pilot
    from data import TASKS, load_split

    flags = dict(zip(gpu.GPU_SST2.train[::2], gpu.GPU_SST2.train[1::2]))
    train = load_split(TASKS["sst2"], "train", str(shared_data))
    assert int(flags["--max-train-examples"]) == len(train)
    assert int(flags["--max-steps"]) * int(flags["--batch-size"]) == pytest.approx(2 * len(train), abs=64)
    assert int(flags["--max-steps"]) == 4 * int(flags["--eval-every"])
    sizes = ("--max-train-examples", "--max-steps", "--eval-every", "--save-every")
    recipe = dict(zip(pilot.PILOT.train[::2], pilot.PILOT.train[1::2]))  # the pilot's, but for the sizes
    assert {k: v for k, v in flags.items() if k not in sizes} == {k: v for k, v in recipe.items() if k not in sizes}
    assert [(run.name, run.method, run.flags) for run in gpu.GPU_SST2.runs] == [
        ("adv", "adv", ()), ("freelb", "freelb", ()), ("rift", "rift", ("--alpha", "0.1"))]
    test = load_split(TASKS["sst2"], "test", str(shared_data))  # 1,000 drawn: the pilot's 500 come first
    assert attacks.sample_examples(test, 1000, 42)[:500] == attacks.sample_examples(test, 500, 42)


@pytest.mark.slow
def test_the_steps_run_end_to_end_and_file_what_they_bring_back(shared_data, tmp_path):
    """check and snli on a tiny model, as on the GPU machine; then `gpu file` writes the pages and
    `gpu join` makes a model folder that evaluate.py attacks."""
    out = tmp_path / "out"

    def gpu_script(*args):
        result = subprocess.run([sys.executable, "experiments/gpu.py", *map(str, args)], cwd=REPO, capture_output=True,
                                text=True, env={**os.environ, "RIFT_DATA": str(shared_data)})
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
        return result

    gpu_script("run", "check", "snli", "--smoke", "--out", out, "--deadline-s", 3600)
    assert sorted(p.name for p in out.iterdir()) == ["check.json", "check.tar.xz", "snli-rift.part00", "snli.json",
                                                     "snli.tar.xz"]
    check = json.loads((out / "check.json").read_text())
    failed = {name: c.get("output_tail", "")[-500:] for name, c in check["checks"].items() if not c["ok"]}
    assert not failed, failed
    assert {row["method"] for row in check["training_speed"]} == {"standard", "adv", "rift", "freelb"}
    assert {(row["attack"], row["examples_at_once"]) for row in check["attack_speed"]} == {
        ("pwws", 32), ("pwws", 1), ("ascc", 32), ("ascc", 1)}
    gpu_script("file", out, "--results-dir", tmp_path / "results", "--runs", tmp_path / "runs")
    assert "adv" in (tmp_path / "results" / "gpu" / "snli.md").read_text()
    assert "resume-matches" in (tmp_path / "results" / "gpu" / "check.md").read_text()
    assert (tmp_path / "results" / "gpu" / "snli" / "rift" / "eval" / "ascc" / "results.json").is_file()
    gpu_script("join", out, tmp_path / "model")
    assert "still flipping here" in gpu_script("recheck", tmp_path / "model", tmp_path / "runs" / "gpu" / "snli" / "rift").stdout
    result = subprocess.run([sys.executable, "evaluate.py", "--checkpoint", str(tmp_path / "model"), "--task", "snli",
                             "--attack", "none", "--num-examples", "4", "--out", str(tmp_path / "eval")], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "RIFT_DATA": str(shared_data)})
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_the_sst2_step_runs_its_three_methods_end_to_end_and_files_them(shared_data, tmp_path):
    out, env = tmp_path / "out", {**os.environ, "RIFT_DATA": str(shared_data)}
    for args in (["run", "sst2", "--smoke", "--out", out],
                 ["file", out, "--results-dir", tmp_path / "results", "--runs", tmp_path / "runs"]):
        result = subprocess.run([sys.executable, "experiments/gpu.py", *map(str, args)], cwd=REPO, capture_output=True,
                                text=True, env=env)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["sst2-rift.part00", "sst2.json", "sst2.tar.xz"]
    page = (tmp_path / "results" / "gpu" / "sst2.md").read_text()
    assert "SST-2 on a GPU" in page and "freelb" in page and "genetic" in page
    for run in ("adv", "freelb", "rift"):
        for attack in ("pwws_counterfitted", "ascc", "genetic"):
            assert (tmp_path / "results" / "gpu" / "sst2" / run / "eval" / attack / "adversarial.jsonl").is_file()


def test_a_study_fitted_without_check_takes_the_committed_speeds_or_says_what_it_needs(tmp_path, monkeypatch):
    speeds = {"training_speed": [{"adversary": "ascc", "method": "rift", "s_per_step": 0.3},
                                 {"adversary": "ascc", "method": "rift", "s_per_step": 0.2},
                                 {"adversary": "pgd", "method": "rift", "s_per_step": 0.1}]}
    assert gpu.quiet_step_s(speeds) == 0.2
    monkeypatch.setattr(gpu, "REPO", tmp_path)
    with pytest.raises(UsageError, match="run check in the same command"):
        gpu.quiet_step_s(None)
    (tmp_path / "results" / "gpu").mkdir(parents=True)
    (tmp_path / "results" / "gpu" / "check.json").write_text(json.dumps(speeds))
    assert gpu.quiet_step_s(None) == 0.2
