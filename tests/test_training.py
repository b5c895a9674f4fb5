"""The bi-step loop: calibration, gradient routing, EM refreshes."""

import numpy as np
import torch

from sklearn_calmrl import CalMRLTransformer
from sklearn_calmrl._alignment import ALIGNMENTS
from sklearn_calmrl._closed_form import ClosedFormModel
from sklearn_calmrl._encoders import LinearEncoder
from sklearn_calmrl._latent import calibrated, init_params, posterior
from sklearn_calmrl._training import Trainer, encode, encode_all
from sklearn_calmrl.datasets import make_latent_modalities


def _setup(n=120, seed=0):
    X, mods, _ = make_latent_modalities(n_samples=n, block_sizes=(6, 5, 4), latent_dim=2, noise=0.2, random_state=seed)
    blocks = [torch.tensor(X[:, cols], dtype=torch.float32) for cols in mods.values()]
    rng = np.random.default_rng(seed)
    observed = torch.tensor(rng.random((n, 3)) < 0.7)
    observed[observed.sum(1) == 0, 0] = True
    torch.manual_seed(seed)
    encoders = torch.nn.ModuleList(LinearEncoder(b.shape[1], 4) for b in blocks)
    for enc, b, m in zip(encoders, blocks, range(3)):
        enc.init_from_data(b[observed[:, m]])
    return blocks, observed, encoders


def test_encode_is_unit_norm_and_zero_when_missing():
    blocks, observed, encoders = _setup()
    Z = encode(encoders, blocks, observed)
    for m, z in enumerate(Z):
        norms = z.norm(dim=1)
        torch.testing.assert_close(norms[observed[:, m]], torch.ones(int(observed[:, m].sum())))
        assert torch.all(norms[~observed[:, m]] == 0)


def test_calibrated_keeps_observed_columns_and_imputes_shrunk_vectors():
    blocks, observed, encoders = _setup()
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    Zhat, post = calibrated(Z, observed, params, max_norm=1.0)
    for m in range(3):
        assert torch.equal(Zhat[m][observed[:, m]], Z[m][observed[:, m]])
        miss = ~observed[:, m]
        raw = post.mean[miss] @ params.W[m].T + params.mu[m]
        norms = raw.norm(dim=1, keepdim=True)
        torch.testing.assert_close(Zhat[m][miss], raw / norms.clamp_min(1.0))  # direction kept, norm capped at 1
        assert torch.all(Zhat[m][miss].norm(dim=1) <= 1 + 1e-12)
    unlimited, _ = calibrated(Z, observed, params)  # the closed-form model of the blocks: no cap
    miss = ~observed[:, 0]
    torch.testing.assert_close(unlimited[0][miss], post.mean[miss] @ params.W[0].T + params.mu[0])


def _model(latent_dim=2, seed=0):
    return ClosedFormModel(latent_dim=latent_dim, n_components=1, noise="isotropic", max_iter=200, tol=1e-3, seed=seed, label="test model")


def _trainer(encoders, params, alignment="pmrl"):
    """A trainer around given encoders and latent parameters (what ``Trainer.start`` and the initial EM build)."""
    trainer = Trainer(device="cpu", seed=0)
    trainer.encoders, trainer.model = encoders, _model()
    trainer.model.params = params
    trainer.spec = {"alignment": [alignment, ALIGNMENTS[alignment]().get_params()], "embed_dim": encoders[0].linear.out_features}
    trainer.new_loss(3e-3)
    return trainer


def test_imputed_columns_are_detached_targets():
    """No gradient flows through the imputation: only rows observing a modality move its encoder [design 3.1]."""
    blocks, observed, encoders = _setup()
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(encoders, params)
    only_missing = ~observed[:, 0]
    sum(trainer.batch_terms([b[only_missing] for b in blocks], observed[only_missing], calibrate=True).values()).backward()
    assert encoders[0].linear.weight.grad is None or torch.all(encoders[0].linear.weight.grad == 0)
    assert torch.any(encoders[1].linear.weight.grad != 0)


def test_unobserved_encoder_gets_no_gradient():
    blocks, observed, encoders = _setup()
    observed[:, 2] = False
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    sum(_trainer(encoders, params).batch_terms(blocks, observed, calibrate=True).values()).backward()
    assert encoders[2].linear.weight.grad is None or torch.all(encoders[2].linear.weight.grad == 0)


def _fitted_trainer(n, trainer=None, **params):
    """A trainer (``Trainer(device='cpu', seed=0)`` unless given) fitted by the loop of an estimator with ``params`` on
    three latent-model blocks, 30% of them missing."""
    X, mods, _ = make_latent_modalities(n_samples=n, block_sizes=(6, 5, 4), latent_dim=2, noise=0.2, random_state=0)
    blocks = [X[:, cols] for cols in mods.values()]
    rng = np.random.default_rng(0)
    observed = torch.tensor(rng.random((n, 3)) < 0.7)
    observed[observed.sum(1) == 0, 0] = True
    blocks = [torch.as_tensor(np.where(observed[:, [m]].numpy(), b, 0.0)) for m, b in enumerate(blocks)]
    block = _model()
    block.fit(blocks, observed)
    est = CalMRLTransformer(latent_dim=2, embed_dim=4, batch_size=50, **params)
    trainer = Trainer(device="cpu", seed=0) if trainer is None else trainer
    trainer._fit(est, blocks, observed, block)
    return trainer


