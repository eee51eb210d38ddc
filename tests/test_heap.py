"""xumx.heap: glibc's heap settings, each in a fresh process (they are process-wide)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Allocates, touches and frees a 96 MB array twice; prints the page faults of the second
#: allocation's first touch and whether the setting was taken.
SCRIPT = """
import json, resource, sys
import numpy as np
from xumx import heap
taken = heap.reuse_large_blocks() if sys.argv[1] == "on" else None
a = np.ones(24 << 20, np.float32); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(24 << 20, np.float32)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                  "taken": taken}))
"""


def faults(setting):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", SCRIPT, setting], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc on Linux")
def test_reused_large_blocks_are_not_mapped_and_zeroed_again():
    from xumx import heap
    if heap._libc() is None:
        pytest.skip("the C library is not glibc")
    plain, reused = faults("off"), faults("on")
    assert reused["taken"] is True
    assert plain["faults"] >= 40            # a fresh mapping: at least one fault per 2 MB
    assert reused["faults"] <= 4            # the freed block, reused from the heap
