"""experiments/critics.py, pilot.py, snli.py, long.py and stall.py: the studies that give RIFT's term
its chance, end to end on a tiny model, and their definitions checked against train.py and evaluate.py."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import critics
import evaluate
import freelb
import long
import paired
import pilot
import snli
import stall
import train
from conftest import run_cli

STUDIES = {s.name: s for s in (pilot.PILOT, snli.SNLI, long.LONG, freelb.FREELB, *stall.STALLS.values())}


@pytest.mark.parametrize("name", STUDIES)
def test_every_run_of_a_study_is_a_valid_train_py_command_compared_with_a_run_of_the_study(name):
    study = STUDIES[name]
    names = [run.name for run in study.runs]
    assert len(set(names)) == len(names)
    for run in study.runs:
        cfg = train.parse_args([*study.train, "--method", run.method, "--seed", str(run.seed), *run.flags])
        assert cfg.method == run.method and cfg.select_on == "robust" and cfg.adversary == "ascc"
        assert run.against is None or run.against in set(names) - {run.name}
    for flags, examples in study.evaluations.values():
        assert evaluate.parse_args([*flags, "--num-examples", str(examples)]).attack in evaluate.ATTACKS


def test_the_pilot_changes_only_what_it_tests():
    """rift against adv of its seed, differing in rift's own settings only."""
    by_name = {run.name: run for run in pilot.PILOT.runs}
    for run in pilot.PILOT.runs:
        if run.method == "rift":
            adv = by_name[run.against]
            assert adv.method == "adv" and adv.seed == run.seed and not adv.flags
            assert set(run.flags[::2]) <= {"--alpha", "--feature"}