def test_train_lowers_the_loss_and_records_both_pmrl_terms():
    trainer = _fitted_trainer(200, max_epochs=15, learning_rate=1e-2)
    history = trainer.history
    assert history.n_iter == 15 and history.loss_curve[-1] < history.loss_curve[0]
    assert set(history.loss_terms) == {"intra", "inter"}
    np.testing.assert_allclose(np.add(history.loss_terms["intra"], history.loss_terms["inter"]), history.loss_curve, rtol=1e-6)
    assert all(np.isfinite(history.loglik_curve)) and history.time_em > 0 and history.time_gradient > 0


def test_pair_term_is_recorded_when_weighted():
    from sklearn_calmrl import PMRL

    history = _fitted_trainer(120, max_epochs=2, alignment=PMRL(pair_weight=0.5)).history
    assert set(history.loss_terms) == {"intra", "inter", "pair"} and all(v > 0 for v in history.loss_terms["pair"])


def _rows_seen_by(monkeypatch, cls, method):
    """Record the row count of the mask (second argument after self) of every call of ``cls.method``."""
    seen = []
    real = getattr(cls, method)

    def spy(self, Z, observed, *args, **kwargs):
        seen.append(observed.shape[0])
        return real(self, Z, observed, *args, **kwargs)

    monkeypatch.setattr(cls, method, spy)
    return seen


def test_an_epoch_passes_over_at_most_epoch_rows(monkeypatch):
    """A budget in samples seen (issue 19): above epoch_rows rows an epoch draws that many afresh; below, all rows."""
    import sklearn_calmrl._training as training

    seen = _rows_seen_by(monkeypatch, training.Trainer, "batch_terms")
    assert Trainer(device="cpu", seed=0).epoch_rows == training.EPOCH_ROWS > 200
    _fitted_trainer(200, max_epochs=2)
    assert sum(seen) == 2 * 200  # every row once per epoch
    seen.clear()
    _fitted_trainer(200, Trainer(device="cpu", seed=0, epoch_rows=120), max_epochs=3)
    assert sum(seen) == 3 * 120


def test_refreshes_use_a_fixed_sample_of_init_rows(monkeypatch):
    """Above refresh_size rows (INIT_ROWS) the model of the representations is started and refreshed on one sample."""
    sizes = _rows_seen_by(monkeypatch, ClosedFormModel, "refresh")
    trainer = _fitted_trainer(200, Trainer(device="cpu", seed=0, refresh_size=150), max_epochs=3)
    assert sizes == [150, 150] and trainer.refresh_rows is None  # the start and the refresh of epoch 3


def test_matching_loss_trains_its_head_and_survives_pickling():
    """The paper's matching term (issue 20) is recorded, moves its head, and a pickled model continues."""
    import pickle

    from sklearn_calmrl import PMRL

    trainer = _fitted_trainer(200, max_epochs=3, alignment=PMRL(matching_weight=0.1))
    assert set(trainer.history.loss_terms) == {"intra", "inter", "match"} and all(v > 0 for v in trainer.history.loss_terms["match"])
    fresh = PMRL(matching_weight=0.1).make_loss(4, trainer.random("matching head"))
    moved = [not torch.equal(a, b) for a, b in zip(trainer.loss_fn.matching.parameters(), fresh.matching.parameters())]
    assert any(moved)
    clone = pickle.loads(pickle.dumps(trainer))
    for a, b in zip(clone.loss_fn.parameters(), trainer.loss_fn.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_modality_dropout_hides_observed_columns_but_never_a_whole_row(monkeypatch):
    """With modality_dropout the E-step of a batch sees fewer observed columns, never none of a row (issue 20)."""
    import sklearn_calmrl._training as training
    from sklearn_calmrl import PMRL

    masks = []
    real = training.posterior

    def spy(Z, observed, params):
        masks.append(observed.clone())
        return real(Z, observed, params)

    monkeypatch.setattr(training, "posterior", spy)
    _fitted_trainer(200, max_epochs=1)
    plain_masks, masks[:] = list(masks), []
    dropped = _fitted_trainer(200, max_epochs=1, alignment=PMRL(modality_dropout=0.5))
    assert len(masks) == len(plain_masks) and np.isfinite(dropped.history.loss_curve).all()
    hidden = sum(int(p.sum() - m.sum()) for p, m in zip(plain_masks, masks))
    assert hidden > 0 and all(bool(m.any(dim=1).all()) for m in masks)
    assert all(bool((m <= p).all()) for p, m in zip(plain_masks, masks))


def test_weight_imputations_scales_imputed_columns_by_their_confidence(monkeypatch):
    """weight_imputations (issue 20): what the loss sees of an imputed column is its calibrated imputation times the
    confidence of design 2.14; observed columns are the encoder outputs."""
    from sklearn_calmrl import PMRL
    from sklearn_calmrl._latent import imputation_confidence

    blocks, observed, encoders = _setup()
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(encoders, params)
    trainer.spec["alignment"][1] = PMRL(weight_imputations=True).get_params()
    vars(trainer).pop("objective", None)
    seen = []
    monkeypatch.setattr(trainer.loss_fn, "terms", lambda Zs, observed=None: seen.append(Zs) or {"t": Zs.sum()})
    trainer.batch_terms(blocks, observed, calibrate=True)
    post = posterior(Z, observed, params)
    Zhat, _ = calibrated(Z, observed, params, max_norm=1.0, post=post)
    w = imputation_confidence(post, params, observed)
    for m in range(3):
        miss = ~observed[:, m]
        torch.testing.assert_close(seen[0][miss, m].double(), (Zhat[m] * w[:, m, None])[miss], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(seen[0][~miss, m], encode(encoders, blocks, observed)[m][~miss])
