"""Training recipes: YAML files that set training fields by name, and the record of a run.

``python -m xumx.train --config FILE.yaml`` sets any field of :class:`~xumx.config.ModelConfig`
and :class:`~xumx.config.TrainConfig` by its name (the flag's name with ``_`` for ``-``); flags
on the command line override it. A run's folder records its effective configuration as
``config.yaml`` (:func:`recipe_text`), which ``--resume`` reads back (:func:`train_values`).
"""
import os
from typing import Any, Dict, List

from .config import ModelConfig, TrainConfig
from .errors import ConfigError
from .flags import coerce, flagged_fields

#: The file in a training run's folder that records its effective configuration.
RUN_CONFIG = "config.yaml"
#: Fields a recipe does not set: what a run continues or replaces, and how much it prints,
#: are the command line's.
NOT_IN_RECIPES = ("resume", "force", "quiet")
#: The history files of a run's folder (``.json`` and ``.csv``) and its plot.
HISTORY, PLOT = "history", "training.png"


def recipe_fields() -> dict:
    """{field name: (dataclass, field)} of every field a recipe may set."""
    return {f.name: (cls, f) for cls in (ModelConfig, TrainConfig) for f in flagged_fields(cls)
            if f.name not in NOT_IN_RECIPES}


def read_recipe(path: str) -> Dict[str, Any]:
    """{field name: value} of a YAML training recipe; ConfigError naming the file and the key
    for a missing or malformed file, an unknown key or a bad value."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        from .files import os_reason
        raise ConfigError(f"{path}: cannot read the recipe ({os_reason(e)})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not a YAML recipe ({' '.join(str(e).split())[:200]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of field names to values")
    fields = {name: f for name, (_, f) in recipe_fields().items()}
    out = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{path}: unknown key {key!r} (the keys are the flag names with "
                              f"'_' for '-': {', '.join(sorted(fields))})")
        out[key] = coerce(fields[key], value, f"{path}: {key}")
    return out


def recipe_path(name: str) -> str:
    """The file of ``--config NAME``: a path, or the name of a recipe shipped with xumx
    (``x-umx-musdb18``, ``demo``: recipes/ of the repository, installed as ``xumx/recipes``)."""
    if os.path.exists(name) or os.sep in name:
        return name
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(here, "recipes"), os.path.join(os.path.dirname(here), "recipes")):
        path = os.path.join(folder, name if name.endswith(".yaml") else f"{name}.yaml")
        if os.path.isfile(path):
            return path
    return name   # read_recipe says that it cannot be read


def run_config_path(resume: str) -> str:
    """The recorded configuration of the run that ``--resume`` names (a folder or a file in it)."""
    folder = resume if os.path.isdir(resume) else os.path.dirname(resume)
    return os.path.join(folder, RUN_CONFIG)


def run_files(folder: str) -> List[str]:
    """The files of a training run in ``folder`` (what ``xumx.train`` writes there), those
    that exist."""
    from .modelfiles import BEST_NAME, CHECKPOINT_NAME
    names = (RUN_CONFIG, CHECKPOINT_NAME, BEST_NAME, os.path.splitext(BEST_NAME)[0] + ".json",
             f"{HISTORY}.json", f"{HISTORY}.csv", PLOT)
    return [os.path.join(folder, n) for n in names if os.path.lexists(os.path.join(folder, n))]


def resumable(folder: str) -> bool:
    """Whether ``folder`` holds a run that ``--resume`` can continue (its checkpoint)."""
    from .modelfiles import CHECKPOINT_NAME
    return os.path.isfile(os.path.join(folder, CHECKPOINT_NAME))


def replaced_run(cfg: TrainConfig) -> List[str]:
    """The files of another run that a new run into ``cfg.output`` would replace: [] when the
    folder holds none, or ``cfg.resume`` continues the run there; with ``cfg.force``, those
    files (the caller removes them before writing); else a ConfigError (exit status 2) that
    says how to continue that run or where to start this one. No run's work is replaced
    without ``--force``."""
    held = run_files(cfg.output)
    if not held:
        return []
    if cfg.resume:
        from .modelfiles import CHECKPOINT_NAME
        resumed = os.path.join(cfg.resume, CHECKPOINT_NAME) if os.path.isdir(cfg.resume) \
            else cfg.resume
        if os.path.realpath(resumed) == os.path.realpath(os.path.join(cfg.output,
                                                                        CHECKPOINT_NAME)):
            return []
    if cfg.force:
        return held
    names = ", ".join(os.path.basename(f) for f in held)
    if resumable(cfg.output):
        how = f"continue it with --resume {cfg.output}, or give a new --output"
    else:
        how = "it finished no epoch, so there is nothing to resume: give a new --output"
    raise ConfigError(f"{cfg.output} holds a training run ({names}): {how} (--force starts "
                      f"over there, removing that run's files)")


#: Training fields that fix the network's shapes besides ModelConfig's (the bandwidth fixes
#: max_bin): a resumed run keeps its model, so none of them may change on resuming.
SHAPE_FIELDS = ("bandwidth",)


def train_values(cli: Dict[str, Any]) -> Dict[str, Any]:
    """The training fields of a command line: the resumed run's ``config.yaml`` (with
    ``--resume``, when there is one), then the recipe (``--config``), then the flags given.
    Resuming a run folder keeps writing to it unless ``--output`` is given. A resumed run
    keeps its model: a model field (recipe or flag) that differs from the recorded one is a
    ConfigError naming it."""
    values: Dict[str, Any] = {}
    resume = cli.get("resume")
    recorded: Dict[str, Any] = {}
    if resume:
        path = run_config_path(resume)
        if os.path.isfile(path):
            recorded = read_recipe(path)
            values.update(recorded)
        if os.path.isdir(resume):
            values["output"] = resume
    asked = dict(read_recipe(recipe_path(cli["config"]))) if cli.get("config") else {}
    asked.update({k: v for k, v in cli.items() if k != "config"})
    fields = recipe_fields()
    for name, value in asked.items():
        if name in recorded and (fields[name][0] is ModelConfig or name in SHAPE_FIELDS):
            flag = fields[name][1].metadata["flag"].names[0]
            if coerce(fields[name][1], value, flag) != recorded[name]:
                raise ConfigError(f"{flag} {_shown(value)} differs from the resumed run's "
                                  f"{_shown(recorded[name])} ({run_config_path(resume)}): a "
                                  f"resumed run keeps its model; leave {flag} out, or start a "
                                  f"new run with another --output")
    values.update(asked)
    return values


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def recipe_text(model: ModelConfig, train: TrainConfig) -> str:
    """The YAML of every training field (what ``config.yaml`` of a run records), by name."""
    import yaml
    configs = {ModelConfig: model, TrainConfig: train}
    data = {}
    for name, (cls, f) in recipe_fields().items():
        value = getattr(configs[cls], name)
        data[name] = list(value) if isinstance(value, tuple) else value
    return ("# the effective configuration of this run (python -m xumx.train --config this file)\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))

