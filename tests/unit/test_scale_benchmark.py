"""The atlas-scale benchmark's plumbing (not its figures): which processes it follows as jobs, and
the target files that replace Snakemake's `--until`."""

import pytest
import yaml

from deconflow.benchmarks.scale import UNTIL_RULES, bench_config, job_name, new_job, until_targets
from deconflow.peers import PROJECT_ROOT


def test_peer_scripts_are_followed_as_jobs_but_not_the_shell_that_starts_them():
    peer = [".peers/rectangle/venv/bin/python", "workflow/scripts/peer_rectangle.py", "signature", "--reference", "r.h5ad",
            "--out", "s.pkl", "--log", "logs/scale300000/peer_signature/rectangle.log"]
    job = new_job(peer)
    assert job["script"] == "peer_rectangle" and job_name(job["log"], "scale300000") == "peer_signature/rectangle"
    absolute = peer[:-1] + ["/tmp/x/project/logs/scale300000/peer_deconvolve/dtangle/bulk_daism.log"]
    assert job_name(new_job(absolute)["log"], "scale300000") == "peer_deconvolve/dtangle/bulk_daism"
    assert new_job(["/bin/bash", "-c", " ".join(peer)]) is None
    script = new_job(["/usr/bin/python3", "/p/.snakemake/scripts/tmpab12.peer_reference.py"])
    assert script["script"] == "peer_reference" and script["log"] is None
    assert new_job(["python", "-m", "snakemake", "--cores", "2"]) is None


def test_until_asks_for_the_files_of_those_rules_with_the_default_config_peers_on(tmp_path):
    config = bench_config(PROJECT_ROOT, "scale20000", tmp_path / "reference.h5ad", epochs=1, peer_env_dir=tmp_path / "envs")
    assert config["peers"] == yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text())["peers"]
    assert config["peer_env_dir"] == str(tmp_path / "envs") and list(config["datasets"]) == ["scale20000"]
    targets = until_targets(config, "scale20000", ["fit_baseline", "train_model", "peer_signature", "make_pseudobulk"])
    root = "results/scale20000"
    assert f"{root}/models/nnls/checkpoint_best.pt" in targets and f"{root}/models/hpvade/checkpoint_best.pt" in targets
    assert f"{root}/peers/rectangle/signature.pkl" in targets and f"{root}/pseudobulk/test.h5" in targets
    assert not any("dtangle" in t for t in targets)  # dtangle takes the signature, not cells
    assert len(targets) == len(set(targets))
    assert until_targets(config, "scale20000", ["split_reference"]) == [f"{root}/split/cells.tsv"]
    with pytest.raises(SystemExit, match="unknown rule"):
        until_targets(config, "scale20000", ["evaluate_model"])
    assert set(UNTIL_RULES) >= {"train_model", "fit_baseline", "make_pseudobulk"}


def test_failed_jobs_are_named_from_snakemakes_output():
    from deconflow.benchmarks.scale import failed_jobs

    output = ("Select jobs to execute...\nRuleException:\nCalledProcessError in file \"/p/workflow/rules/peers.smk\", line 140:\n"
              "Command 'set -euo pipefail;  py workflow/scripts/peer_rectangle.py deconvolve --log "
              "logs/scale300000/peer_deconvolve/rectangle/pseudobulk_test.log > x' returned non-zero exit status 1.\n")
    assert failed_jobs(output, "scale300000") == ["peer_deconvolve/rectangle/pseudobulk_test"]
    assert failed_jobs("Finished jobid: 3\n", "scale300000") == []
