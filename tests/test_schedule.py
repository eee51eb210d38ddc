"""Plateau learning-rate decay and early stopping (published semantics, with resume state)."""
import math

import pytest

from xumx.training.schedule import EarlyStopping, ReduceLROnPlateau


def test_lr_drops_after_more_than_patience_bad_epochs_then_cools_down():
    s = ReduceLROnPlateau(1.0, factor=0.5, patience=2, cooldown=3)
    assert s.step(10.0) == 1.0          # first loss is the best
    assert [s.step(10.0) for _ in range(2)] == [1.0, 1.0]   # 2 bad epochs: not yet
    assert s.step(10.0) == 0.5          # the 3rd bad epoch (> patience) decays
    # cooldown: three epochs whose bad results are not counted, then patience again
    assert [s.step(10.0) for _ in range(3 + 2)] == [0.5] * 5
    assert s.step(10.0) == 0.25


def test_relative_threshold_counts_tiny_improvements_as_bad():
    s = ReduceLROnPlateau(1.0, factor=0.5, patience=0, cooldown=0, threshold=1e-2)
    s.step(100.0)
    assert s.step(99.5) == 0.5          # 0.5 % better < 1 % threshold: bad epoch
    assert s.best == 100.0
    s.step(50.0)
    assert s.best == 50.0


def test_lr_respects_min_lr_and_eps():
    s = ReduceLROnPlateau(1e-3, factor=0.1, patience=0, cooldown=0, min_lr=5e-4)
    s.step(1.0)
    assert s.step(1.0) == pytest.approx(5e-4)
    assert s.step(1.0) == pytest.approx(5e-4)


def test_scheduler_state_round_trip_continues_identically():
    a = ReduceLROnPlateau(1.0, factor=0.3, patience=1, cooldown=1)
    losses = [5, 4, 4, 4, 4, 3, 3, 3, 3]
    for x in losses[:4]:
        a.step(x)
    b = ReduceLROnPlateau.from_state(a.state_dict())
    assert [a.step(x) for x in losses[4:]] == [b.step(x) for x in losses[4:]]


def test_early_stopping_after_patience_and_on_nan():
    es = EarlyStopping(patience=2)
    assert es.step(1.0) is False and es.improved
    assert es.step(1.0) is False and not es.improved
    assert es.step(2.0) is True
    es = EarlyStopping(patience=100)
    es.step(1.0)
    assert es.step(math.nan) is True


def test_early_stopping_state_round_trip():
    es = EarlyStopping(patience=3)
    es.step(2.0)
    es.step(3.0)
    copy = EarlyStopping.from_state(es.state_dict())
    assert copy.best == 2.0 and copy.num_bad_epochs == 1
    assert [copy.step(3.0), copy.step(3.0)] == [False, True]


def test_bad_factor_is_rejected():
    with pytest.raises(ValueError):
        ReduceLROnPlateau(1.0, factor=1.5)
