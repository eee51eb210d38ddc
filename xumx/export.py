"""``python -m xumx.export``: the network as an ONNX file, for any ONNX runtime.

    python -m xumx.export --model x-umx.h5 --out x-umx.onnx

Without ``--model`` the published weights are used (downloaded once, as by ``xumx.test``);
``--umx-infer`` exports a folder of Open-Unmix ``<target>.h5`` files; ``--precision int8`` the
graph with int8 LSTM weights (it needs onnxruntime's com.microsoft operators). The file maps a mixture
magnitude spectrogram to the sources' masks (see :mod:`xumx.onnxnet` and docs/onnx-engine.md
for its inputs, outputs and an onnxruntime example).
"""
import os
import sys


def main(argv=None) -> int:
    """Run the command line; returns the exit status (:mod:`xumx.cli`)."""
    from .cli import run
    return run("export", _export, argv, "nothing was written")


def _export(argv) -> int:
    from .modelfiles import ModelFiles
    from .onnxnet import INPUT, OPSET, OUTPUT, export
    from .parsing import parse
    from .weights import cannot_load
    out, load, separation = parse("export", argv)
    model = ModelFiles.resolve(load.model, load.umx or None, separation.targets, out.quiet)
    with cannot_load(model.path):
        cfg = export(model, out.out, separation.precision)
    if not out.quiet:
        c, f = cfg.nb_channels, cfg.nb_bins
        print(f"{out.out}: {os.path.getsize(out.out) / 1e6:.0f} MB, {separation.precision}, "
              f"ONNX opset {OPSET}: "
              f"{INPUT} float32 (frames, batch, {c}, {f}) -> {OUTPUT} float32 "
              f"({len(cfg.sources)}, frames, batch, {c}, {f}) for sources "
              f"{', '.join(cfg.sources)}; STFT {cfg.nfft}/{cfg.nhop} at {cfg.sample_rate} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
