"""X-UMX training losses as pure nnabla-graph functions: the Multi-Domain Loss (MDL) over the
Combination Loss (CL) of every proper, non-empty subset of sources.

Shapes use: N frames, B batch, C channels, F bins, L samples, R rows (flattened B * C).
Sources are lists (one entry per source, in the model's order), or for targets one array with
the sources stacked on the channel axis; nothing assumes a number of sources or channels.
On CPU contexts each combination loss is one fused function (:mod:`xumx.training.kernels.losses`).
"""
import itertools
from typing import List, Sequence, Tuple

#: Samples dropped at each end of every row by the published ``sdr_loss_core`` (the ISTFT edges
#: are the least reliable; the asteroid port keeps them). Configurable through ``trim``.
SDR_EDGE_TRIM = 200
#: The published epsilons of the weighted-SDR loss.
SDR_EPS = 1e-10


def source_combinations(nb_sources: int) -> List[Tuple[int, ...]]:
    """Every proper, non-empty subset of ``range(nb_sources)``: sizes 1..n-1, 2^n - 2 subsets
    (14 for four sources), singles first, then pairs, then triples..., each in lexicographic
    order (the published order). A single source has no proper subset, so it gives ``[(0,)]``.
    """
    if nb_sources < 1:
        raise ValueError(f"need at least one source, not {nb_sources}")
    if nb_sources == 1:
        return [(0,)]
    return [c for k in range(1, nb_sources)
            for c in itertools.combinations(range(nb_sources), k)]


def _sum(vs):
    import nnabla.functions as F
    return vs[0] if len(vs) == 1 else F.add_n(*vs)


def _per_source(targets, nb_sources: int, axis: int, length=None) -> list:
    """A list of per-source target Variables, from a list or one stacked Variable, each cut to
    ``length`` on the last axis when it is longer."""
    index = [slice(None)] * len(targets[0].shape if isinstance(targets, (list, tuple)) else targets.shape)
    if length is not None:
        index[-1] = slice(0, length)
    if isinstance(targets, (list, tuple)):
        if len(targets) != nb_sources:
            raise ValueError(f"{nb_sources} sources but {len(targets)} targets")
        return [t[tuple(index)] if length is not None and t.shape[-1] != length else t for t in targets]
    size, rem = divmod(targets.shape[axis], nb_sources)
    if rem:
        raise ValueError(f"targets {targets.shape} do not stack {nb_sources} sources on axis {axis}")
    out = []
    for k in range(nb_sources):
        index[axis] = slice(k * size, (k + 1) * size)
        out.append(targets[tuple(index)])
    return out


def freq_combination_loss(mix_spec, masks: Sequence, target_mags):
    """Frequency-domain Combination Loss (published ``mse_loss``).

    Shapes: mix_spec (N, B, C, F); masks: list over S sources of (N, B, C, F); target_mags:
    the same, or one (N, B, S * C, F) with the sources stacked in order -> scalar. For each subset K of :func:`source_combinations`, the mean squared error between
    (sum_{k in K} mask_k) * mix_spec and sum_{k in K} target_mag_k; the result is the unweighted
    mean over subsets. Targets of a subset are the sum of magnitudes, not the magnitude of the sum.
    """
    import nnabla.functions as F
    from . import kernels
    if isinstance(target_mags, (list, tuple)) and len(masks) != len(target_mags):
        raise ValueError(f"{len(masks)} masks but {len(target_mags)} targets")
    if kernels.enabled():
        from .kernels.losses import freq_combination_loss as fused
        return fused(source_combinations(len(masks)), mix_spec, masks, target_mags)
    target_mags = _per_source(target_mags, len(masks), 2)
    terms = []
    for combo in source_combinations(len(masks)):
        est = _sum([masks[k] for k in combo]) * mix_spec
        terms.append(F.mean(F.squared_error(est, _sum([target_mags[k] for k in combo]))))
    return _sum(terms) / float(len(terms))


def weighted_sdr_loss(mixture, estimate, target, trim: int = SDR_EDGE_TRIM, eps: float = SDR_EPS):
    """Weighted-SDR loss (Choi et al.; published ``sdr_loss_core``), in [0, 2], 0 when perfect.

    Shapes: mixture, estimate, target (R, L) -> scalar. ``trim`` samples are dropped at each end
    of every row first. Per row, with noise n = mixture - target and n^ = mixture - estimate,
    alpha = |y|^2 / (|y|^2 + |n|^2 + eps) and
    loss = -alpha cos(estimate, target) - (1 - alpha) cos(n^, n),
    with cos(a, b) = <a, b> / (sqrt(eps + |a|^2) sqrt(eps + |b|^2) + eps); the result is
    1 + the mean over rows.
    """
    import nnabla.functions as F
    length = mixture.shape[-1]
    if trim:
        if length <= 2 * trim:
            raise ValueError(f"{length} samples are too few for an edge trim of {trim}")
        mixture, estimate, target = (v[:, trim:length - trim] for v in (mixture, estimate, target))

    def energy(v):
        return F.sum(v ** 2, axis=1)

    def cos(a, b):
        dot = F.sum(a * b, axis=1)
        return dot / (F.pow_scalar(energy(a) + eps, 0.5) * F.pow_scalar(energy(b) + eps, 0.5) + eps)

    noise, noise_est = mixture - target, mixture - estimate
    e_target = energy(target)
    alpha = e_target / (e_target + energy(noise) + eps)
    rows = -alpha * cos(estimate, target) - (1.0 - alpha) * cos(noise_est, noise)
    return 1.0 + F.mean(rows)


def time_combination_loss(mixture, estimates: Sequence, targets: Sequence,
                          trim: int = SDR_EDGE_TRIM, eps: float = SDR_EPS):
    """Time-domain Combination Loss (published ``sdr_loss``).

    Shapes: estimates: list over S sources of (B, C, L); mixture (B, C, T) and targets, a list
    over S sources of (B, C, T) or one (B, S * C, T), with T >= L -> scalar. Mixture and targets
    are cut to the first L samples. For each subset of :func:`source_combinations`, the
    waveform sums of the estimates and of the targets enter :func:`weighted_sdr_loss` against
    the mixture; all subsets weigh the same.
    """
    import nnabla.functions as F
    from . import kernels
    if isinstance(targets, (list, tuple)) and len(estimates) != len(targets):
        raise ValueError(f"{len(estimates)} estimates but {len(targets)} targets")
    if kernels.enabled():
        from .kernels.losses import time_combination_loss as fused
        return fused(source_combinations(len(estimates)), mixture, estimates, targets, trim, eps)
    batch, channels, length = estimates[0].shape
    targets = _per_source(targets, len(estimates), 1, length)
    if mixture.shape[-1] != length:
        mixture = mixture[:, :, :length]

    def rows(v):
        return F.reshape(v, (batch * channels, length))

    terms = [weighted_sdr_loss(rows(mixture), rows(_sum([estimates[k] for k in combo])),
                               rows(_sum([targets[k] for k in combo])), trim, eps)
             for combo in source_combinations(len(estimates))]
    return _sum(terms) / float(len(terms))


def multi_domain_loss(time_loss, freq_loss, mcoef: float):
    """Multi-Domain Loss: ``mcoef * time_loss + freq_loss`` (published default mcoef = 10)."""
    return mcoef * time_loss + freq_loss
