"""dtangle (dtangle==0.1.1, the Python port of Hunt et al.'s R package) as a deconflow peer.

Runs with the interpreter of the peer's own venv (envs/peers/dtangle.txt; deconflow is not
installed there and is never imported). One step through dtangle's public API:

  deconvolve  dtangle.deconvolut(Y, references, "cell_type", data_type="rna-seq", ...) with
              Y = log2(bulk CPM + 1) (samples x genes) and one pure reference sample per cell
              type, log2(mean CPM of that type's reference cells + 1); dtangle aligns the genes
              itself (their intersection). Raw CSV: samples x types, dtangle's estimates, which are
              mRNA shares in the scale of the profiles (deconflow converts them to cell fractions).

dtangle's estimator works in log2 space (it exponentiates with base 2), hence log2 with a
pseudocount of 1 CPM. `--settings` is a JSON object of keyword arguments for `deconvolut`
(config `peer_settings.dtangle`; default data_type "rna-seq", i.e. its gamma 0.943). Any failure
prints one line naming the peer, the input and the log, and exits 1 without writing the output.
"""

import argparse
import json
import os
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["deconvolve"])
    parser.add_argument("--reference", required=True, help="genes x cell types TSV of mean CPM")
    parser.add_argument("--bulk", required=True, help="samples x genes CPM h5ad")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--log", default="its log")
    args = parser.parse_args()
    try:
        import anndata as ad
        import dtangle
        import numpy as np
        import pandas as pd

        settings = {"data_type": "rna-seq", **json.loads(args.settings)}
        print(f"dtangle {dtangle.__version__}, settings {settings}", file=sys.stderr)
        profiles = pd.read_csv(args.reference, sep="\t", index_col=0)
        references = ad.AnnData(
            X=np.log2(profiles.to_numpy(dtype=np.float64).T + 1.0),
            obs=pd.DataFrame({"cell_type": profiles.columns.astype(str)}, index=profiles.columns.astype(str)),
            var=pd.DataFrame(index=profiles.index.astype(str)),
        )
        bulk = ad.read_h5ad(args.bulk)
        mixtures = ad.AnnData(X=np.log2(np.asarray(bulk.X, dtype=np.float64) + 1.0),
                              obs=pd.DataFrame(index=bulk.obs_names.astype(str)), var=pd.DataFrame(index=bulk.var_names.astype(str)))
        dtangle.deconvolut(mixtures, references, "cell_type", **settings)
        estimates = pd.DataFrame(mixtures.obsm["dtangle"])
        n_markers = dict(zip(mixtures.uns["dtangle"]["cell_types"], mixtures.uns["dtangle"]["n_markers"].tolist()))
        print(f"markers per type: {n_markers}", file=sys.stderr)
        estimates.index.name = "sample_id"
        tmp = f"{args.out}.tmp{os.getpid()}"
        estimates.to_csv(tmp, float_format="%.8g")
        os.replace(tmp, args.out)
    except Exception as exc:  # one line for the user; the traceback stays in the log
        import traceback

        traceback.print_exc()
        print(f"peer dtangle failed ({args.step}) on {args.bulk}: {type(exc).__name__}: {exc} (log: {args.log})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
