"""Test-wide settings. Triton kernels are checked on CPU tensors through Triton's interpreter."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