@pytest.fixture(scope="module")
def snli_smoke(shared_data, tmp_path_factory):
    if not (shared_data / "snli" / "train_subset.tsv").is_file():
        pytest.skip(f"no snli/train_subset.tsv under {shared_data}")
    root = tmp_path_factory.mktemp("snli")
    result = run_cli("--smoke", "--runs", root / "runs", "--results-dir", root / "results",
                     "--data-dir", shared_data, script="experiments/snli.py", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


@pytest.mark.slow
def test_the_snli_study_trains_attacks_and_pairs_every_run(snli_smoke):
    root, result = snli_smoke
    report = json.loads((root / "results" / "snli.json").read_text())
    study = replace(snli.SNLI, **snli.SNLI.smoke)
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == [run.name for run in study.runs] == ["rift", "adv", "rift-ramp", "standard"]
    for row in rows.values():
        assert row["config"]["task"] == "snli" and row["config"]["train_file"].endswith("train_subset.tsv")
        assert row["resolved"]["labels"] == ["entailment", "neutral", "contradiction"]
        assert row["resolved"]["select_on"] == "robust" and row["resolved"]["select_attack"] == "ascc"
        assert all(f"{name}_accuracy" in row for name in study.evaluations)
        assert {"cka_mean", "cka_cls", "first_ce", "last_ce"} <= row.keys()
    assert rows["rift"]["config"]["alpha"] == 0.7 and rows["rift"]["config"]["beta"] == 5.0
    assert "last_mi_bound" in rows["rift"] and "last_mi_bound" not in rows["adv"]
    assert rows["rift-ramp"]["alpha_ramp_steps"] == 104 and rows["rift"]["alpha_ramp_steps"] == 0
    assert [(g["run"], g["against"]) for g in report["paired_differences"]] == [
        ("rift", "adv"), ("adv", "standard"), ("rift-ramp", "rift")]
    assert all({"clean", "clean_se", *study.evaluations} <= g.keys() for g in report["paired_differences"])
    assert report["curves"]["rift"] and all(len(point) == 3 for point in report["curves"]["rift"])
    markdown = (root / "results" / "snli.md").read_text()
    assert "python experiments/snli.py" in markdown and "minus" in markdown and "minus" in result.stdout
    assert "0.7, ramp 104" in markdown


@pytest.mark.slow
def test_a_study_skips_what_has_finished(snli_smoke, shared_data):
    root, _ = snli_smoke
    result = run_cli("--smoke", "--runs", root / "runs", "--results-dir", root / "results",
                     "--data-dir", shared_data, script="experiments/snli.py", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    study = replace(snli.SNLI, **snli.SNLI.smoke)
    per_run = 1 + len(study.cka_features) + len(study.evaluations)  # training, CKA, attacks
    assert "+ python" not in result.stdout and result.stdout.count("done already") == len(study.runs) * per_run


@pytest.mark.slow
def test_a_study_rewrites_its_table_from_the_kept_records_on_a_machine_without_its_runs(snli_smoke, shared_data,
                                                                                       tmp_path):
    root, _ = snli_smoke
    shutil.copytree(root / "results", tmp_path / "results")
    assert not list((tmp_path / "results" / "snli").rglob("*.safetensors"))  # records only, no checkpoint
    result = run_cli("--smoke", "--runs", tmp_path / "no-runs", "--results-dir", tmp_path / "results",
                     "--data-dir", shared_data, script="experiments/snli.py", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "+ python" not in result.stdout  # restored from the records, every run reads as finished
    before, after = (json.loads((folder / "snli.json").read_text()) for folder in (root / "results", tmp_path / "results"))
    assert after["rows"] == before["rows"] and after["paired_differences"] == before["paired_differences"]
    assert after["curves"] == before["curves"]


@pytest.mark.slow
def test_the_critics_study_writes_its_table(shared_data, tmp_path):
    result = run_cli("--smoke", "--results-dir", tmp_path, "--data-dir", shared_data, script="experiments/critics.py")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "critic-lr.json").read_text())
    assert [row["lr"] for row in report["rows"]] == list(critics.CRITICS_SMOKE["lrs"])
    assert len(report["bounds"]["cls lr 0.001"]) == critics.CRITICS_SMOKE["steps"]
    assert "critic lr" in (tmp_path / "critic-lr.md").read_text()


def test_a_design_paragraph_states_the_flags_of_the_runs_it_describes():
    design = pilot.PILOT.design.format(**paired.design_settings(pilot.PILOT.train, []))
    assert "4,800 SST-2 training sentences" in design and "150 steps of 32" in design and "steps 50, 100 and 150" in design
    smoke = replace(long.LONG, **long.LONG.smoke)
    design = smoke.design.format(**paired.design_settings(smoke.train, [{"method": "rift", "config": {"critic_lr": 0.01}}]))
    assert "2 steps (0.38 epochs of the 64 sentences)" in design and "steps 1 and 2" in design
    design = snli.SNLI.design.format(**paired.design_settings(snli.SNLI.train, [
        {"method": "rift", "config": {"critic_lr": 0.001, "select_examples": 300, "model": "m"},
         "resolved": {"max_length": 80}}]))
    assert "m, max length 80, 208 steps of 48 (epochs: 1)" in design and "300 dev pairs" in design
    assert "at 0.001" in design


def test_the_stall_studies_keep_the_names_their_runs_are_made_under():
    """stall-snli's runs are trained under these names and flags, and filed under them later."""
    snli_stall, sst2_stall = stall.STALLS["snli"], stall.STALLS["sst2"]
    assert (snli_stall.name, [run.name for run in snli_stall.runs]) == ("stall-snli", ["rift", "rift-pooler", "adv"])
    assert (sst2_stall.name, [run.name for run in sst2_stall.runs]) == ("stall-sst2", ["adv", "rift", "rift-pooler"])
    assert stall.parse_args(["snli"]).runs == Path("runs/stall-snli")
    flags = dict(zip(snli_stall.train[::2], snli_stall.train[1::2]))
    assert (flags["--max-steps"], flags["--eval-every"], flags["--save-every"]) == ("624", "104", "26")
