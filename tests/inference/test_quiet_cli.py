"""CLI output is quiet: library noise goes to debug logging (shown by ``-v``), real warnings stay."""

import builtins
import logging
import os
import subprocess
import sys
import warnings

import pytest

from genrec.hub import LIBRARY_NOISE, route_library_noise

NOISE = ("kernels-community", "is_gradient_checkpointing", "FutureWarning", "save_embedding_layers")


def _recommend(run, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-m", "genrec.cli", *flags, "recommend", "--model", str(run),
                           "--history", "m1", "m3", "-k", "3"], capture_output=True, text=True, env=env, check=False,
                          timeout=120)


def test_recommend_stderr_is_free_of_library_noise(tiny_run):
    quiet = _recommend(tiny_run)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE)], quiet.stderr
    assert len(quiet.stdout.strip().splitlines()) == 4
    verbose = _recommend(tiny_run, "-v")
    assert verbose.returncode == 0
    shown = [line for line in verbose.stderr.splitlines() if "kernels-community" in line]
    if shown:  # the message exists only where bitsandbytes lacks its optional kernels
        assert all(line.startswith("DEBUG ") for line in shown)


@pytest.fixture
def root_handler():
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def test_noise_is_demoted_and_real_warnings_pass(root_handler):
    with warnings.catch_warnings(record=True) as shown:  # restores warnings.showwarning on exit
        warnings.simplefilter("always")
        route_library_noise(verbose=False)
        category, fragment = next((c, m) for c, m in LIBRARY_NOISE if c.endswith("Warning"))
        warnings.warn(f"{fragment} soon", getattr(builtins, category), stacklevel=1)
        warnings.warn("a real problem", UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["a real problem"]
    noisy = logging.LogRecord("bitsandbytes.backends.cpu.ops", logging.WARNING, __file__, 1,
                              "Failed to load CPU gemm_4bit_forward from kernels-community: x", None, None)
    real = logging.LogRecord("bitsandbytes.backends.cpu.ops", logging.WARNING, __file__, 1, "out of memory",
                             None, None)
    assert not root_handler.filter(noisy) and noisy.levelno == logging.DEBUG
    assert root_handler.filter(real) and real.levelno == logging.WARNING
