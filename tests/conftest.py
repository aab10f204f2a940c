"""Test-session set-up shared by every test module.

`kernels` is imported first: it switches MKL to strict reproducibility mode (kernels/cnr.py), which
MKL accepts only before its first computation — after that the batch-invariant path falls back to
row padding and the bitwise tests would run against the fallback.
"""

import os

os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15 lets any busy process starve the clock

import kernels  # noqa: E402, F401
