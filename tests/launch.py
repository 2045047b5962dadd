"""Run a command under ``accelerate launch`` with two CPU processes (DDP over gloo), as users do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_2PROC = REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"


def accelerate_2proc(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml ARGS`` (a script or ``-m module``)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def accelerate_two_machines(args: list[str], timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Two "machines" on this host, one process each, through ``recipes/accelerate/multi_node.yaml``
    (machine ranks 0 and 1, rendezvous at 127.0.0.1 on a free port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                               str(REPO / "recipes" / "accelerate" / "multi_node.yaml"), "--num_machines", "2",
                               "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                               "--main_process_port", str(port), "--mixed_precision", "no", *args],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out
