"""``python -m xumx.test``: separate audio files into stems.

    python -m xumx.test --inputs song.mp3 other.flac --model x-umx.h5 --outdir out/

writes ``out/song/{bass,drums,vocals,other}.wav`` and ``out/other/...``. Without ``--model``
the published weights are downloaded to the user cache (see :mod:`xumx.pretrained`).

This module also re-exports the function API (``separate``, ``separate_args_dict``) that
Spleeter Web imports from ``xumx.test``. Importing it parses nothing and runs nothing.
"""
import sys
import warnings

from .api import separate, separate_args_dict  # noqa: F401  (public API kept here)

__all__ = ["main", "separate", "separate_args_dict"]
PROG = "xumx.test"


def _say(msg: str):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _show_audio_warnings(default):
    """A ``warnings.showwarning`` that prints AudioWarnings as one line, others as before."""
    from .audio import AudioWarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, AudioWarning):
            _say(f"warning: {message}")
        else:
            default(message, category, filename, lineno, file, line)
    return show


def model_path(model, umx: bool = False, quiet: bool = False) -> str:
    """``model``, or without one the published weights (downloaded once into the user cache,
    with a byte bar on stderr unless ``quiet``). Raises ValueError with a one-line reason."""
    if model:
        return model
    if umx:
        raise ValueError("--umx-infer needs --model: a folder of <target>.h5 UMX files")
    from tqdm import tqdm
    from .pretrained import DownloadError, published_model
    bars = []

    def progress(nb, total):   # a bar once bytes arrive (none when offline)
        if not bars:
            bars.append(tqdm(desc="x-umx.h5", total=total, unit="B", unit_scale=True,
                             file=sys.stderr, disable=quiet, leave=False))
        bars[0].update(nb)
    try:
        return published_model(progress=progress)
    except DownloadError as e:
        raise ValueError(str(e)) from None
    finally:
        for bar in bars:
            bar.close()


def _load_separator(args, separation):
    from .engine import EngineError
    from .separator import Separator
    from .weights import WeightsError
    model = model_path(args.model, args.umx_infer, args.quiet)
    try:
        return Separator.from_file(model, separation, umx=args.umx_infer, context=args.context,
                                   device_id=args.device_id)
    except EngineError as e:
        raise ValueError(f"--context {args.context}: {e}") from None
    except (WeightsError, OSError) as e:
        raise ValueError(f"cannot load the model: {e}") from None


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0: every input separated)."""
    from .config import build_parser, output_config_from_args, separation_config_from_args
    from .inference import limit_heap_arenas
    from .interrupt import Terminated, exit_status, sigterm_as_interrupt
    limit_heap_arenas()
    parser = build_parser("test")
    args = parser.parse_args(argv)
    try:
        options = output_config_from_args(args)
        separation = separation_config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    if args.sample_rate is not None and args.sample_rate <= 0:
        parser.error(f"--sample-rate must be positive, not {args.sample_rate}")
    with warnings.catch_warnings():
        warnings.showwarning = _show_audio_warnings(warnings.showwarning)
        from .audio import AudioWarning
        warnings.simplefilter("always", AudioWarning)
        try:
            with sigterm_as_interrupt():
                return _run(args, options, separation)
        except KeyboardInterrupt as e:
            _say(f"{'terminated' if isinstance(e, Terminated) else 'interrupted'}; stems already "
                 f"finished are kept, no partial stem was written")
            return exit_status(e)


def _run(args, options, separation) -> int:
    from .audio import AudioError
    from .inference import output_folders, separate_file
    from .interrupt import check as check_interrupt
    try:
        separator = _load_separator(args, separation)
    except ValueError as e:
        _say(str(e))
        return 1
    model_rate = args.sample_rate or separator.cfg.sample_rate
    failed = 0
    for path, folder in zip(args.inputs, output_folders(args.inputs, args.out_dir)):
        try:
            result = separate_file(separator, path, folder, options, model_rate)
        except AudioError as e:
            _say(str(e))
            failed += 1
            continue
        except (ValueError, RuntimeError, MemoryError) as e:
            check_interrupt()   # an error a signal caused (e.g. a lock it broke) is the signal's
            _say(f"{path}: separation failed ({type(e).__name__}: {e})")
            failed += 1
            continue
        if not options.quiet:
            print(result.summary(), flush=True)
    if failed and len(args.inputs) > 1:
        _say(f"{failed} of {len(args.inputs)} inputs failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
