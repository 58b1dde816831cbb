"""SequenceRegressor: a training step, metrics against a direct computation, flags, gain search, checkpoints."""

import numpy as np
import pytest
import torch
from lben_ode.datasets import SequenceDataModule, SequenceRecord
from lben_ode.lightning_modules.sequence import SequenceRegressor
from lben_ode.lightning_modules.sequence_metrics import OutputFit
from lightning.pytorch import Trainer

from lben_ode import ContractingLBEN
from lben_ode.baselines import NeuralODE, RecurrentNetwork
from lben_ode.errors import ConfigurationError, UnknownNameError
from lben_ode.robustness.incremental_gain import empirical_incremental_gain, signal_energy


def tiny_records(seed=0, length=60, records=3):
    """A stable linear filter y' = −y + u (plus a second output y²) sampled every 0.1."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(records):
        u = np.convolve(rng.normal(size=length + 4), np.ones(5) / 5, mode="valid")
        y = np.zeros(length)
        for k in range(1, length):
            y[k] = y[k - 1] + 0.1 * (-y[k - 1] + u[k - 1])
        out.append(SequenceRecord.from_arrays(u, np.stack([y, y**2], 1), dt=0.1, name=f"r{r}"))
    return out


def tiny_data(**kwargs):
    return SequenceDataModule(train=tiny_records(0), val=tiny_records(1, records=2), test=tiny_records(2, records=2),
                              window=20, stride=10, washout=5, batch_size=8, **kwargs)


def models():
    torch.manual_seed(0)
    return [
        ContractingLBEN(1, 2, 8, gamma=2.0, method="rk4"),
        NeuralODE(1, 2, 4, 16, method="rk4"),
        RecurrentNetwork(1, 2, 8),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["contracting-lben", "neural-ode", "gru"])
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(index):
    model = models()[index]
    module = SequenceRegressor(model, lr=1e-2)
    data = tiny_data()
    data.setup()
    batch = data.dataset("train").__getitems__(list(range(8)))
    u, y, t, scored = batch

    def loss():
        return (module(u, t)[:, scored] - y[:, scored]).pow(2).mean()

    optimizer = module.configure_optimizers()
    before = loss()
    optimizer.zero_grad()
    module.training_step(batch, 0).backward()
    optimizer.step()
    assert float(loss()) < float(before.detach())
    # The training loss ignores the washout: changing y there changes nothing.
    y_changed = y.clone()
    y_changed[:, :5] += 100.0
    assert float(module.training_step((u, y_changed, t, scored), 0)) == pytest.approx(float(loss()), rel=1e-6)


def test_output_fit_matches_a_direct_float64_computation():
    rng = np.random.default_rng(0)
    target = rng.normal(2.0, 3.0, (500, 2))
    prediction = target + rng.normal(0.0, 0.5, (500, 2))
    metric = OutputFit(2)
    metric.update(torch.tensor(prediction[:200]), torch.tensor(target[:200]))
    metric.update(torch.tensor(prediction[200:]), torch.tensor(target[200:]))
    values = {k: v.numpy() for k, v in metric.compute().items()}
    rmse = np.sqrt(((prediction - target) ** 2).mean(0))
    np.testing.assert_allclose(values["rmse"], rmse, rtol=1e-12)
    np.testing.assert_allclose(values["nrmse"], 100 * rmse / target.std(0), rtol=1e-10)
    fit = 100 * (1 - np.linalg.norm(prediction - target, axis=0) / np.linalg.norm(target - target.mean(0), axis=0))
    np.testing.assert_allclose(values["fit"], fit, rtol=1e-10)


def test_logged_validation_metrics_match_the_model_on_raw_outputs(tmp_path):
    torch.manual_seed(1)
    model = ContractingLBEN(1, 2, 8, gamma=2.0, method="rk4")
    module = SequenceRegressor(model, plot=False)
    data = tiny_data()
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    (logged,) = trainer.validate(module, data, verbose=False)
    n = data.normalization
    predictions, targets = [], []
    with torch.no_grad():
        for u, y, t, scored in data.val_dataloader():
            predictions.append(n.outputs_to_raw(model(u, t)[0, scored].double()))
            targets.append(n.outputs_to_raw(y[0, scored].double()))
    p, y = torch.cat(predictions).numpy(), torch.cat(targets).numpy()
    # The raw targets are the original records (after the washout).
    np.testing.assert_allclose(y[:, 0], np.concatenate([r.y[5:, 0].numpy() for r in tiny_records(1, records=2)]),
                               rtol=1e-5, atol=1e-6)
    rmse = np.sqrt(((p - y) ** 2).mean(0))
    assert logged["val/rmse/y1"] == pytest.approx(rmse[1], rel=1e-5)
    assert logged["val/nrmse/y0"] == pytest.approx(100 * rmse[0] / y[:, 0].std(), rel=1e-5)
    assert logged["val/nrmse"] == pytest.approx(np.mean(100 * rmse / y.std(0)), rel=1e-5)
    assert logged["val/gain/gamma"] == pytest.approx(2.0)
    assert logged["val/gain/gamma_raw"] == pytest.approx(2.0 * max(n.y_std) / min(n.u_std), rel=1e-6)
    assert logged["val/simulation/function_evaluations"] == 4 * 59  # rk4, one step per sample interval
    assert module.hparams["normalization"] == n.as_dict()


def test_integration_flags_reach_the_model():
    model = ContractingLBEN(1, 1, 4)
    SequenceRegressor(model, method="rk4", step_size=0.05, gradient="adjoint")
    assert (model.integrator.method, model.integrator.gradient) == ("rk4", "adjoint")
    assert model.integrator.options["step_size"] == 0.05
    with pytest.raises(UnknownNameError, match="dopri5"):
        SequenceRegressor(ContractingLBEN(1, 1, 4), method="rk5")
    with pytest.raises(ConfigurationError, match="discrete-time"):
        SequenceRegressor(RecurrentNetwork(1, 1, 4), method="rk4")
    with pytest.raises(UnknownNameError, match="steps"):
        SequenceRegressor(ContractingLBEN(1, 1, 4), gain_search_options={"stpes": 3})
    with pytest.raises(ConfigurationError, match="sequence model"):
        SequenceRegressor(torch.nn.Linear(1, 1))


def test_signal_energy_is_exact_for_linear_and_held_signals():
    t = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    d = torch.tensor([[[1.0], [3.0], [-1.0]]], dtype=torch.float64)
    # ∫ of (piecewise linear)²: ∫₀^0.5 (1 + 4s)² ds + ∫₀^1.5 (3 − 8s/3)² ds.
    exact = (0.5 * (1 + 3 + 9) / 3) + (1.5 * (9 - 3 + 1) / 3)
    assert float(signal_energy(d, t, "linear")) == pytest.approx(exact, rel=1e-14)
    assert float(signal_energy(d, t, "zoh")) == pytest.approx(0.5 * 1 + 1.5 * 9, rel=1e-14)


def test_gain_search_stays_below_gamma_and_is_logged(tmp_path):
    torch.manual_seed(2)
    # Fixed small steps in float64: the simulated map is the model's up to a tiny rk4 error, and a
    # pair simulated alone gives the same numbers as in a batch.
    model = ContractingLBEN(1, 2, 8, gamma=0.7, method="rk4", step_size=0.05).double()
    u = torch.randn(2, 30, 1, dtype=torch.float64)
    t = 0.1 * torch.arange(30, dtype=torch.float64)
    estimate = empirical_incremental_gain(model, u, t, steps=6, generator=torch.Generator().manual_seed(0))
    assert 0 < estimate.value <= 0.7 * (1 + 1e-4)
    assert estimate.pair_ratios.shape == (2,)
    # The ratio reported is the ratio of the returned pair.
    with torch.no_grad():
        dy = model(estimate.u1[None], t) - model(estimate.u2[None], t)
    ratio = (signal_energy(dy, t, "trapezoid") / signal_energy((estimate.u1 - estimate.u2)[None], t)).sqrt()
    assert float(ratio) == pytest.approx(estimate.value, rel=1e-6)

    torch.manual_seed(3)
    module = SequenceRegressor(ContractingLBEN(1, 2, 8, gamma=0.7, method="rk4"), gain_search=True,
                               gain_search_options={"steps": 3}, gain_search_length=20)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    (logged,) = trainer.test(module, tiny_data(), verbose=False)
    assert 0 < logged["test/gain/empirical_over_gamma"] <= 1 + 1e-3
    assert (tmp_path / "test_predictions.png").is_file()


def test_checkpoint_loads_with_weights_only_and_reproduces_outputs(tmp_path):
    torch.manual_seed(4)
    module = SequenceRegressor(ContractingLBEN(1, 2, 8, gamma=None, method="rk4"), lr=1e-2, plot=False)
    data = tiny_data()
    trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)
    trainer.fit(module, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = SequenceRegressor.load_from_checkpoint(
        path, weights_only=True, model=ContractingLBEN(1, 2, 8, gamma=None, method="rk4")
    )
    assert loaded.normalization == data.normalization  # stored in the checkpoint, no data module needed
    u, _, t, _ = next(iter(data.test_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(loaded(u, t), module(u, t), rtol=0, atol=0)
