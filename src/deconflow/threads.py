"""Thread counts of the numerical work, so that the written numbers never depend on the machine.

Multi-threaded BLAS (OpenBLAS, MKL), OpenMP and torch's intra-op pool split a reduction (a matrix
product, a sum over genes) into per-thread partial sums and add them up; with another number of
threads the partial sums, and so the last bits of the result, differ. Snakemake starts each job
with ``OMP_NUM_THREADS`` etc. set to the rule's ``threads`` (1 here) while a command-line run uses
every core, so the same checkpoint gave the rule and ``deconflow deconvolve`` different bytes.

Every entry point that writes numbers (each workflow script through
:func:`deconflow.logs.script_logging`, the CLI, :func:`deconflow.deconvolve.deconvolve_file`,
:func:`deconflow.evaluation.evaluate_checkpoint`) runs its numerical work inside
:func:`fixed_threads`: BLAS/OpenMP pools (through ``threadpoolctl``) and torch's intra-op pool are
set to :data:`NUMERICAL_THREADS` for its duration, whatever the environment says. Training is the
exception: it sets torch to ``train.num_threads`` (recorded in the checkpoint and the training log)
while BLAS stays at :data:`NUMERICAL_THREADS`; same thread count ⇒ same checkpoint bytes.

Cost: inference and the NNLS fits are small (a default-run ``deconvolve`` job takes a few seconds),
so one thread costs little wall time; see docs/reproducibility.md ("Same numbers on every machine").
"""

from __future__ import annotations

import contextlib
import functools

#: threads of every numerical pool outside training (BLAS, OpenMP, torch intra-op)
NUMERICAL_THREADS = 1


@contextlib.contextmanager
def fixed_threads(threads: int = NUMERICAL_THREADS, torch_threads: int | None = None):
    """Run the enclosed numerical work on a fixed number of threads; restore the previous pools after.

    Args:
        threads: threads of the BLAS / OpenMP pools of numpy, scipy and scikit-learn (set through
            ``threadpoolctl.threadpool_limits``, which also covers pools already started).
        torch_threads: torch intra-op threads (``torch.set_num_threads``); ``threads`` when None.

    Nesting is allowed: an inner call wins until it exits.
    """
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    try:
        with threadpool_limits(limits=int(threads)):
            # after the limits: torch's pool is OpenMP's, which threadpool_limits sets too
            torch.set_num_threads(int(torch_threads or threads))
            yield
    finally:
        torch.set_num_threads(previous)


def with_fixed_threads(func):
    """Decorator: ``func`` runs inside :func:`fixed_threads` (:data:`NUMERICAL_THREADS`)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with fixed_threads():
            return func(*args, **kwargs)

    return wrapper
