"""Numerical work runs on a fixed thread count, whatever the environment or the caller set:
the written numbers then cannot depend on the machine's cores (deconflow.threads)."""

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from deconflow import cli
from deconflow.deconvolve import deconvolve_file
from deconflow.logs import script_logging
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.threads import NUMERICAL_THREADS, fixed_threads

CALLER_THREADS = 2  # what a user's shell on a 2-core machine gives torch and BLAS


def pools() -> dict:
    """Thread count of torch's intra-op pool and of every BLAS / OpenMP pool loaded."""
    return {"torch": torch.get_num_threads(), **{f"{p['internal_api']} {p['filepath']}": p["num_threads"] for p in threadpool_info()}}


@pytest.fixture
def caller_threads():
    """The caller's pools at CALLER_THREADS (as OMP_NUM_THREADS=2 would set them), restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(CALLER_THREADS)
    with threadpool_limits(limits=CALLER_THREADS):
        yield
    torch.set_num_threads(previous)


@pytest.fixture
def recording_checkpoint(tmp_path, monkeypatch):
    """An NNLS checkpoint whose predict records the thread pools it runs under, and a bulk file."""
    genes = [f"g{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    signature = pd.DataFrame(rng.gamma(1.0, 100.0, size=(40, 3)), index=genes, columns=["A", "B", "C"])
    path = tmp_path / "nnls.pt"
    save_checkpoint(NNLSModel(signature).checkpoint({}), path)
    bulk = pd.DataFrame(signature.to_numpy() @ [[0.2, 0.5], [0.3, 0.25], [0.5, 0.25]], index=genes, columns=["s1", "s2"])
    bulk_path = tmp_path / "bulk.tsv"
    bulk.rename_axis("gene").to_csv(bulk_path, sep="\t")
    seen = []
    original = NNLSModel.predict_partial

    def recording(self, features):
        seen.append(pools())
        return original(self, features)

    monkeypatch.setattr(NNLSModel, "predict_partial", recording)
    return path, bulk_path, seen


def assert_fixed(seen):
    assert seen, "the model was never called"
    for counts in seen:
        assert set(counts.values()) == {NUMERICAL_THREADS}, counts


def test_fixed_threads_sets_and_restores_every_pool(caller_threads):
    with fixed_threads():
        assert set(pools().values()) == {NUMERICAL_THREADS}
        with fixed_threads(1, torch_threads=3):  # training: torch at num_threads, BLAS at 1
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == NUMERICAL_THREADS
    assert torch.get_num_threads() == CALLER_THREADS
    assert set(pools().values()) == {CALLER_THREADS}


def test_deconvolve_file_runs_on_the_fixed_thread_count(caller_threads, recording_checkpoint, tmp_path):
    model, bulk, seen = recording_checkpoint
    table = deconvolve_file(model, bulk, tmp_path / "p.csv", min_overlap=10)
    assert_fixed(seen)
    np.testing.assert_allclose(table.loc["s1"].to_numpy(), [0.2, 0.3, 0.5], atol=1e-8)  # the fit itself is unchanged
    assert torch.get_num_threads() == CALLER_THREADS  # the caller's pools are given back


def test_cli_and_workflow_scripts_run_on_the_fixed_thread_count(caller_threads, recording_checkpoint, tmp_path):
    model, bulk, seen = recording_checkpoint
    assert cli.main(["deconvolve", "--model", str(model), "--bulk", str(bulk), "--out", str(tmp_path / "c.csv"), "--min-overlap", "10"]) == 0
    assert_fixed(seen)
    seen.clear()
    with script_logging(tmp_path / "rule.log"):  # every workflow script's body runs in it
        seen.append(pools())
    assert_fixed(seen)
