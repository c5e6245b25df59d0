"""Test-run settings shared by the unit tests and the notebooks.

The notebooks run under nbval in the course's fast mode: smaller data, a
smaller model, fewer steps. Kernels inherit this process's environment, so
setting the variable here is enough for every notebook.
"""
import os

os.environ.setdefault("CLIP_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two cores in CI: keep torch from over-subscribing them when tests and kernels overlap.
os.environ.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
