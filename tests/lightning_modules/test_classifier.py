"""LBENClassifier: training with every solver, logged metrics against direct computations, checkpoints."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from lben_ode.datasets import DigitsDataModule
from lben_ode.datasets.base import TensorBatches, pass_batch
from lben_ode.lightning_modules import LBENClassifier
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

import lben_ode
from lben_ode.errors import ConfigurationError, ShapeError, UnknownNameError
from lben_ode.solvers import available

WIDTH = 16


def quick_trainer(tmp_path, **kwargs) -> Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return Trainer(**options)


def tiny_lben(**kwargs) -> lben_ode.LBEN:
    return lben_ode.LBEN(64, 10, WIDTH, gamma=2.0, **kwargs)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits) -> LBENClassifier:
    """A tiny LBEN trained for a few batches (better than chance, far from perfect)."""
    torch.manual_seed(0)
    module = LBENClassifier(tiny_lben(), solver="pr", solver_options={"tol": 1e-6}, lr=1e-2)
    quick_trainer(tmp_path_factory.mktemp("fit"), max_epochs=1, limit_train_batches=12, limit_val_batches=0).fit(
        module, digits
    )
    return module


@pytest.mark.parametrize("solver", available())
def test_short_fit_with_every_registered_solver(tmp_path, digits, solver):
    torch.manual_seed(0)
    model = tiny_lben()
    before = [p.detach().clone() for p in model.parameters()]
    module = LBENClassifier(model, solver=solver)
    assert model.solver.name == solver
    trainer = quick_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, digits)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert math.isfinite(metrics["train/loss"]) and 0.0 <= metrics["val/acc"] <= 1.0
    for stage in ("train", "val"):
        assert metrics[f"{stage}/forward/converged_fraction"] == 1.0
        assert metrics[f"{stage}/forward/residual_max"] <= model.solver.tol
        assert 1 <= metrics[f"{stage}/forward/iterations_mean"] <= metrics[f"{stage}/forward/iterations_max"]
        assert metrics[f"{stage}/forward/time_s"] > 0
    if not model.solver.differentiable:  # implicit gradients: an adjoint solve per step
        assert metrics["train/backward/converged_fraction"] == 1.0
        assert metrics["train/backward/iterations_max"] >= 1


def numpy_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_logged_metrics_match_direct_computation(tmp_path, digits, trained):
    x, y = digits.dataset("val").inputs, digits.dataset("val").labels
    with torch.no_grad():
        logits = trained.model(x).double().numpy()
    labels = y.numpy()
    gamma, std = 2.0, digits.normalization.std[0]
    top2 = np.sort(logits, axis=1)[:, -2:]
    radius = (top2[:, 1] - top2[:, 0]) / (math.sqrt(2.0) * gamma) * std  # pixel units
    correct = logits.argmax(axis=1) == labels
    assert 0.2 < correct.mean() < 0.99
    # Radii at which some but not all correct points are certified, so each value is informative;
    # each ε lies halfway between two sorted radii, where float32 rounding cannot flip a comparison.
    ordered = np.sort(radius[correct])
    picks = [int(q * len(ordered)) for q in (0.25, 0.5, 0.75)]
    eps = [float(f"{(ordered[i] + ordered[i + 1]) / 2:.6g}") for i in picks]
    assert all(ordered[i + 1] - ordered[i] > 1e-5 for i in picks)
    module = LBENClassifier(trained.model, certify_eps=eps)
    (result,) = quick_trainer(tmp_path).validate(module, digits, verbose=False)

    assert result["val/acc"] == pytest.approx(correct.mean(), abs=1e-6)
    loss = -numpy_log_softmax(logits)[np.arange(len(labels)), labels].mean()
    assert result["val/loss"] == pytest.approx(loss, rel=1e-5)
    assert result["val/lipschitz/gamma"] == pytest.approx(gamma)
    assert result["val/lipschitz/gamma_raw"] == pytest.approx(gamma / std, rel=1e-6)
    for e in eps:
        expected = (correct & (radius > e)).mean()
        assert 0 < expected < correct.mean()
        assert result[f"val/certified/acc_raw_eps{e:g}"] == pytest.approx(expected, abs=1e-6)
    assert result["val/certified/radius_raw_mean"] == pytest.approx(np.where(correct, radius, 0).mean(), rel=1e-4)
    # Convergence: every sample solved, iteration counts come from the checks (the first after
    # check_every steps, whole iterations).
    tol, every = trained.model.solver.tol, trained.model.solver.options["check_every"]
    assert result["val/forward/converged_fraction"] == 1.0
    assert result["val/forward/residual_max"] <= tol
    assert result["val/forward/iterations_max"] == int(result["val/forward/iterations_max"])
    assert every <= result["val/forward/iterations_mean"] <= result["val/forward/iterations_max"]


def test_epoch_metrics_cover_only_the_last_epoch(tmp_path, digits):
    """Metrics are logged once per epoch: the sanity check and earlier epochs must not leak into them."""
    torch.manual_seed(0)
    module = LBENClassifier(tiny_lben(), solver="pr", solver_options={"tol": 1e-6}, lr=1e-2)
    trainer = quick_trainer(tmp_path, max_epochs=2, limit_train_batches=6, num_sanity_val_steps=2)
    trainer.fit(module, digits)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    x, y = digits.dataset("val").inputs, digits.dataset("val").labels
    with torch.no_grad():
        logits = module.model(x)
    assert metrics["val/acc"] == pytest.approx((logits.argmax(dim=1) == y).double().mean().item(), abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert math.isfinite(metrics["train/loss"]) and 0.0 <= metrics["train/acc"] <= 1.0
    assert metrics["train/backward/converged_fraction"] == 1.0


def test_model_without_bound_skips_certificates(tmp_path, digits):
    module = LBENClassifier(lben_ode.MonDEQ(64, 10, WIDTH))
    (result,) = quick_trainer(tmp_path).validate(module, digits, verbose=False)
    assert "val/acc" in result and "val/forward/iterations_mean" in result
    assert not [k for k in result if "lipschitz" in k or "certified" in k]


def test_normalization_argument_wins_and_missing_normalization_warns(tmp_path, digits, trained):
    own = lben_ode.Normalization(mean=(0.0,), std=(0.5,))
    module = LBENClassifier(trained.model, normalization=own)
    (result,) = quick_trainer(tmp_path).validate(module, digits, verbose=False)
    assert result["val/lipschitz/gamma_raw"] == pytest.approx(2.0 / 0.5)
    # A bare dataloader carries no normalisation: model-unit γ only, raw-unit metrics skipped.
    bare = LBENClassifier(trained.model)
    with pytest.warns(UserWarning, match="normalisation"):
        (result,) = quick_trainer(tmp_path).validate(bare, digits.val_dataloader(), verbose=False)
    assert result["val/lipschitz/gamma"] == pytest.approx(2.0)
    assert not [k for k in result if "raw" in k]


def test_solver_flag_and_options():
    model = tiny_lben(solver="fb", alpha=0.05)
    LBENClassifier(model)  # None keeps the model's own solver
    assert model.solver.name == "fb" and model.solver.options["alpha"] == 0.05
    module = LBENClassifier(model, solver="pr", solver_options={"tol": 1e-7, "alpha": 2.0})
    assert model.solver.name == "pr" and model.solver.tol == 1e-7 and model.solver.options["alpha"] == 2.0
    module.set_solver("fb", max_iter=50)
    assert model.solver.name == "fb" and model.solver.options["max_iter"] == 50
    assert module.hparams["solver"] == "fb" and module.hparams["solver_options"] == {"max_iter": 50}


def test_unknown_solver_lists_every_registered_name():
    with pytest.raises(UnknownNameError) as info:
        LBENClassifier(tiny_lben(), solver="newton-krylov")
    for name in available():
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"certify_eps": [0.5, -1.0]}, "certify_eps"),
        ({"certify_eps": "0.5"}, "certify_eps"),
        ({"solver_options": {"tol": -1.0}}, "tol"),
        ({"solver_options": {"no_such_option": 1}}, "no_such_option"),
        ({"solver_options": [1, 2]}, "solver_options"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        LBENClassifier(tiny_lben(), **kwargs)


def test_model_must_be_an_equilibrium_model():
    with pytest.raises(ConfigurationError, match="EquilibriumModel"):
        LBENClassifier(torch.nn.Linear(64, 10))


def test_model_and_data_shapes_must_agree(tmp_path, digits):
    module = LBENClassifier(lben_ode.LBEN(50, 10, WIDTH))
    with pytest.raises(ShapeError, match=r"\(50,\).*\(64,\).*in_features"):
        quick_trainer(tmp_path).validate(module, digits, verbose=False)
    module = LBENClassifier(lben_ode.LBEN(64, 7, WIDTH))
    with pytest.raises(ShapeError, match=r"7 outputs.*10 classes"):
        quick_trainer(tmp_path).validate(module, digits, verbose=False)


def test_checkpoint_loads_weights_only_and_evaluates_with_another_solver(tmp_path, digits, trained):
    normalization = lben_ode.Normalization(mean=(0.3,), std=(0.4,))
    # A copy: fitting it (and setting its solver) must not change the module-scoped fixture.
    module = LBENClassifier(
        copy.deepcopy(trained.model), solver="pr", solver_options={"tol": 1e-5}, normalization=normalization
    )
    trainer = quick_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, digits)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    # Plain data only: the restricted unpickler refuses anything else.
    checkpoint = torch.load(path, weights_only=True)
    assert "model" not in checkpoint["hyper_parameters"]

    loaded = LBENClassifier.load_from_checkpoint(
        path,
        model=tiny_lben(),
        solver="fb",
        solver_options={"tol": 1e-5, "max_iter": 5000},
        weights_only=True,
    )
    assert loaded.model.solver.name == "fb" and module.model.solver.name == "pr"
    assert loaded.normalization == normalization and loaded.lr == module.lr
    x = digits.dataset("val").inputs[:64]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # both solves must converge
        expected, got = module.model(x), loaded.model(x)
    assert loaded.model.solver_stats["forward"].solver == "fb"
    # Both equilibria are within a relative residual of 1e-5 (the float32 floor is near 1e-6): the
    # logits agree to ~1e-5, far below the margins that decide predictions.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_attack_accuracy_lies_between_certified_and_clean_accuracy(tmp_path, digits, trained):
    x, y = digits.dataset("test").inputs[:40], digits.dataset("test").labels[:40]
    with torch.no_grad():
        logits = trained.model(x).double()
    # Misclassified samples first, so that the batches of 32 and 8 have different accuracies: only
    # a per-sample mean then gives the clean accuracy.
    order = torch.argsort((logits.argmax(1) == y).int(), stable=True)
    x, y, logits = x[order], y[order], logits[order]
    radius = lben_ode.robustness.certified_radius(logits, 2.0, digits.normalization.raw_scale)
    correct = logits.argmax(1) == y
    assert correct[:32].double().mean() != correct[32:].double().mean()
    eps = float(f"{radius[correct].median().item():.4g}")  # half the correct points are certified
    module = LBENClassifier(
        trained.model,
        certify_eps=[eps],
        normalization=digits.normalization,
        attack_eps=[0.0, eps],
        attack_options={"steps": 10, "restarts": 2},
    )
    loader = DataLoader(TensorBatches(x, y), batch_size=32, collate_fn=pass_batch)
    (result,) = quick_trainer(tmp_path).test(module, loader, verbose=False)
    clean, certified = result["test/acc"], result[f"test/certified/acc_raw_eps{eps:g}"]
    assert clean == pytest.approx(correct.double().mean().item(), abs=1e-6)
    # ε = 0 cannot change a prediction; at ε > 0 the attack (an upper bound on robust accuracy)
    # never beats the certificate (a lower bound), and finds adversarial points for some samples.
    assert result["test/attack/acc_raw_eps0"] == pytest.approx(clean, abs=1e-6)
    attacked = result[f"test/attack/acc_raw_eps{eps:g}"]
    assert certified <= attacked < clean


def test_lipschitz_search_stays_below_gamma(tmp_path, digits, trained):
    module = LBENClassifier(
        trained.model, lipschitz_search=True, lipschitz_samples=32, lipschitz_options={"steps": 20, "restarts": 1}
    )
    (result,) = quick_trainer(tmp_path, limit_test_batches=2).test(module, digits, verbose=False)
    lower = result["test/lipschitz/empirical_lower_bound"]
    assert 0 < lower <= 2.0 * (1 + 1e-3)
    assert result["test/lipschitz/empirical_over_gamma"] == pytest.approx(lower / 2.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attack_eps": [-0.5]}, "attack_eps"),
        ({"attack_options": {"step": 10}}, "step.*valid names.*steps"),
        ({"lipschitz_options": {"generator": None}}, "generator"),
        ({"lipschitz_search": "yes"}, "lipschitz_search"),
        ({"lipschitz_samples": 1}, "lipschitz_samples"),
    ],
)
def test_bad_robustness_options(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        LBENClassifier(tiny_lben(), **kwargs)


@pytest.mark.filterwarnings("ignore::lben_ode.ConvergenceWarning")
def test_unconverged_solves_are_never_certified_nor_robust(tmp_path, digits, trained):
    model = copy.deepcopy(trained.model)
    model.set_solver("pr", max_iter=1, check_every=1)  # one iteration: the equilibria are not found
    x, y = digits.dataset("test").inputs[:32], digits.dataset("test").labels[:32]
    with torch.no_grad():
        logits = model(x)
    converged = model.solver_stats["forward"].converged
    correct = logits.argmax(1) == y
    assert correct.double().mean() > 0.2 and converged.double().mean() < 0.5  # the check is not vacuous
    # What the margin alone would claim at ε = 0: every correct sample.
    assert bool(lben_ode.robustness.certified_correct(logits, y, 2.0, [0.0])[correct].all())
    module = LBENClassifier(
        model, certify_eps=[0.0], normalization=digits.normalization, attack_eps=[0.0],
        lipschitz_search=True, lipschitz_samples=8, lipschitz_options={"steps": 2, "restarts": 1},
    )
    loader = DataLoader(TensorBatches(x, y), batch_size=32, collate_fn=pass_batch)
    (result,) = quick_trainer(tmp_path).test(module, loader, verbose=False)
    honest = (correct & converged).double().mean().item()
    assert result["test/acc"] == pytest.approx(correct.double().mean().item(), abs=1e-6)
    assert result["test/certified/acc_raw_eps0"] == pytest.approx(honest, abs=1e-6)
    assert result["test/attack/acc_raw_eps0"] == pytest.approx(honest, abs=1e-6)
    fraction = converged.double().mean().item()
    assert result["test/certified/converged_fraction"] == pytest.approx(fraction, abs=1e-6)
    assert result["test/forward/converged_fraction"] == pytest.approx(fraction, abs=1e-6)
    assert result["test/attack/converged_fraction"] == pytest.approx(fraction, abs=1e-6)
    assert result["test/lipschitz/converged_fraction"] < 1.0


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_fit_solves_in_float32(tmp_path, digits, precision):
    # On a CPU Lightning runs 16-mixed as bf16-mixed (with a warning); both autocast the step.
    torch.manual_seed(0)
    module = LBENClassifier(tiny_lben(), solver="pr", solver_options={"tol": 1e-5}, lr=1e-2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*AMP with fp16 is not supported on CPU.*")
        trainer = quick_trainer(tmp_path, precision=precision, max_epochs=1, limit_train_batches=4,
                                limit_val_batches=1)
    trainer.fit(module, digits)
    assert trainer.precision == "bf16-mixed"
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and float(metrics["val/forward/converged_fraction"]) == 1.0
    assert float(metrics["train/backward/converged_fraction"]) == 1.0
    assert all(p.dtype == torch.float32 for p in module.parameters())


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_half_precision_weights_are_refused_with_one_clear_error(tmp_path, digits, precision):
    module = LBENClassifier(tiny_lben())
    trainer = quick_trainer(tmp_path, precision=precision, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(ConfigurationError, match=rf"precision '{precision}'.*'16-mixed' or 'bf16-mixed'"):
        trainer.fit(module, digits)


def test_labels_outside_the_class_range_are_refused(tmp_path):
    module = LBENClassifier(tiny_lben())
    x = torch.randn(8, 64)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 12])
    with pytest.raises(ShapeError, match=r"class indices in \[0, 9\], got \[12\]"):
        module.training_step((x, y), 0)
    with pytest.raises(ShapeError, match=r"class indices in \[0, 9\], got \[-1\]"):
        module.validation_step((x, torch.tensor([0, 1, 2, 3, 4, 5, 6, -1])), 0)
