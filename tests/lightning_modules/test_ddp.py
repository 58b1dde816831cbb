"""Distributed data parallel on CPU: two processes train, and their synced metrics equal one process's."""

import numpy as np
import pytest
import torch
from lben_ode.datasets import DigitsDataModule
from lben_ode.lightning_modules import LBENClassifier
from torch.nn import functional as F

DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
TINY = ["--model.model.init_args.width", "16", "--trainer.enable_progress_bar", "false"]
# A check at every step: each sample's iteration count is then its own first crossing of tol,
# whatever else is in its batch (the default schedule places checks by the batch's worst sample).
EVERY_STEP = ["--model.solver_options", "{check_every: 1}"]


def test_two_process_training_and_metrics_agree_with_one_process(lben_ode_cli):
    out = lben_ode_cli.run(
        ["fit", *DDP, *TINY, *EVERY_STEP, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
         "--trainer.default_root_dir", "ddp"]
    )
    ddp_metrics = lben_ode_cli.printed_path(out, "metrics (CSV)")
    last = lben_ode_cli.printed_path(out, "last checkpoint")
    trained = lben_ode_cli.last_row_with(ddp_metrics, "train/loss")
    assert np.isfinite(trained["train/loss"]) and trained["train/backward/converged_fraction"] == 1.0
    # The end-of-epoch validation ran on two processes, after the last step: the checkpoint's weights.
    two = lben_ode_cli.last_row_with(ddp_metrics, "val/acc")

    out = lben_ode_cli.run(
        ["validate", "--ckpt_path", str(last), *TINY, *EVERY_STEP, "--trainer.default_root_dir", "one"]
    )
    one = lben_ode_cli.last_row_with(lben_ode_cli.printed_path(out, "metrics (CSV)"), "val/acc")

    # Direct computation on the whole validation set.
    module = LBENClassifier.load_from_checkpoint(last, weights_only=True)
    data = DigitsDataModule()
    data.setup()
    x, y = data.dataset("val").inputs, data.dataset("val").labels
    assert len(y) % 2 == 0  # no DistributedSampler padding: both runs see each sample once
    with torch.no_grad():
        logits = module(x)
    correct = (logits.argmax(1) == y).double()
    accuracy, loss = correct.mean().item(), F.cross_entropy(logits.double(), y).item()
    # Each process holds half the samples (rank r gets indices r, r+2, …); unsynced metrics would
    # report one half, which differs here, so agreement below shows the synchronisation.
    assert correct[0::2].mean().item() != accuracy

    for run in (one, two):
        assert run["val/acc"] == pytest.approx(accuracy, abs=1e-6)
        assert run["val/loss"] == pytest.approx(loss, rel=1e-5)
        assert run["val/forward/converged_fraction"] == 1.0
    for key in [k for k in one if k.startswith(("val/certified/acc", "val/lipschitz"))]:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
    assert two["val/certified/radius_raw_mean"] == pytest.approx(one["val/certified/radius_raw_mean"], rel=1e-5)
    # Per-sample iteration counts do not depend on how samples are batched (up to rounding that can
    # move a sample's crossing of tol by a step).
    assert two["val/forward/iterations_mean"] == pytest.approx(one["val/forward/iterations_mean"], abs=0.1)
    assert abs(two["val/forward/iterations_max"] - one["val/forward/iterations_max"]) <= 1
