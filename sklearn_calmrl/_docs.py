"""The parameter and attribute descriptions both estimators' docstrings share (numpydoc), written once, and the
function that puts them (or another table, as the data set loaders' own) in place."""

import re

__all__ = ["SHARED_DOCS", "shared_docs"]

# The descriptions both estimators' docstrings share, put in place of a line ``{name}`` by :func:`shared_docs`
SHARED_DOCS = {
    'random_state': """\
random_state : int, RandomState instance or None, default=None
    Seeds every random choice of the fit, each from its own stream
    [design 3.5]: the latent models' start (random loadings where too few rows
    are complete for the PCA start), the mixture's start and component
    selection, the stored rows of the local correction, the principal axes
    of blocks wider than ``max_block_width``, the cross-fitting of
    the imputation weights [design 2.11], the rows of ``variance_explained_``,
    and for :class:`CalMRLTransformer` the encoders' initial weights, the
    early-stopping split and the epochs' shuffles. The caller's global torch
    and numpy RNG states are left unchanged.""",
    'verbose': """\
verbose : int, default=0
    1 prints a line per closed-form fit (EM steps, log-likelihood, time; and
    every 10 s of a long one) and, for :class:`CalMRLTransformer`, one per
    epoch; 2 adds every EM step and the refresh of every epoch.""",
    'components_': """\
components_ : list of ndarray of shape (d_m, latent_dim)
    ``W_m`` per modality of the latent model (of the standardized blocks for
    :class:`MultiViewPPCA`, of the representations for
    :class:`CalMRLTransformer`; ``d_m`` the block's or representation's width).""",
    'means_': """\
means_ : list of ndarray of shape (d_m,)
    ``mu_m`` per modality.""",
    'noise_variance_': """\
noise_variance_ : ndarray of shape (n_modalities,)
    ``s_m^2`` per modality (mean over dimensions for ``noise='diagonal'``).""",
    'noise_variances_': """\
noise_variances_ : list of ndarray of shape (d_m,)
    Per-dimension noise variances. With ``n_components_ > 1`` these four
    attributes gain a leading component axis.""",
    'n_samples_seen_': """\
n_samples_seen_ : int
    Rows that observe at least one modality, in ``fit`` or summed over the
    ``partial_fit`` calls.""",
    'device_': """\
device_ : str
    Device the model computes on (re-resolved when unpickled).""",
    'modalities': """\
modalities : None, list, 1-D ndarray or dict, default=None
    How the columns of ``X`` split into modalities: a list (or 1-D array) of
    block sizes (``[76, 216, 64]``), a list of column-index lists, slices or
    (for DataFrames) column-name lists, or a dict ``{name: columns}``. ``None``
    means one block of all columns. A list of per-modality arrays passed to
    ``fit`` sets the blocks itself (leave ``modalities=None``).""",
    'latent_dim': """\
latent_dim : int or 'auto', default='auto'
    Dimension ``q`` of the shared latent ``b``. A block may be narrower.
    ``'auto'``: ``clip(n_linking // 8, 4, 32)``, below the total width, where
    ``n_linking`` counts the training rows that observe at least two
    modalities (what estimates the cross-modality structure) [design 2.10].""",
    'n_components': """\
n_components : int or 'auto', default=1
    Number of components of the mixture of latent models [design 2.8] (of the
    blocks, and for :class:`CalMRLTransformer` of the representations).
    ``'auto'``: the best of 1, 2, 4, 8, 16 by held-out log-likelihood. More
    than one helps on data whose modalities are linked through discrete
    structure (clusters, classes); see doc/benchmarks.md.""",
    'local_bandwidth': """\
local_bandwidth : float or None, default=0.3
    Bandwidth ``h`` of the local correction of the imputed blocks [design 2.9]:
    the model's imputation plus the kernel-weighted residuals of the training
    rows nearest in the observed blocks, each block's distance in units of its
    noise variance. None switches it off (the model alone). With
    ``n_components > 1`` it corrects the mixture's imputations, with the
    mixture's noise variances. Applies to the calibrated blocks of the
    output and to :meth:`impute`. The fitted model stores those training rows
    (256 weighted representatives, each the mean of a group of similar standardized
    rows; a group may be a single row) for the correction, so a pickle of it
    carries them: fit with ``local_bandwidth=None`` to share a model without
    them.""",
    'max_block_width': """\
max_block_width : int or None, default=256
    The widest a block enters the output [design 5.1]: a block with more
    columns enters as its calibrated standardized columns projected on its
    ``max_block_width`` leading principal axes (computed at fit from the
    training rows that observe it; columns ``<modality>_pc<j>``), a narrower
    block enters whole. So the output stays compact on wide blocks (a
    20,000-gene block gives 256 columns, not 20,000) and keeps every column of
    narrow ones. None keeps every block whole (the input's width).
    :meth:`impute` always returns every column.""",
    'add_indicator': """\
add_indicator : bool, default=True
    Append one column per modality, 1 where the row observes it, to the
    output (as :class:`~sklearn.impute.SimpleImputer`'s ``add_indicator``):
    a downstream linear model can then weigh imputed rows differently.""",
    'noise': """\
noise : {'isotropic', 'diagonal'}, default='isotropic'
    Noise model of the latent models: ``s_m^2 I`` per modality or a diagonal
    per modality (factor analysis) [design 2.4].""",
    'standardize': """\
standardize : bool, default=True
    Standardize every feature on the training rows that observe it.""",
    'partial_nan': """\
partial_nan : {'mean', 'raise'}, default='mean'
    What to do with NaNs inside an otherwise observed block: fill with the
    feature's training mean, or raise a ValueError.""",
    'device': """\
device : {'auto', 'cpu', 'cuda'}, default='auto'
    Where torch computes; 'auto' uses CUDA when available.""",
    'n_jobs': """\
n_jobs : int, default=None
    Number of CPU threads torch may use while fitting and transforming.
    ``None`` means 1 unless in a :func:`joblib.parallel_config` context;
    ``-1`` means all processors. Either is capped at the cores the 1-minute
    load average leaves free (never below one): torch's threads stall
    beside another busy process, so more threads than free cores made fits
    several times slower (see doc/scaling.md, "Busy neighbour"). The caller's own
    torch thread setting is restored afterwards.""",
    'modalities_': """\
modalities_ : dict
    Resolved blocks, ``{name: column indices}``.""",
    'feature_mean_': """\
feature_mean_ : ndarray of shape (n_features,)
    Mean of each feature over the training rows that observe its block
    (0 when ``standardize=False``).""",
    'feature_scale_': """\
feature_scale_ : ndarray of shape (n_features,)
    Standard deviation used to scale each feature (1 when
    ``standardize=False`` or for constant features).""",
    'weights_': """\
weights_ : ndarray of shape (K,)
    Mixing weights of the ``K = n_components_`` components (``[1.]`` for one).""",
    'variance_explained_': """\
variance_explained_ : ndarray of shape (n_modalities, q)
    Share of each standardized block's variance explained by each of the
    ``q = latent_dim_`` latent dimensions of the closed-form model of the
    blocks, as MOFA+ defines it
    (R^2 of ``W_m[:, j] m_ij`` against the block minus its mean, over the
    training rows that observe it; at most 20,000 rows, drawn by
    ``random_state``) [design 2.12]. ``partial_fit`` computes it on the
    first chunk.""",
    'variance_explained_total_': """\
variance_explained_total_ : ndarray of shape (n_modalities,)
    The same for all latent dimensions together.""",
    'n_components_': """\
n_components_ : int
    Number of components (resolved when ``n_components='auto'``).""",
    'latent_dim_': """\
latent_dim_ : int
    Latent dimension (resolved when ``latent_dim='auto'``).""",
    'n_features_in_': """\
n_features_in_ : int
    Number of columns of ``X``.""",
    'feature_names_in_': """\
feature_names_in_ : ndarray of str
    Defined when ``X`` has string column names.""",
}


# the parameters both estimators list last
SHARED_DOCS["runtime"] = "\n".join(SHARED_DOCS[name] for name in ("device", "n_jobs", "random_state", "verbose"))

# the attributes of the samples seen and the input, which both estimators list last
SHARED_DOCS["fitted_input"] = "\n".join(SHARED_DOCS[name] for name in ("n_samples_seen_", "device_", "n_features_in_", "feature_names_in_"))

# the attributes of the fitted model and its input, which both estimators list first
SHARED_DOCS["fitted_model"] = "\n".join(SHARED_DOCS[name] for name in (
    "modalities_", "feature_mean_", "feature_scale_", "components_", "means_", "noise_variance_", "noise_variances_",
    "weights_", "variance_explained_", "variance_explained_total_", "n_components_", "latent_dim_",
))


def shared_docs(obj, docs=SHARED_DOCS):
    """Fill the lines ``{name}`` of the docstring of ``obj`` (a class or a function) with ``docs[name]``, indented as
    the line."""

    def fill(match):
        return "\n".join(match.group(1) + line if line else line for line in docs[match.group(2)].split("\n"))

    obj.__doc__ = re.sub(r"^( *)\{(\w+)\}$", fill, obj.__doc__, flags=re.MULTILINE)
    return obj
