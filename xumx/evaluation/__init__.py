"""Scoring separators on MUSDB18 with museval (BSSEval v4), the library behind ``xumx.eval``:
running (:mod:`.run`), the record of what made the scores (:mod:`.identity`) and reporting
(:mod:`.report`).

Layout of what :func:`evaluate` writes (``S`` is the subset, usually ``test``)::

    <out_dir>/S/<track>/<target>.wav          estimates (only with out_dir)
    <eval_dir>/S/<track>.json                 museval v4 scores of the model, one file per track
    <eval_dir>/mixture/S/<track>.json         the mixture-as-estimate baseline (with baseline)
    <eval_dir>/scores.csv                     the aggregate table, one row per method and target
    <eval_dir>/scores.pandas                  a museval MethodStore (pandas pickle), every frame
    <eval_dir>/sdr.png                        boxplots of per-track SDR, per target and method
    <eval_dir>/identity.json                  what made the model's scores (see below)

The per-track JSONs are the layout ``museval.EvalStore.add_eval_dir`` and
``museval.MethodStore.add_eval_dir`` read. Aggregation is the SiSEC one: the median over the
1 s frames of a track, then the median over tracks, per target and metric.

Each file is written to a temporary name and renamed, and a track whose JSON exists and holds
every target is not scored again, so a run killed half-way loses at most the tracks in progress.

Scores are tied to what made them: ``identity.json`` records the SHA-256 of the model's files
(the published weights' when no model is given), the separation settings (targets, Wiener
settings, UMX or X-UMX, the rate the model runs at) and the chunking. A run reuses the scores
of an eval folder only when its identity is the same; another model or other settings are
refused (:func:`.identity.check_identity`), as is a folder holding model scores without a record. The
mixture baseline is the same whatever the model, so its scores are always reused.
"""
from .identity import IDENTITY, check_identity, identity_of  # noqa: F401
from .report import (AGGREGATION_NOTE, BASELINE, METRICS, Method, Results,  # noqa: F401
                     aggregate, format_table, load_store, read_scores, results_csv,
                     score_path, sdr_comparison, summarize)
from .run import estimate_track, evaluate, open_tracks, process_track, write_estimates  # noqa: F401
