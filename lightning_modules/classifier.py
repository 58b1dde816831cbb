"""A LightningModule that trains any equilibrium model as a classifier, with the solver chosen by one flag."""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import IO, Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric

from lben_ode.errors import CheckpointError, ConfigurationError, LBENError, ShapeError, unknown_name
from lben_ode.gradients import WarmStart
from lben_ode.models.base import EquilibriumModel
from lben_ode.normalization import Normalization
from lben_ode.robustness import attack_accuracy, empirical_lipschitz, evaluate_attack
from lben_ode.robustness.evaluation import solve_converged
from lben_ode.solvers import available
from lben_ode.solvers.base import Solver
from lben_ode.validation import check_betas, check_count, check_eps, check_labels, check_positive

from .checkpoint import read_checkpoint, require_recorded_model
from .metrics import AttackMetrics, CertificationMetrics, ClassificationMetrics, SolverMetrics
from .optimizers import adam
from .progress import progress_wanted
from .step_logging import step_value_read
from .warm_start import WarmStartCache, batch_indices

#: Radii ε (raw pixel units, ℓ2) at which certified accuracy is reported by default (MNIST-like data).
DEFAULT_CERTIFY_EPS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)

STAGES = ("train", "val", "test")

# Trainer precisions that cast the weights to a half-precision dtype.
_HALF_PRECISION = ("16-true", "bf16-true", "transformer-engine", "transformer-engine-float16")


# Options of the robustness functions that a configuration may set (not the random generator, the
# progress bar or the handling of unconverged solves, which the module controls: it evaluates them
# and logs the converged fraction beside the numbers).
_NOT_CONFIGURABLE = ("generator", "progress", "allow_unconverged")


