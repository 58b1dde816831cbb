"""``lben-ode fit | validate | test | predict``: Lightning's CLI with the lben-ode defaults (:class:`LBENCLI`).

With no arguments, ``lben-ode fit`` trains the default: a dense LBEN (width 80, γ = 2, Peaceman-
Rachford, Adam 3e-3, 20 epochs) on the embedded 8×8 digits, logging to CSV under ``runs/``. Every
option can be set on the command line (``--model.solver fb``, ``--trainer.max_epochs 5``) or in
YAML files (``--config configs/mnist.yaml``); ``lben-ode fit --help`` lists them, and unknown keys
are errors. The command's entry point, :func:`main`, is in :mod:`.command` (it answers ``--help``
and ``robustness`` without importing Lightning, and prints errors as one line).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from lben_ode.errors import ConfigurationError

from .checkpoint import check_weights_fit, read_checkpoint
from .classifier import LBENClassifier
from .command import main
from .sequence import SequenceRegressor
from .sequence_cli import SEQUENCE_DEFAULTS, is_sequence_run

__all__ = ["DEFAULTS", "LBENCLI", "TRAINER_DEFAULTS", "main"]

#: ``--ckpt_path`` values Lightning resolves itself (no file to read first).
_TRAINER_CKPT_NAMES = ("best", "last", "hpc", "registry")

#: The configuration ``lben-ode`` starts from: a dense LBEN on the embedded 8×8 digits (no download).
#: ``configs/digits.yaml`` spells out the same values.
DEFAULTS: dict[str, Any] = {
    "model.model": {
        "class_path": "lben_ode.LBEN",
        "init_args": {"in_features": 64, "out_features": 10, "width": 80, "gamma": 2.0},
    },
    "model.solver": "pr",
    "model.lr": 3e-3,
    # 8×8 images: ℓ2 distances are about √(64/784) ≈ 0.29 of MNIST's, so the radii are smaller.
    "model.certify_eps": [0.25, 0.5, 0.75, 1.0],
    "data": {"class_path": "lben_ode.datasets.DigitsDataModule"},
    "checkpoint.monitor": "val/acc",
    "checkpoint.mode": "max",
    "checkpoint.save_last": True,
}

#: Trainer settings that differ from Lightning's own defaults.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 20,
    "default_root_dir": "runs",
    "log_every_n_steps": 10,
}

#: Batches between refreshes of the progress bar that ``lben-ode`` adds when none is configured.
#: Lightning's own default bar redraws after every batch, which on a small model costs about a tenth
#: of the epoch (a terminal shows ten redraws a second at most); the per-step loss is then logged only
#: on the steps the bar or a logger reads (:mod:`.step_logging`). ``--trainer.callbacks+=TQDMProgressBar
#: --trainer.callbacks.refresh_rate 1`` restores a refresh after every batch.
PROGRESS_REFRESH_RATE = 10

#: Run ``seed_everything`` with this seed unless ``--seed_everything`` says otherwise.
DEFAULT_SEED = 0

#: ``torch.set_num_threads`` of each process unless ``--torch_num_threads`` says otherwise.
DEFAULT_TORCH_THREADS = 1


def explicit_ckpt_path(args: Any) -> str | None:
    """The last ``--ckpt_path`` value in a command line (a list of strings), or None when it has none."""
    if not isinstance(args, (list, tuple)):
        return None
    value = None
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            value = str(args[i + 1])
        elif isinstance(arg, str) and arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
    return value


class LBENCLI(LightningCLI):
    """Lightning's CLI with the lben-ode defaults, CSV logs and a summary of where results went.

    Differences from :class:`~lightning.pytorch.cli.LightningCLI`:

    - the model is :class:`LBENClassifier` (its ``model`` argument picks the network), or
      :class:`~.sequence.SequenceRegressor` when the data module is a sequence data module
      (:func:`~.sequence_cli.is_sequence_run`, e.g. ``--config configs/duffing.yaml``);
    - a ``ModelCheckpoint`` on ``val/acc`` (best and last) is configurable as ``--checkpoint.*``;
    - the default logger is a ``CSVLogger`` in ``trainer.default_root_dir``;
    - ``--torch_num_threads`` (default 1) sets torch's intra-op CPU threads;
    - options given on the command line win over the hyperparameters stored in a ``--ckpt_path``
      checkpoint (so ``--model.solver fb`` evaluates a checkpoint with another solver).
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs["parser_kwargs"] = {
            "description": "Train, validate and test Lipschitz-bounded equilibrium networks. Also: "
            "'lben-ode robustness --ckpt A.ckpt [--ckpt B.ckpt …]' writes a robustness table and plot "
            "of trained checkpoints (see 'lben-ode robustness --help').",
            **(kwargs.get("parser_kwargs") or {}),
        }
        self._sequence_run = is_sequence_run(sys.argv[1:] if args is None else args)
        super().__init__(
            SequenceRegressor if self._sequence_run else LBENClassifier,
            LightningDataModule,
            subclass_mode_data=True,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=DEFAULT_SEED,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--checkpoint.*`` and ``--torch_num_threads``, and set the lben-ode defaults."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_argument(
            "--torch_num_threads",
            type=PositiveInt | None,
            default=DEFAULT_TORCH_THREADS,
            help="intra-op CPU threads per process (torch.set_num_threads); null keeps torch's choice. "
            "The dense models' small matrices gain nothing from more threads, and on a busy machine "
            "waiting threads slow every operation down; raise it for large models on many cores.",
        )
        parser.set_defaults(SEQUENCE_DEFAULTS if self._sequence_run else DEFAULTS)

    def before_instantiate_classes(self) -> None:
        """Apply ``--torch_num_threads`` before anything runs."""
        threads = self._get(self.config, "torch_num_threads")
        if threads is not None:
            torch.set_num_threads(threads)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as Lightning does, keeping the arguments to parse again over checkpoint defaults."""
        self._given_args = args
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        # Lightning applies the checkpoint's hyperparameters over the parsed configuration, which
        # would undo what the user gave. Instead they become the defaults of the subcommand and
        # the arguments are parsed again, so the command line and --config files win.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self._checkpoint: tuple[str, dict[str, Any]] | None = None
        given = explicit_ckpt_path(sys.argv[1:] if self._given_args is None else self._given_args)
        if given is not None and given.lower() not in ("null", "none", "") and str(ckpt_path) != given:
            # A --config after --ckpt_path wins, and a run's saved config.yaml holds ckpt_path: null:
            # `test --ckpt_path X --config run/config.yaml` would evaluate untrained weights.
            raise ConfigurationError(
                f"--ckpt_path {given} was replaced by ckpt_path: {ckpt_path} from a --config given after it "
                "(a run's saved config.yaml holds ckpt_path: null); give --config before --ckpt_path, or "
                "remove ckpt_path from the file"
            )
        if not ckpt_path or ckpt_path in _TRAINER_CKPT_NAMES or "://" in str(ckpt_path):
            return  # Lightning resolves these itself
        checkpoint = read_checkpoint(ckpt_path)
        self._checkpoint = (str(ckpt_path), checkpoint)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        try:
            self._subcommand_parsers[subcommand].set_defaults({f"model.{k}": v for k, v in hparams.items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"the hyperparameters stored in {ckpt_path!r} do not fit this command's model options: {exc}"
            ) from exc
        self.parse_arguments(self.parser, self._given_args)

    def _check_checkpoint_fits(self) -> None:
        # Lightning would load the weights deep inside the run, with a long traceback on mismatch.
        if getattr(self, "_checkpoint", None) is None:
            return
        path, checkpoint = self._checkpoint
        check_weights_fit(checkpoint["state_dict"], self.model, path)

    def before_fit(self) -> None:
        """Check that a ``--ckpt_path`` to resume from fits the configured model."""
        self._check_checkpoint_fits()

    def before_validate(self) -> None:
        """Check that ``--ckpt_path`` fits the configured model."""
        self._check_checkpoint_fits()

    def before_test(self) -> None:
        """Check that ``--ckpt_path`` fits the configured model."""
        self._check_checkpoint_fits()

    def before_predict(self) -> None:
        """Check that ``--ckpt_path`` fits the configured model."""
        self._check_checkpoint_fits()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with a ``CSVLogger`` in ``default_root_dir`` unless a logger is configured, and
        a progress bar refreshed every :data:`PROGRESS_REFRESH_RATE` batches unless one is configured
        (or ``enable_progress_bar`` is false)."""
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True):
            root = config.get("default_root_dir") or "."
            kwargs.setdefault("logger", CSVLogger(save_dir=root, name="lightning_logs"))
        callbacks = config.get("callbacks")
        callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Given as kwargs, the list replaces the configured one: it carries the configured callbacks.
            kwargs.setdefault("callbacks", [*callbacks, TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_RATE)])
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Print where the checkpoints, metrics and configuration went."""
        self._report("fit")

    def after_validate(self) -> None:
        """Print where the metrics and configuration went."""
        self._report("validate")

    def after_test(self) -> None:
        """Print where the metrics and configuration went."""
        self._report("test")

    @rank_zero_only
    def _report(self, subcommand: str) -> None:
        trainer = self.trainer
        lines = []
        if subcommand == "fit":
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    if callback.best_model_path:
                        score = callback.best_model_score
                        value = "" if score is None else f" ({callback.monitor} = {float(score):.4f})"
                        lines.append(f"best checkpoint: {callback.best_model_path}{value}")
                    if callback.last_model_path:
                        lines.append(f"last checkpoint: {callback.last_model_path}")
        for logger in trainer.loggers:
            # logger.log_dir, not trainer.log_dir: the latter is a collective call across processes.
            if isinstance(logger, CSVLogger):
                lines.append(f"metrics (CSV):   {Path(logger.log_dir) / 'metrics.csv'}")
            elif type(logger).__name__ == "TensorBoardLogger":
                lines.append(f"TensorBoard:     {logger.log_dir} (tensorboard --logdir {logger.root_dir})")
            config = Path(logger.log_dir or "") / "config.yaml"
            if logger.log_dir and config.is_file():
                lines.append(f"config:          {config}")
        if lines:
            print("\n".join(lines), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
