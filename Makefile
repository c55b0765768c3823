# Two commands on a fresh machine:  make run  |  make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# Put the venv first on PATH so Snakemake jobs (and SLURM job steps) find its python.
ENV := PATH="$(BIN):$$PATH"
# Where this machine keeps the CPU torch wheel (used if present; harmless otherwise).
WHEELS ?= /opt/wheels
PIP_EXTRA := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)

.PHONY: run test dry-run report bench bench-meth bench-real bench-linear-fit bench-intervals bench-scale bench-devices bench-other-cells lint clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_EXTRA) -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(ENV) snakemake --profile profiles/local

dry-run: $(STAMP)
	$(ENV) snakemake --profile profiles/local -n

test: $(STAMP)
	$(ENV) python -m pytest -q -ra

lint: $(STAMP)
	$(ENV) snakemake --lint
	$(ENV) snakefmt --check Snakefile workflow

report: $(STAMP)
	$(ENV) snakemake --profile profiles/local --report report.html

bench: $(STAMP)
	$(ENV) python -m deconflow.benchmarks.pipeline --pipeline

# Real cohorts not shipped with deconflow (Monaco 2019, SDY67; config/cohorts.yaml), read from here
COHORTS_DIR ?= ../shared/realbulk

# what was tried to make HP-VADE hold up on real bulk, on every cohort with truth (DAISM
# calibration, and Monaco 2019 and SDY67 from $(COHORTS_DIR)) and their mean (needs `make run` first)
bench-real: $(STAMP)
	$(ENV) python -m deconflow.benchmarks.real_bulk --results results/pbmc --dataset pbmc --cohorts-dir $(COHORTS_DIR) --adapt-timing

# methylation models on real bisulfite reads (../shared/methsets, never copied here; needs the
# cfdna checkpoints of `make run`): Roadmap tissues and mixtures, celfie sorted blood cells,
# low-fraction read mixtures (docs/methylation-reads.md)
METHSETS ?= ../shared/methsets
bench-meth: $(STAMP)
	$(ENV) python -m deconflow.benchmarks.methylation --methsets $(METHSETS) --models results/cfdna/models

# seconds for calibrated intervals + qc rows of 2,000 bulk-like samples (needs `make run` first)
bench-intervals: $(STAMP)
	$(ENV) python -m deconflow.benchmarks.intervals --results results/pbmc --models nnls hpvade --n-samples 2000

# memory and time per job of the default configuration (its models and peers) on synthetic
# references of 20k-300k cells (BENCH_SCALE_ARGS="--sizes 1000000 --max-gb 10" for an atlas-sized
# one; "--until make_pseudobulk fit_baseline train_model peer_signature" for the jobs that read the
# reference only; see the module docstring). Peer venvs: the checkout's .peers (built if missing)
bench-scale: $(STAMP)
	$(ENV) nice -n 10 python -m deconflow.benchmarks.scale $(BENCH_SCALE_ARGS)

# training seconds per epoch, peak GPU memory and held-out accuracy of hpvade and scaden on this
# machine (CUDA when torch sees one, with the cross-device checks), default and full configs
# (needs `make run` first: the split and signature; docs/benchmarks.md)
bench-devices: $(STAMP)
	$(ENV) python -m deconflow.benchmarks.devices plan --cap full:hpvade=40 --cap full:scaden=20 --out benchmarks/devices/plan.json
	$(ENV) python -m deconflow.benchmarks.devices run --plan benchmarks/devices/plan.json --work benchmarks/devices/work \
		--out benchmarks/devices/result.json --cross-device

# the linear fit's settings on validation mixtures (clean / shifted) beside every real cohort
# with truth (DAISM, and those of $(COHORTS_DIR)) and their mean (needs `make run` first)
bench-linear-fit: $(STAMP)
	$(ENV) python -m deconflow.benchmarks.linear_fit --results results/pbmc --dataset pbmc --cohorts-dir $(COHORTS_DIR)

# the fraction of cells of no reference type: validation grid, held-out-type test mixtures, real
# PBMC cohorts of $(COHORTS_DIR) (needs `make run` first)
bench-other-cells: $(STAMP)
	$(ENV) python -m deconflow.benchmarks.other_cells --results results/pbmc --reference resources/pbmc/reference.h5ad \
		--realbulk $(COHORTS_DIR)
