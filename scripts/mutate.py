"""Do the tests notice a wrong program? Small deliberate changes to the source, one at a time.

Each entry of :data:`MUTATIONS` is a text substitution in one source file and the tests that
should fail under it. The script copies the tree git knows (tracked and untracked files that
are not ignored) to a temporary folder, checks that the named tests pass there as they are,
then for each entry applies it to the copy, runs its tests with the copy first on the path,
puts the file back, and prints ``caught`` (the tests failed), ``missed`` (they passed) or
``error`` (pytest could not run them, or the substitution no longer matches the source).
The working tree is never changed. Exit status: 0 when every change is caught, 1 otherwise.

    .venv/bin/python scripts/mutate.py              # every entry
    .venv/bin/python scripts/mutate.py -k mpi       # entries whose name contains 'mpi'
    .venv/bin/python scripts/mutate.py --list

Run it before resolving an issue that touches a listed module; add an entry for each bug a
test should have caught. The first entries are the table of issue 25.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str          # relative to the repository root
    old: str           # must occur exactly once in the file
    new: str
    tests: Tuple[str, ...]   # pytest arguments (node ids, -k/-m expressions)


MUTATIONS = [
    Mutation("chunking: hard switch at the overlap's midpoint (weights still sum to 1)",
             "xumx/chunking.py",
             "return np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2",
             "return 0.5 + 0.5 * np.sign(np.arange(overlap) + 0.5 - overlap / 2)",
             ("tests/test_chunking.py", "tests/test_streaming.py")),
    Mutation("mpi: gradients and batch-norm statistics summed over the ranks, not averaged",
             "xumx/training/distributed.py",
             "        total /= self.n_procs\n", "",
             ("tests/test_distributed.py",)),
    Mutation("engine: the CUDA provider's device id always 0",
             "xumx/engine.py",
             '{"device_id": str(device.index)}', '{"device_id": "0"}',
             ("tests/test_engine.py", "-m", "not nnabla")),
    Mutation("eval: vocals' and drums' estimates swapped before scoring",
             "xumx/evaluation/run.py",
             "score_track(track, {t: estimates[t] for t in targets}, path)",
             'score_track(track, {t: estimates[{"vocals": "drums", "drums": "vocals"}.get(t, t)] '
             'for t in targets}, path)',
             ("tests/test_eval.py",)),
    Mutation("h5safe: the chunk-count limit disabled",
             "xumx/h5safe.py",
             "if spans > MAX_CHUNKS:", "if False:",
             ("tests/test_untrusted.py", "-k", "chunk")),
    # beyond the table
    Mutation("engine: the GPU failure's cause not taken from onnxruntime's log",
             "xumx/engine.py",
             'cause = next((ln for ln in log if "rror" in ln or "ailed" in ln), "")', 'cause = ""',
             ("tests/test_engine.py", "-k", "gpu")),
    Mutation("files: a folder replaced by removing the old one, then renaming (a gap)",
             "xumx/files.py",
             "_swap_folder(tmp, path)", "_remove(path)\n                os.replace(tmp, path)",
             ("tests/test_files.py",)),
    Mutation("api: mono or odd-length audio crashes inside Separator.separate (a ValueError)",
             "xumx/separator.py",
             "        total = audio.shape[0]\n        blocks = (to_float",
             "        total = audio.shape[0]\n        if audio.shape[1] == 1 or total % 2:\n"
             "            raise ValueError('crash')\n        blocks = (to_float",
             ("tests/test_reliability.py", "-k", "api_property")),
    Mutation("h5safe: a filter applied twice allowed",
             "xumx/h5safe.py",
             "if len(set(filters)) != len(filters):", "if False:",
             ("tests/test_untrusted.py", "-k", "refused")),
    Mutation("h5safe: non-IEEE floats taken as IEEE",
             "xumx/h5safe.py",
             "if size in ieee and fields == ieee[size]:", "if size in ieee:",
             ("tests/test_untrusted.py", "-k", "refused")),
]


def tree_files(root: str):
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(root, p))]


def copy_tree(root: str, dest: str):
    for rel in tree_files(root):
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target)


def run_tests(copy: str, python: str, tests, timeout: int) -> Tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE="1")
    try:
        p = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            *tests], cwd=copy, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith("FAILED") or ln.startswith("ERROR")]
    return p.returncode, (failed[0] if failed else lines[-1] if lines else p.stderr[-300:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", default="", help="only the entries whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the entries and stop")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs pytest")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the tests on the unchanged copy first")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    if args.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.name}\n    {m.path}; tests: {' '.join(m.tests)}")
        return 0 if args.list else 2
    missed = 0
    with tempfile.TemporaryDirectory(prefix="xumx-mutate-") as tmp:
        copy = os.path.join(tmp, "xumx")
        copy_tree(ROOT, copy)
        print(f"copy of {ROOT} in {copy}; Python {args.python}; load {os.getloadavg()[0]:.2f}")
        if not args.no_baseline:
            for tests in dict.fromkeys(m.tests for m in chosen):
                code, last = run_tests(copy, args.python, tests, args.timeout)
                if code != 0:
                    print(f"baseline: {' '.join(tests)} do not pass unchanged ({last})")
                    return 1
            print("baseline: every named test passes on the unchanged copy")
        for m in chosen:
            path = os.path.join(copy, m.path)
            with open(path, encoding="utf-8") as f:
                original = f.read()
            if original.count(m.old) != 1:
                print(f"error   {m.name}: the text to change occurs {original.count(m.old)} "
                      f"times in {m.path}")
                missed += 1
                continue
            with open(path, "w", encoding="utf-8") as f:
                f.write(original.replace(m.old, m.new))
            t0 = time.time()
            try:
                code, last = run_tests(copy, args.python, m.tests, args.timeout)
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
            verdict = {0: "missed", 1: "caught"}.get(code, "error")
            missed += verdict != "caught"
            print(f"{verdict:7s} {m.name} [{' '.join(m.tests)}; {time.time() - t0:.0f} s]\n"
                  f"        {last}")
    print(f"{len(chosen) - missed} of {len(chosen)} changes caught")
    return 0 if missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
