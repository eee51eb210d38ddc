"""Learning-rate decay on a plateau and early stopping, in plain Python with state dicts (for
resuming). Both follow the published X-UMX semantics (reference §4.2), except that early stopping
is honoured for X-UMX too.
"""
import math
from dataclasses import asdict, dataclass
from typing import Optional


@dataclass
class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` once the monitored loss has not improved for more
    than ``patience`` epochs; then wait ``cooldown`` epochs before counting bad epochs again.

    "Improved" means ``loss < best * (1 - threshold)`` (mode min, relative threshold). The rate
    never goes below ``min_lr``, and a decrease smaller than ``eps`` is ignored. Published
    defaults: factor 0.3, patience 80, threshold 1e-4, cooldown 10, min_lr 0, eps 1e-8.
    """
    lr: float
    factor: float = 0.3
    patience: int = 80
    threshold: float = 1e-4
    cooldown: int = 10
    min_lr: float = 0.0
    eps: float = 1e-8
    best: float = math.inf
    num_bad_epochs: int = 0
    cooldown_counter: int = 0

    def __post_init__(self):
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"the decay factor must be in (0, 1), not {self.factor}")

    def step(self, loss: float) -> float:
        """Record one epoch's loss and return the learning rate for the next epoch."""
        if loss < self.best * (1.0 - self.threshold):
            self.best = float(loss)
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "ReduceLROnPlateau":
        return cls(**state)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a loss below ``best - min_delta``, or at a NaN loss.

    ``step`` returns True when training should stop; ``improved`` tells whether the last loss
    was a new best (the epoch whose model is saved as the best one).
    """
    patience: int = 1000
    min_delta: float = 0.0
    best: Optional[float] = None
    num_bad_epochs: int = 0
    improved: bool = False

    def step(self, loss: float) -> bool:
        loss = float(loss)
        if math.isnan(loss):
            self.improved = False
            return True
        if self.best is None or loss < self.best - self.min_delta:
            self.best, self.num_bad_epochs, self.improved = loss, 0, True
        else:
            self.num_bad_epochs += 1
            self.improved = False
        return self.num_bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "EarlyStopping":
        return cls(**state)
