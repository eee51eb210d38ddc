"""``python -m xumx.export``: the network as an ONNX file, for any ONNX runtime.

    python -m xumx.export --model x-umx.h5 --out x-umx.onnx

Without ``--model`` the published weights are used (downloaded once, as by ``xumx.test``);
``--umx-infer`` exports a folder of Open-Unmix ``<target>.h5`` files. The file maps a mixture
magnitude spectrogram to the sources' masks (see :mod:`xumx.onnxnet` and the README's
"ONNX export" section for its inputs, outputs and an onnxruntime example).
"""
import os
import sys

PROG = "xumx.export"


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    from .config import build_parser
    from .onnxnet import INPUT, OPSET, OUTPUT, export
    from .test import model_path
    from .weights import WeightsError
    args = build_parser("export").parse_args(argv)
    try:
        model = model_path(args.model, args.umx_infer, args.quiet)
        cfg = export(model, args.out, args.umx_infer, args.targets)
    except (ValueError, OSError) as e:   # WeightsError is a ValueError
        what = "cannot load the model" if isinstance(e, WeightsError) else "export failed"
        if isinstance(e, OSError):
            e = f"{args.out}: {e.strerror or e}"
        print(f"{PROG}: {what}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    if not args.quiet:
        c, f = cfg.nb_channels, cfg.nb_bins
        print(f"{args.out}: {os.path.getsize(args.out) / 1e6:.0f} MB, ONNX opset {OPSET}: "
              f"{INPUT} float32 (frames, batch, {c}, {f}) -> {OUTPUT} float32 "
              f"({len(cfg.sources)}, frames, batch, {c}, {f}) for sources "
              f"{', '.join(cfg.sources)}; STFT {cfg.nfft}/{cfg.nhop} at {cfg.sample_rate} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
