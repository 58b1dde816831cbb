"""A LightningModule that fits continuous-time models to input/output sequences (system identification)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lben_ode.datasets.sequences import SequenceNormalization
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torchmetrics import Metric

from lben_ode.errors import ConfigurationError, ShapeError, unknown_name
from lben_ode.robustness.incremental_gain import empirical_incremental_gain
from lben_ode.validation import check_betas, check_positive

from .metrics import mean_metric
from .optimizers import adam
from .sequence_metrics import OutputFit, SimulationMetrics
from .step_logging import step_value_read

#: Options of the incremental-gain search a configuration may set.
GAIN_SEARCH_OPTIONS = ("steps", "lr", "init_distance")

#: File name of the plot of predicted and true outputs on the test records.
PLOT_FILE = "test_predictions.png"

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class SequenceRegressor(LightningModule):
    """Train, validate and test a continuous-time sequence model on input/output records.

    Works with any model ``model(u (batch, T, m), t (T,)) -> y (batch, T, p)`` with ``input_size``,
    ``output_size``, ``simulation_stats`` and ``gain_bound()``: :class:`~lben_ode.ContractingLBEN`,
    or the baselines of :mod:`lben_ode.baselines`. Batches are ``(u, y, t, scored)`` from a
    :class:`~lben_ode.datasets.SequenceDataModule` (normalised units; ``scored`` masks the washout).

    The integration is set by flags, applied with ``model.set_integrator``: ``method`` (a torchdiffeq
    method), ``step_size`` (fixed-step methods), ``gradient`` (``"backprop"`` or ``"adjoint"``) and
    ``integrator_options``. The weights do not depend on them, so a checkpoint trained with one method
    can be tested with another (``lben-ode test --ckpt_path … --model.method rk4 --model.step_size 0.05``).

    Logged per stage:

    - ``{stage}/loss``: mean squared error over the scored samples, normalised units (the training loss);
      ``train/loss_step`` per batch, on the steps a logger or the progress bar reads (:mod:`.step_logging`).
    - ``val``/``test``: ``rmse/<output>`` (raw units), ``nrmse/<output>`` and ``fit/<output>`` (%), and
      their means over outputs ``rmse``, ``nrmse``, ``fit`` (see :mod:`.sequence_metrics`).
    - ``{stage}/simulation/…``: ``function_evaluations``, ``accepted_steps``, ``rejected_steps``,
      ``time_s`` per batch (forward), and in training ``backward_function_evaluations`` (adjoint).
    - ``{stage}/gain/gamma``: the model's incremental ℓ2 gain bound γ (normalised units) and
      ``gamma_raw``: ``γ · max(std_y) / min(std_u)`` in raw units; skipped for unbounded models.
    - with ``gain_search`` (test only, expensive): ``test/gain/empirical`` (the largest ratio
      ``(∫‖Δy‖²/∫‖Δu‖²)^{1/2}`` found by gradient ascent over pairs of input signals, normalised units)
      and ``test/gain/empirical_over_gamma`` (≤ 1 up to integration tolerance for a ContractingLBEN).

    After testing, ``test_predictions.png`` (predicted and true outputs of every test record, raw
    units) is written to the logger's directory when ``plot`` is set.

    Args:
        model: the sequence model.
        method: torchdiffeq method for training and evaluation (None keeps the model's).
        step_size: step of a fixed-step method (None keeps the model's setting).
        gradient: ``"backprop"`` or ``"adjoint"`` (None keeps the model's).
        integrator_options: further options of ``model.set_integrator`` (``rtol``, ``atol``, …).
        lr: Adam learning rate.
        betas: Adam's (β1, β2).
        normalization: the data's :class:`~lben_ode.datasets.SequenceNormalization` as a dict; None
            takes the data module's at setup and stores it here (so checkpoints carry it).
        gain_search: at test time, run the incremental-gain search.
        gain_search_options: ``steps``, ``lr``, ``init_distance`` of the search.
        gain_search_length: samples of each test record that start a search pair.
        plot: write the prediction plot after testing.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str | None = None,
        step_size: float | None = None,
        gradient: str | None = None,
        integrator_options: dict[str, Any] | None = None,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        normalization: dict[str, list[float]] | None = None,
        gain_search: bool = False,
        gain_search_options: dict[str, Any] | None = None,
        gain_search_length: int = 200,
        plot: bool = True,
    ) -> None:
        super().__init__()
        for attribute in ("input_size", "output_size", "gain_bound"):
            if not hasattr(model, attribute):
                raise ConfigurationError(
                    f"model must be a sequence model with input_size, output_size and gain_bound() "
                    f"(ContractingLBEN, lben_ode.baselines.NeuralODE, …); {type(model).__name__} has no {attribute}"
                )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        if isinstance(self.hparams.get("model"), nn.Module):
            self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.lr = check_positive("lr", lr)
        self.betas = check_betas(betas)
        if integrator_options is not None and not isinstance(integrator_options, Mapping):
            raise ConfigurationError(f"integrator_options must be a dict, got {integrator_options!r}")
        if step_size is not None and (
            isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not step_size > 0
        ):
            raise ConfigurationError(f"step_size must be a float > 0 or None, got {step_size!r}")
        options = dict(integrator_options or {})
        if step_size is not None:
            options["step_size"] = float(step_size)
        if method is not None or gradient is not None or options:
            model.set_integrator(method=method, gradient=gradient, **options)
        self._normalization = None if normalization is None else SequenceNormalization.from_dict(normalization)
        if not isinstance(gain_search, bool) or not isinstance(plot, bool):
            raise ConfigurationError(f"gain_search and plot must be bools, got {gain_search!r}, {plot!r}")
        self.gain_search, self.plot = gain_search, plot
        self.gain_search_options = dict(gain_search_options or {})
        for key in self.gain_search_options:
            if key not in GAIN_SEARCH_OPTIONS:
                raise unknown_name("gain_search_options key", key, GAIN_SEARCH_OPTIONS)
        if isinstance(gain_search_length, bool) or not isinstance(gain_search_length, int) or gain_search_length < 2:
            raise ConfigurationError(f"gain_search_length must be an int ≥ 2, got {gain_search_length!r}")
        self.gain_search_length = gain_search_length
        p = model.output_size
        self.metrics = nn.ModuleDict(
            {f"{stage}_loss": mean_metric() for stage in ("train", "val", "test")}
            | {f"{stage}_fit": OutputFit(p) for stage in ("val", "test")}
            | {f"{stage}_simulation": SimulationMetrics() for stage in ("train", "val", "test")}
        )
        self._epoch_metrics: dict[str, tuple[Metric, bool]] = {}
        self._test_records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # -- setup ------------------------------------------------------------------------------------
    @property
    def normalization(self) -> SequenceNormalization | None:
        """The data's normalisation (argument or checkpoint, else the data module's)."""
        if self._normalization is not None:
            return self._normalization
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(datamodule, "normalization", None)

    @property
    def output_names(self) -> list[str]:
        """Labels of the outputs (the data module's, else ``y0``, ``y1``, …)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(datamodule, "output_names", []) or [])
        return names if len(names) == self.model.output_size else [f"y{k}" for k in range(self.model.output_size)]

    def setup(self, stage: str) -> None:
        """Check the model fits the data; store the data's normalisation in the hyperparameters."""
        datamodule = getattr(self.trainer, "datamodule", None)
        for what in ("input_size", "output_size"):
            data_size, model_size = getattr(datamodule, what, None), getattr(self.model, what)
            if data_size is not None and data_size != model_size:
                raise ShapeError(
                    f"the model's {what} is {model_size} but the data has {data_size} "
                    f"(set the model's {what} to {data_size})"
                )
        if self._normalization is None and getattr(datamodule, "normalization", None) is not None:
            self._normalization = datamodule.normalization
            self.hparams["normalization"] = self._normalization.as_dict()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on every parameter of the model (fused where torch can: :func:`.optimizers.adam`)."""
        return adam(self.model.parameters(), lr=self.lr, betas=self.betas)

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Outputs ``(batch, T, p)`` in normalised units for inputs ``(batch, T, m)`` in normalised units."""
        return self.model(u, t)

    # -- helpers ----------------------------------------------------------------------------------
    def _remember(self, prefix: str, metrics: Mapping[str, Metric], prog_bar: tuple[str, ...] = ()) -> None:
        for name, metric in metrics.items():
            self._epoch_metrics[f"{prefix}/{name}"] = (metric, name in prog_bar)

    def _log_epoch(self, stage: str) -> None:
        for key in [k for k in self._epoch_metrics if k.startswith(f"{stage}/")]:
            metric, prog_bar = self._epoch_metrics.pop(key)
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=prog_bar)
        if stage in ("val", "test"):
            fit = self.metrics[f"{stage}_fit"]
            if int(fit.count) > 0:
                values = fit.compute()
                for kind, per_output in values.items():
                    per_output = per_output.reshape(-1)  # torchmetrics squeezes one-element results
                    for name, value in zip(self.output_names, per_output.tolist(), strict=True):
                        self.log(f"{stage}/{kind}/{name}", value)
                    self.log(f"{stage}/{kind}", float(per_output.mean()), prog_bar=kind == "nrmse")
            fit.reset()
        gamma = self.model.gain_bound()
        if gamma is not None:
            self.log(f"{stage}/gain/gamma", gamma)
            if self.normalization is not None:
                self.log(f"{stage}/gain/gamma_raw", self.normalization.gain_in_raw_units(gamma))

    def _simulate(self, stage: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        u, y, t, scored = batch
        prediction = self.model(u, t)
        error = (prediction[:, scored] - y[:, scored]).pow(2)
        stats = getattr(self.model, "simulation_stats", None)
        if stats is not None:
            self._remember(f"{stage}/simulation", self.metrics[f"{stage}_simulation"].update(stats.summary()))
        return prediction, error

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Mean squared error over the scored samples of a batch of windows (normalised units)."""
        _, error = self._simulate("train", batch)
        loss = error.mean()
        if step_value_read(self, batch_idx):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch[0].shape[0])
        self.metrics["train_loss"].update(error.detach().mean(dim=(1, 2)))
        self._remember("train", {"loss": self.metrics["train_loss"]})
        return loss

    def on_after_backward(self) -> None:
        """Record the backward pass's vector-field evaluations (non-zero with the adjoint method)."""
        stats = getattr(self.model, "simulation_stats", None)
        if stats is not None and hasattr(stats, "backward_function_evaluations"):
            metrics = self.metrics["train_simulation"].update(
                {"backward_function_evaluations": stats.backward_function_evaluations}
            )
            self._remember("train/simulation", metrics)

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics and γ."""
        self._log_epoch("train")

    def _evaluation_step(self, stage: str, batch: Batch) -> torch.Tensor:
        prediction, error = self._simulate(stage, batch)
        _u, y, _t, scored = batch
        self.metrics[f"{stage}_loss"].update(error.mean(dim=(1, 2)))
        self._remember(stage, {"loss": self.metrics[f"{stage}_loss"]})
        normalization = self.normalization
        raw_prediction, raw_target = prediction[:, scored], y[:, scored]
        if normalization is not None:
            raw_prediction = normalization.outputs_to_raw(raw_prediction)
            raw_target = normalization.outputs_to_raw(raw_target)
        p = raw_target.shape[-1]
        self.metrics[f"{stage}_fit"].update(raw_prediction.reshape(-1, p), raw_target.reshape(-1, p))
        return prediction

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Loss and fit of one validation record."""
        self._evaluation_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics (NRMSE and fit per output) and γ."""
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        """Forget the records kept for the plot and the gain search."""
        self._test_records = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Loss and fit of one test record; kept for the plot and the gain search."""
        prediction = self._evaluation_step("test", batch)
        u, y, t, _ = batch
        self._test_records.append((u.detach(), y.detach(), t.detach(), prediction.detach()))

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and γ; run the gain search if asked; write the prediction plot."""
        self._log_epoch("test")
        if self.gain_search and self._test_records:
            self._search_gain()
        if self.plot and self._test_records:
            self._write_plot()
        self._test_records = []

    def _search_gain(self) -> None:
        length = min(self.gain_search_length, min(r[0].shape[1] for r in self._test_records))
        starts = torch.cat([r[0][:, :length] for r in self._test_records])
        t = self._test_records[0][2][:length]
        generator = torch.Generator(device=starts.device).manual_seed(0)
        with torch.inference_mode(False), torch.enable_grad():
            estimate = empirical_incremental_gain(
                self.model, starts.clone(), t.clone(), generator=generator, **self.gain_search_options
            )
        self.log("test/gain/empirical", estimate.value, sync_dist=True, reduce_fx="max")
        gamma = self.model.gain_bound()
        if gamma is not None:
            self.log("test/gain/empirical_over_gamma", estimate.value / gamma, sync_dist=True, reduce_fx="max")

    @rank_zero_only
    def _write_plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        logger = self.logger
        folder = Path(getattr(logger, "log_dir", None) or self.trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        names = self.output_names
        records = self._test_records
        rows = len(records) * len(names)
        figure, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), squeeze=False)
        normalization = self.normalization
        washout = int((~self._scored_mask_of(0)).sum()) if records else 0
        datamodule = getattr(self.trainer, "datamodule", None)
        titles = list(getattr(datamodule.dataset("test"), "names", [])) if hasattr(datamodule, "dataset") else []
        if len(titles) != len(records):
            titles = [f"test record {r}" for r in range(len(records))]
        for r, (_, y, t, prediction) in enumerate(records):
            if normalization is not None:
                y, prediction = normalization.outputs_to_raw(y), normalization.outputs_to_raw(prediction)
            for j, name in enumerate(names):
                ax = axes[r * len(names) + j, 0]
                ax.plot(t.cpu(), y[0, :, j].cpu(), label="true", color="black", linewidth=1.0)
                ax.plot(t.cpu(), prediction[0, :, j].cpu(), label="predicted", color="tab:orange", linewidth=1.0)
                ax.plot(t.cpu(), (prediction - y)[0, :, j].cpu(), label="error", color="tab:red", linewidth=0.6)
                if washout:
                    ax.axvspan(float(t[0]), float(t[washout - 1]), color="grey", alpha=0.2, label="washout")
                ax.set_ylabel(name)
                ax.set_title(titles[r], fontsize=9, loc="left")
                ax.legend(loc="upper right", fontsize=7, ncol=4)
        axes[-1, 0].set_xlabel("t")
        figure.tight_layout()
        path = folder / PLOT_FILE
        figure.savefig(path, dpi=110)
        plt.close(figure)
        # On a line of its own: the progress bar may have left the cursor at the end of its line.
        print(f"\nprediction plot: {path}", flush=True)

    def _scored_mask_of(self, index: int) -> torch.Tensor:
        datamodule = getattr(self.trainer, "datamodule", None)
        washout = getattr(datamodule, "washout", 0)
        length = self._test_records[index][1].shape[1]
        return torch.arange(length) >= washout

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Predicted outputs of a batch, in raw units when the normalisation is known."""
        u, _, t, _ = batch
        prediction = self.model(u, t)
        return prediction if self.normalization is None else self.normalization.outputs_to_raw(prediction)
