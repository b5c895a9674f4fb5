"""Outputs of fixed fits, saved or compared to the bit: the check that a refactor changes no number (issue 27).

    python benchmarks/fingerprint.py --save /tmp/before.npz          # at the commit before the change
    python benchmarks/fingerprint.py --compare /tmp/before.npz       # after it: every array equal, or the differences

Fits, with fixed seeds on 900 Image Segmentation rows and 600 Multiple Features rows (half of them missing
modalities): the default ``CalMRLTransformer``, the MLP encoder, the two-component mixture, ``MultiViewPPCA``, and
``MultiViewPPCA`` and the default transformer through ``partial_fit`` in three chunks. For each it keeps
``transform`` of held-out rows, ``impute`` and its standard deviations (and ``score_samples``); one thread.
"""

import argparse
import sys
import warnings

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import numpy as np


def outputs():
    """``{name: array}`` of every fitted model's outputs."""
    import torch

    torch.set_num_threads(1)
    from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
    from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation, load_multiple_features

    out = {}
    for label, data, rows in (("is", load_image_segmentation(), 900), ("mf", load_multiple_features(), 600)):
        X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
        rng = np.random.RandomState(0)
        order = rng.permutation(X.shape[0])
        train, test = X[order[:rows]], X[order[rows : rows + 300]]
        models = {
            "calmrl": CalMRLTransformer(data.modalities, max_epochs=5, random_state=0),
            "mlp": CalMRLTransformer(data.modalities, encoder="mlp", max_epochs=5, random_state=0),
            "mixture": CalMRLTransformer(data.modalities, n_components=2, max_epochs=5, random_state=0),
            "ppca": MultiViewPPCA(data.modalities, random_state=0),
        }
        for name, est in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(train)
            _record(out, f"{label}/{name}", est, test)
        for name, est in (("ppca_partial", MultiViewPPCA(data.modalities, random_state=0)),
                          ("calmrl_partial", CalMRLTransformer(data.modalities, random_state=0))):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for chunk in np.array_split(train, 3):
                    est.partial_fit(chunk)
            _record(out, f"{label}/{name}", est, test)
    return out


def _record(out, key, est, X):
    filled, std = est.impute(X, return_std=True)
    out[f"{key}/transform"] = est.transform(X)
    out[f"{key}/impute"] = filled
    out[f"{key}/impute_std"] = std
    out[f"{key}/score_samples"] = est.score_samples(X)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", metavar="NPZ")
    action.add_argument("--compare", metavar="NPZ")
    args = parser.parse_args(argv)
    got = outputs()
    if args.save:
        np.savez_compressed(args.save, **got)
        print(f"saved {len(got)} arrays to {args.save}")
        return 0
    ref = dict(np.load(args.compare))
    differ = 0
    for key in sorted(set(ref) | set(got)):
        if key not in ref or key not in got:
            print(f"{key}: only {'before' if key in ref else 'after'}")
            differ += 1
        elif ref[key].shape != got[key].shape or not np.array_equal(ref[key], got[key]):
            same_shape = ref[key].shape == got[key].shape
            gap = float(np.max(np.abs(ref[key] - got[key]))) if same_shape else float("nan")
            print(f"{key}: differs (shape {ref[key].shape} -> {got[key].shape}, max |difference| {gap:.3g})")
            differ += 1
    print(f"{len(got)} arrays, {differ} differ" + ("" if differ else ": every output is equal to the bit"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
