"""Rectangle (rectanglepy==1.7.0) as a deconflow peer.

Runs with the interpreter of the peer's own venv (envs/peers/rectangle.txt; deconflow is not
installed there and is never imported). Two steps, both through rectanglepy's public API:

  signature   rectanglepy.pp.build_rectangle_signatures(reference cells, "cell_type", ...)
              on raw counts, once per dataset; pickled.
  deconvolve  rectanglepy.tl.deconvolution(signature, bulks) on samples x genes CPM (Rectangle
              re-normalises each sample to 1e6 itself); raw CSV: samples x Rectangle's columns
              (its cell fractions, with its mRNA-bias correction, and `Unknown`).

`--settings` is a JSON object of keyword arguments for those two functions (config
`peer_settings.rectangle`); `n_cpus` is `--threads`. Any failure prints one line naming the peer,
the input and the log, and exits 1 without writing the output.
"""

import argparse
import inspect
import json
import os
import pickle
import sys


def split_settings(settings, *functions):
    """{function: its keyword arguments from settings}; a key no function takes is an error."""
    out, used = [], set()
    for function in functions:
        names = set(inspect.signature(function).parameters)
        out.append({k: v for k, v in settings.items() if k in names})
        used |= names
    unknown = sorted(set(settings) - used)
    if unknown:
        raise ValueError(f"unknown Rectangle settings {unknown} (peer_settings.rectangle)")
    return out


def write_atomic(path, write):
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["signature", "deconvolve"])
    parser.add_argument("--reference", required=True, help="signature: reference cells h5ad; deconvolve: signature pickle")
    parser.add_argument("--bulk", help="deconvolve: samples x genes CPM h5ad")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--log", default="its log")
    args = parser.parse_args()
    given = args.reference if args.step == "signature" else args.bulk
    try:
        import anndata as ad
        import numpy as np
        import pandas as pd
        import rectanglepy

        settings = json.loads(args.settings)
        build_settings, deconvolution_settings = split_settings(
            {k: v for k, v in settings.items() if k != "advanced_parameters"},
            rectanglepy.pp.build_rectangle_signatures, rectanglepy.tl.deconvolution)
        print(f"rectanglepy {rectanglepy.__version__}, step {args.step}, settings {settings}", file=sys.stderr)
        if args.step == "signature":
            reference = ad.read_h5ad(args.reference)
            advanced = rectanglepy.RectangleAdvancedParameters(**settings.get("advanced_parameters", {}))
            signature = rectanglepy.pp.build_rectangle_signatures(
                reference, "cell_type", n_cpus=args.threads, advanced_parameters=advanced, **build_settings)
            write_atomic(args.out, lambda tmp: pickle.dump(signature, open(tmp, "wb")))
            return
        with open(args.reference, "rb") as fh:
            signature = pickle.load(fh)
        bulk = ad.read_h5ad(args.bulk)
        bulks = pd.DataFrame(np.asarray(bulk.X, dtype=np.float64), index=bulk.obs_names.astype(str),
                             columns=bulk.var_names.astype(str))
        estimates, _ = rectanglepy.tl.deconvolution(signature, bulks, n_cpus=args.threads, **deconvolution_settings)
        failed = estimates.index[estimates.isna().any(axis=1)].tolist()
        if failed:  # Rectangle logs a per-sample failure and returns NaN for it
            raise RuntimeError(f"Rectangle could not deconvolve samples {failed[:5]} ({len(failed)} of {len(estimates)})")
        estimates.index.name = "sample_id"
        write_atomic(args.out, lambda tmp: estimates.to_csv(tmp, float_format="%.8g"))
    except Exception as exc:  # one line for the user; the traceback stays in the log
        import traceback

        traceback.print_exc()
        print(f"peer rectangle failed ({args.step}) on {given}: {type(exc).__name__}: {exc} (log: {args.log})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
