"""serve.server's process setup: no triton in a CPU server."""

from __future__ import annotations

import subprocess
import sys

import torch

PROBE = """
import sys
from serve.server import skip_triton_without_cuda
skip_triton_without_cuda()
import torch._dynamo  # what transformers imports; its import probes for triton
from torch.utils._triton import has_triton_package
print(has_triton_package(), any(m.startswith("triton.") for m in sys.modules))
"""


def test_a_cpu_build_of_torch_never_loads_triton():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    if torch.version.cuda is None and torch.version.hip is None:
        assert out == ["False", "False"]
    else:  # a CUDA build keeps triton: torch.compile and its kernels need it
        assert out[0] == "True"
