"""Training any model of the zoo with its authors' recipe, resumable, on one device or many hosts.

    config.py      the training config, checked before anything starts (errors name the flag)
    optim.py       Adam, the staircase / cosine learning-rate schedules, the weight average
    step.py        the train state and the jitted, state-donating train step
    warm_start.py  `--config.init_from`: a trained model's weights copied into a new run
    parallel.py    the device mesh, batch sharding, several hosts
    workdir.py     one run per workdir, nothing left behind by a run that fails early
    stopping.py    SIGTERM / Ctrl-C: finish the step, save it, stop with one line
    loop.py        `train_and_evaluate`: the loop, validation, logging and checkpoints

`train.py` calls `train_and_evaluate(config, workdir)`.
"""

from drsan_jax.training.config import (
    LOSSES,
    check_config,
    config_field_hint,
    model_config,
)
from drsan_jax.training.loop import train_and_evaluate
from drsan_jax.training.optim import create_optimizer, learning_rate_schedule
from drsan_jax.training.step import (
    TrainState,
    create_train_state,
    fft_loss,
    l1_fft_loss,
    l1_loss,
    mse_loss,
    train_step,
)
from drsan_jax.training.stopping import TrainingStopped
from drsan_jax.training.warm_start import params_from_checkpoint

__all__ = [
    "LOSSES",
    "TrainState",
    "TrainingStopped",
    "check_config",
    "config_field_hint",
    "create_optimizer",
    "create_train_state",
    "fft_loss",
    "l1_fft_loss",
    "l1_loss",
    "learning_rate_schedule",
    "mse_loss",
    "model_config",
    "params_from_checkpoint",
    "train_and_evaluate",
    "train_step",
]