def _check_options(what: str, function: Any, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    valid = [
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _NOT_CONFIGURABLE
    ]
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{what} must be a dict with keys among {', '.join(valid)}, got {options!r}")
    for name in options:
        if name not in valid:
            raise unknown_name(f"{what} key", name, valid)
    return dict(options)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _state_dict_problems(exc: RuntimeError) -> str:
    """torch's multi-line ``load_state_dict`` error as one line: its first few problems, shortened."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        problems = [p if len(p) <= 160 else p[:157] + "…" for p in lines[1:4]]
        more = f" (and {len(lines) - 4} more)" if len(lines) > 4 else ""
        return "its weights do not fit the model: " + "; ".join(problems) + more
    return _first_line(exc)


def _warm_start_solver_error(solver: Solver) -> ConfigurationError:
    return ConfigurationError(
        f"warm_start=True needs implicit gradients, but solver {solver.name!r} with backward="
        f"{solver.options.get('backward')!r} differentiates its integration from the start, which a warm start "
        "would shorten: use backward='implicit' (--model.solver_options.backward implicit), or warm_start=False"
    )


def _as_normalization(value: Any) -> Normalization | None:
    if value is None or isinstance(value, Normalization):
        return value
    if isinstance(value, Mapping):  # as stored in checkpoints
        try:
            return Normalization(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad normalization {dict(value)!r}: {exc}") from exc
    raise ConfigurationError(f"normalization must be a lben_ode.Normalization or None, got {value!r}")


class LBENClassifier(LightningModule):
    """Train, validate and test an equilibrium model (LBEN, monDEQ, …) as a classifier.

    The equilibrium solver is one flag, ``solver``, applied with ``model.set_solver``. The weights
    do not depend on the solver, so a checkpoint trained with one solver can be evaluated with
    another (``lben-ode test --ckpt_path … --model.solver fb``).

    Logged per stage (``train``, ``val``, ``test``; every value is a torchmetrics object, so it is
    synchronised across devices):

    - ``{stage}/loss`` (mean cross-entropy), ``{stage}/acc``; ``train/loss_step`` per batch, on the steps a
      logger or the progress bar reads (:mod:`.step_logging`).
    - ``{stage}/forward/…`` and ``train/backward/…``: ``iterations_mean``, ``iterations_max``,
      ``residual_max``, ``converged_fraction``, ``time_s`` (per batch) and ``function_evaluations``
      when the solver counts them; solver-specific extras as ``…/extra/<name>`` (batch means).
    - For models with a Lipschitz bound: ``{stage}/lipschitz/gamma`` (model input units) and
      ``{stage}/lipschitz/gamma_raw`` (raw units, e.g. pixels: γ / min normalisation std); for
      ``val`` and ``test``, ``{stage}/certified/acc_raw_eps{ε}`` at each ε of ``certify_eps`` and
      ``{stage}/certified/radius_raw_mean`` (ℓ2, raw units), with
      ``{stage}/certified/converged_fraction``: a sample whose forward solve did not converge is
      never certified (and counts 0 in the mean radius). Models without a bound skip these.

    The normalisation that converts to raw units is the ``normalization`` argument, or else the
    data module's ``normalization`` attribute; without either, raw-unit metrics are skipped with a
    warning.

    Args:
        model: the equilibrium network (any :class:`~lben_ode.models.base.EquilibriumModel`).
        solver: registry name of the equilibrium solver (one of ``lben_ode.solvers.available()``);
            None keeps the model's own solver.
        solver_options: options of that solver (``tol``, ``max_iter``, ``alpha``, …); they replace
            the model's current options.
        lr: Adam learning rate.
        betas: Adam's (β1, β2), each in [0, 1).
        certify_eps: ℓ2 radii ε in raw units (pixels in [0, 1]) for certified accuracy.
        normalization: input normalisation used by the data; None takes the data module's.
        attack_eps: at test time only (expensive), ℓ2 PGD attack accuracy at these radii (raw
            units) with :func:`lben_ode.robustness.attack_accuracy`, logged as
            ``test/attack/acc_raw_eps{ε}``: an upper bound on robust accuracy, where certified
            accuracy is a lower one; samples with an unconverged solve are not robust, and
            ``test/attack/converged_fraction`` says how many converged. None (default) skips the attack.
        attack_options: keyword options of ``attack_accuracy`` (``steps``, ``restarts``,
            ``step_size``, ``loss``, ``targets``, ``batch_size``).
        lipschitz_search: at test time, search for an empirical lower bound of the Lipschitz
            constant with :func:`lben_ode.robustness.empirical_lipschitz` from the first
            ``lipschitz_samples`` test inputs of each process; logs
            ``test/lipschitz/empirical_lower_bound`` (model units, the maximum over processes) and,
            with a bound γ, ``test/lipschitz/empirical_over_gamma`` (≤ 1 up to the solver tolerance),
            from converged solves only, and ``test/lipschitz/converged_fraction``.
        lipschitz_options: keyword options of ``empirical_lipschitz`` (``restarts``, ``steps``, ``lr``,
            ``init_distance``, ``min_distance``, ``start_noise``, ``random_starts``).
        lipschitz_samples: test inputs (per process) that start the Lipschitz search.
        warm_start: start each training sample's forward solve from its equilibrium z* of its last
            visit (the previous epoch), and its backward (adjoint) solve from its last adjoint
            solution, kept by dataset index (:class:`~lben_ode.lightning_modules.warm_start.WarmStartCache`);
            first visits start from zeros, as without it (a start sets z, and Peaceman-Rachford's
            u, to the kept z*). Every solve still runs to the solver's
            per-sample tolerance, so only the iteration counts change (``train/forward/…`` and
            ``train/backward/…`` show them). Memory on the model's device: 2 × N × n × dtype size
            for N training samples of state size n (60,000 × 80 × 4 B × 2 ≈ 38 MB for MNIST at width
            80), per process under DDP (each fills in the samples it is given; nothing is exchanged).
            The kept solutions are not saved in checkpoints: after loading one (or resuming), each
            sample's first solve starts from zeros again. Needs training batches ``(x, y, idx)``:
            the ``lben_ode.datasets`` image data modules give them (the module sets their
            ``train_indices`` attribute in :meth:`setup`), other data must yield them; and implicit
            gradients (not ``solver='ode'`` with ``backward='adjoint'``). Validation and test solves
            start from zeros.

    Checkpoints hold plain data only and load with ``weights_only=True``. From the ``lben-ode``
    command they record the whole configuration, so ``LBENClassifier.load_from_checkpoint(path)``
    rebuilds the model; a module built in Python stores its arguments except the model, which is
    then passed again: ``LBENClassifier.load_from_checkpoint(path, model=LBEN(...))``.
    """

    def __init__(
        self,
        model: EquilibriumModel,
        solver: str | None = None,
        solver_options: dict[str, Any] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        certify_eps: Sequence[float] = DEFAULT_CERTIFY_EPS,
        normalization: Normalization | None = None,
        attack_eps: Sequence[float] | None = None,
        attack_options: dict[str, Any] | None = None,
        lipschitz_search: bool = False,
        lipschitz_options: dict[str, Any] | None = None,
        lipschitz_samples: int = 256,
        warm_start: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, EquilibriumModel):
            raise ConfigurationError(
                f"model must be a lben_ode EquilibriumModel (LBEN, MonDEQ, …), got {type(model).__name__}"
            )
        self._save_plain_hyperparameters()
        self.model = model
        self.lr = check_positive("lr", lr)
        self.betas = check_betas(betas)
        self.certify_eps = check_eps(certify_eps, "certify_eps", allow_empty=True)
        self._normalization = _as_normalization(normalization)
        self.attack_eps = None if attack_eps is None else check_eps(attack_eps, "attack_eps", allow_empty=True)
        self.attack_options = _check_options("attack_options", attack_accuracy, attack_options)
        if not isinstance(lipschitz_search, bool):
            raise ConfigurationError(f"lipschitz_search must be a bool, got {lipschitz_search!r}")
        self.lipschitz_search = lipschitz_search
        self.lipschitz_options = _check_options("lipschitz_options", empirical_lipschitz, lipschitz_options)
        self.lipschitz_samples = check_count("lipschitz_samples", lipschitz_samples, minimum=2)
        self._lipschitz_inputs: list[torch.Tensor] = []
        if not isinstance(warm_start, bool):
            raise ConfigurationError(f"warm_start must be a bool, got {warm_start!r}")
        self.warm_start = warm_start
        self.warm_starts = WarmStartCache()
        # The indices and solves of the training batch whose backward pass is pending.
        self._pending_warm_start: tuple[torch.Tensor, WarmStart] | None = None
        if solver_options is not None and not isinstance(solver_options, Mapping):
            raise ConfigurationError(f"solver_options must be a dict of solver options, got {solver_options!r}")
        if solver is not None or solver_options:
            self.set_solver(model.solver.name if solver is None else solver, **dict(solver_options or {}))
        if warm_start and model.solver.differentiable:
            raise _warm_start_solver_error(model.solver)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{group}": metric
                for stage in STAGES
                for group, metric in (("classification", ClassificationMetrics()), ("forward", SolverMetrics()))
            }
        )
        self.metrics["train_backward"] = SolverMetrics()
        for stage in ("val", "test"):
            self.metrics[f"{stage}_certified"] = CertificationMetrics(self.certify_eps)
        self.metrics["test_attack"] = AttackMetrics(self.attack_eps or ())
        self._gamma: float | None = None
        self._warned_no_normalization = False
        # Metrics updated in the current epoch, by logged name: (metric, shown in the progress bar).
        self._epoch_metrics: dict[str, tuple[Metric, bool]] = {}
        # Solver metrics updated in the current epoch, by logged prefix (e.g. "train/forward").
        self._epoch_solver_metrics: dict[str, SolverMetrics] = {}
        # Solver extras (host floats) of the current epoch, by logged name: [sum, count].
        self._epoch_extras: dict[str, list[float]] = {}

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike[str] | IO[bytes],
        map_location: Any = None,
        hparams_file: str | os.PathLike[str] | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> LBENClassifier:
        """Rebuild a module from a checkpoint, as :meth:`LightningModule.load_from_checkpoint` does.

        Checkpoints written by ``lben-ode fit`` record the model, so ``LBENClassifier.load_from_checkpoint(path)``
        is enough; for one saved from Python give the model: ``load_from_checkpoint(path, model=LBEN(...))``.
        Other keyword arguments replace stored hyperparameters (e.g. ``solver="fb"``).

        Raises:
            CheckpointError: the file is missing, unreadable (truncated, text, random bytes, a pickle of
                other objects), not a Lightning checkpoint, does not record its model when none is
                given, or holds weights that do not fit the model; one line naming the file.
        """
        if not isinstance(checkpoint_path, (str, os.PathLike)) or "://" in str(checkpoint_path):
            return super().load_from_checkpoint(  # file objects and remote paths: Lightning's own checks
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        checkpoint = read_checkpoint(checkpoint_path) if weights_only is not False else None
        if checkpoint is not None and "model" not in kwargs and hparams_file is None:
            require_recorded_model(checkpoint, checkpoint_path)
        try:
            module = super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        except LBENError:
            raise
        except RuntimeError as exc:
            raise CheckpointError(f"cannot load {str(checkpoint_path)!r}: {_state_dict_problems(exc)}") from exc
        except (TypeError, ValueError, KeyError, ImportError, AttributeError) as exc:
            # jsonargparse and Lightning report a model configuration that does not fit this code
            raise CheckpointError(
                f"cannot rebuild the model recorded in {str(checkpoint_path)!r}: {_first_line(exc)}"
            ) from exc
        return module

    def _save_plain_hyperparameters(self) -> None:
        # From the CLI, Lightning hands save_hyperparameters the parsed configuration (plain data,
        # the model as class_path/init_args). Built in Python, the arguments include the model
        # itself and a Normalization object, neither of which loads with weights_only=True.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters()
        if isinstance(self.hparams.get("model"), nn.Module):
            self.save_hyperparameters(ignore=["model"])
        if isinstance(self.hparams.get("normalization"), Normalization):
            self.hparams["normalization"] = dataclasses.asdict(self.hparams["normalization"])

    # -- solver -----------------------------------------------------------------------------------
    def set_solver(self, name: str, **options: Any) -> None:
        """Switch the equilibrium solver (e.g. to evaluate with another one); recorded in ``hparams``."""
        if name not in available():
            raise unknown_name("solver", name, available())
        previous = self.model.solver
        self.model.set_solver(name, **options)
        if self.warm_start and self.model.solver.differentiable:
            refused = self.model.solver
            self.model.set_solver(previous)
            raise _warm_start_solver_error(refused)
        self.hparams["solver"] = name
        self.hparams["solver_options"] = dict(options)

    # -- setup ------------------------------------------------------------------------------------
    @property
    def normalization(self) -> Normalization | None:
        """The input normalisation used for raw-unit metrics (argument, else the data module's)."""
        if self._normalization is not None:
            return self._normalization
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(datamodule, "normalization", None)

    def setup(self, stage: str) -> None:
        """Check the trainer's precision and that the model fits the data module (input shape, classes).

        Mixed precision (``16-mixed``, ``bf16-mixed``) works: the equilibrium network runs in
        float32 with autocast disabled (see :meth:`EquilibriumModel.forward`); on a CPU Lightning
        turns ``16-mixed`` into ``bf16-mixed``. Half-precision weights (``16-true``, ``bf16-true``)
        are refused: equilibrium solves and their factorisations need float32 or float64.
        """
        precision = str(getattr(self.trainer, "precision", ""))
        if precision in _HALF_PRECISION:
            raise ConfigurationError(
                f"precision {precision!r} stores the weights in half precision, but equilibrium solves and their "
                "factorisations need float32 or float64: use '16-mixed' or 'bf16-mixed' (the solve runs in "
                "float32), '32-true' or '64-true'"
            )
        datamodule = getattr(self.trainer, "datamodule", None)
        data_shape = getattr(datamodule, "input_shape", None)
        model_shape = getattr(self.model, "input_shape", None)
        if data_shape is not None and model_shape is not None and tuple(data_shape) != tuple(model_shape):
            hint = (
                " (set the model's in_features to match, or the data module's flatten option)"
                if hasattr(self.model, "in_features")
                else ""
            )
            raise ShapeError(
                f"the model takes inputs shaped {tuple(model_shape)} but the data module gives "
                f"{tuple(data_shape)}{hint}"
            )
        if self.warm_start and stage == "fit":
            self._prepare_warm_starts(datamodule)
        num_classes = getattr(datamodule, "num_classes", None)
        out_features = getattr(self.model, "out_features", None)
        if num_classes is not None and out_features is not None and num_classes != out_features:
            raise ShapeError(
                f"the model has {out_features} outputs but the data has {num_classes} classes "
                "(set the model's out_features to match)"
            )

    def _prepare_warm_starts(self, datamodule: Any) -> None:
        # Data modules that can give their training batches' indices say so with a train_indices
        # attribute (lben_ode.datasets.ImageDataModule); other data must yield (x, y, idx) itself,
        # which the first training batch checks.
        if datamodule is not None and hasattr(datamodule, "train_indices"):
            datamodule.train_indices = True
        size = None
        dataset = getattr(datamodule, "dataset", None)
        if callable(dataset):
            try:
                size = len(dataset("train"))
            except (TypeError, KeyError, ValueError, LBENError):
                size = None
        self.warm_starts = WarmStartCache(size)
        self._pending_warm_start = None

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, classes)`` for inputs in model units ``(batch, *model.input_shape)``."""
        return self.model(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on every parameter of the model (fused where torch can: :func:`.optimizers.adam`)."""
        return adam(self.model.parameters(), lr=self.lr, betas=self.betas)

    # -- logging helpers --------------------------------------------------------------------------
    def _log_metrics(self, prefix: str, metrics: dict[str, Metric], prog_bar: tuple[str, ...] = ()) -> None:
        # The metrics were updated with this batch; they are logged once, at the end of the epoch
        # (_log_epoch_metrics). Each self.log call costs Lightning about half a millisecond, more
        # than a small model's whole training step, so per-step logging of a dozen metrics would
        # dominate the epoch time.
        for name, metric in metrics.items():
            self._epoch_metrics[f"{prefix}/{name}"] = (metric, name in prog_bar)

    def _log_epoch_metrics(self, stage: str) -> None:
        """Log (computed over the epoch and every process, then reset by Lightning) the metrics of ``stage``."""
        for key in [k for k in self._epoch_metrics if k.startswith(f"{stage}/")]:
            metric, prog_bar = self._epoch_metrics.pop(key)
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=prog_bar)
        for prefix in [k for k in self._epoch_solver_metrics if k.startswith(f"{stage}/")]:
            metric = self._epoch_solver_metrics.pop(prefix)
            # compute() reduces the states over every process, so each process logs the same values
            # (sync_dist averages identical numbers; it only silences Lightning's DDP warning).
            for name, value in metric.compute().items():
                self.log(f"{prefix}/{name}", value, on_step=False, on_epoch=True, sync_dist=True)
            metric.reset()
        for key in [k for k in self._epoch_extras if k.startswith(f"{stage}/")]:
            total, count = self._epoch_extras.pop(key)
            self.log(key, total / count, on_step=False, on_epoch=True, sync_dist=True)

    def _log_solve(self, stage: str, direction: str) -> None:
        stats = self.model.solver_stats.get(direction)
        if stats is None:
            return
        metric = self.metrics[f"{stage}_{direction}"]
        metric.update(stats)
        self._epoch_solver_metrics[f"{stage}/{direction}"] = metric
        # Extras are host floats: summed here and logged once per epoch (a self.log per step costs
        # more than a small model's solve).
        for name, value in stats.extra.items():
            total = self._epoch_extras.setdefault(f"{stage}/{direction}/extra/{name}", [0.0, 0])
            total[0] += float(value)
            total[1] += 1

    def _refresh_bound(self) -> None:
        self._gamma = self.model.lipschitz_bound()

    def _log_bound(self, stage: str) -> None:
        gamma = self.model.lipschitz_bound()
        if gamma is None:
            return
        self.log(f"{stage}/lipschitz/gamma", gamma, sync_dist=True)
        normalization = self.normalization
        if normalization is not None:
            self.log(f"{stage}/lipschitz/gamma_raw", normalization.bound_in_raw_units(gamma), sync_dist=True)

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Cross-entropy of one batch ``(x, y)`` (``(x, y, idx)`` with ``warm_start``), with implicit
        gradients through the equilibrium."""
        if self.warm_start:
            x, y, idx = batch_indices(batch, getattr(self._trainer, "datamodule", None) if self._trainer else None)
            starts = self.warm_starts.starts(idx)
            logits = self.model(x, warm_start=starts)
            assert starts.z is not None
            self.warm_starts.store_forward(idx, starts.z)
            self._pending_warm_start = (idx, starts)
        else:
            x, y = batch
            logits = self.model(x)
        check_labels(y, x.shape[0], logits.shape[1])
        per_sample = F.cross_entropy(logits, y, reduction="none")
        loss = per_sample.mean()
        if step_value_read(self, batch_idx):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=y.shape[0])
        self._log_metrics("train", self.metrics["train_classification"].update(per_sample, logits, y))
        self._log_solve("train", "forward")
        return loss

    def on_after_backward(self) -> None:
        """Record the adjoint (backward) solve of the implicit gradient (and keep its solution with ``warm_start``)."""
        self._log_solve("train", "backward")
        if self._pending_warm_start is not None:
            idx, starts = self._pending_warm_start
            if starts.adjoint is not None:
                self.warm_starts.store_adjoint(idx, starts.adjoint)
            self._pending_warm_start = None

    def on_train_epoch_end(self) -> None:
        """Log the epoch's metrics and the Lipschitz bound (it changes during training when γ is learned)."""
        self._log_epoch_metrics("train")
        self._log_bound("train")

    def _evaluation_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        logits = self.model(x)
        check_labels(y, x.shape[0], logits.shape[1])
        per_sample = F.cross_entropy(logits, y, reduction="none")
        self._log_metrics(
            stage, self.metrics[f"{stage}_classification"].update(per_sample, logits, y), prog_bar=("acc",)
        )
        self._log_solve(stage, "forward")
        attack = stage == "test" and bool(self.attack_eps)
        normalization = self._raw_units() if self._gamma is not None or attack else None
        if self._gamma is not None and normalization is not None:
            converged = solve_converged(self.model, x.shape[0], "forward", logits.device)
            certified = self.metrics[f"{stage}_certified"].update(
                logits, y, self._gamma, normalization.raw_scale, converged
            )
            self._log_metrics(f"{stage}/certified", certified)
        if attack and normalization is not None:
            self._attack(x, y, normalization)
        if stage == "test" and self.lipschitz_search:
            kept = sum(t.shape[0] for t in self._lipschitz_inputs)
            if kept < self.lipschitz_samples:
                self._lipschitz_inputs.append(x[: self.lipschitz_samples - kept].detach())

    def _progress_bars(self) -> bool:
        # The test-time Lipschitz search runs after the last batch, behind Lightning's bar at 100 %:
        # it gets its own bar when the trainer shows one and stderr is a terminal (or when asked).
        if self._trainer is None:
            return progress_wanted()
        trainer = self.trainer
        return trainer.progress_bar_callback is not None and trainer.is_global_zero and progress_wanted()

    def _raw_units(self) -> Normalization | None:
        normalization = self.normalization
        if normalization is None and not self._warned_no_normalization:
            rank_zero_warn(
                "no input normalisation (neither the normalization argument nor the data module's "
                "normalization attribute): certified and attack accuracy in raw units are not logged"
            )
            self._warned_no_normalization = True
        return normalization

    def _attack(self, x: torch.Tensor, y: torch.Tensor, normalization: Normalization) -> None:
        # Lightning evaluates under inference mode; the attack needs input gradients, and clones
        # made outside inference mode are ordinary tensors autograd can use.
        with torch.inference_mode(False), torch.enable_grad():
            x_raw = normalization.to_raw(x.clone())
            result = evaluate_attack(
                self.model, x_raw, y.clone(), self.attack_eps, normalization, allow_unconverged=True,
                **self.attack_options,
            )
        self._log_metrics(
            "test/attack", self.metrics["test_attack"].update(result.accuracy, y.shape[0], result.converged_fraction)
        )

    def on_validation_epoch_start(self) -> None:
        """Read the current Lipschitz bound once per evaluation."""
        self._refresh_bound()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Loss, accuracy, convergence and certificates of one validation batch."""
        self._evaluation_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's metrics and the Lipschitz bound in model and raw units."""
        self._log_epoch_metrics("val")
        self._log_bound("val")

    def on_test_epoch_start(self) -> None:
        """Read the current Lipschitz bound once per evaluation."""
        self._refresh_bound()
        self._lipschitz_inputs = []

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Loss, accuracy, convergence and certificates of one test batch."""
        self._evaluation_step("test", batch)

    def on_test_epoch_end(self) -> None:
        """Log the epoch's metrics and the Lipschitz bound in model and raw units, and run the
        Lipschitz search if asked."""
        self._log_epoch_metrics("test")
        self._log_bound("test")
        if self.lipschitz_search and self._lipschitz_inputs:
            with torch.inference_mode(False), torch.enable_grad():
                x = torch.cat(self._lipschitz_inputs).clone()
                estimate = empirical_lipschitz(
                    self.model, x, progress=self._progress_bars(), allow_unconverged=True, **self.lipschitz_options
                )
            self._lipschitz_inputs = []
            self.log("test/lipschitz/empirical_lower_bound", estimate.value, sync_dist=True, reduce_fx="max")
            self.log("test/lipschitz/converged_fraction", estimate.converged_fraction, sync_dist=True, reduce_fx="min")
            gamma = self.model.lipschitz_bound()
            if gamma is not None:
                self.log(
                    "test/lipschitz/empirical_over_gamma", estimate.value / gamma, sync_dist=True, reduce_fx="max"
                )

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Logits of a batch (``(x, y)`` or just ``x``)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(x)
