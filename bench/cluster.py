"""The metering flow as a cluster of processes on loopback, as `meterflow run -i I -a ADDRS`
starts it on several machines: how the benchmark and the tests scale it out."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def flow_env(base: Mapping[str, str], folder: Path) -> dict[str, str]:
    """`base` with a chDB data path, a recovery store and a metrics port of its own."""
    (port,) = _free_ports(1)
    return {
        **base,
        "METERFLOW_CLICKHOUSE_DSN": f"chdb://{folder / 'chdb'}",
        "METERFLOW_RECOVERY_DIR": str(folder / "recovery"),
        "METERFLOW_METRICS_PORT": str(port),
    }


def run_processes(env: dict[str, str], processes: int, *args: str) -> list[int]:
    """Run `meterflow run ARGS` as `processes` cooperating processes; their exit codes."""
    command = [sys.executable, "-m", "commands.cli", "run", *args]
    if processes > 1:
        addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(processes))
        commands = [[*command, "-i", str(i), "-a", addresses] for i in range(processes)]
    else:
        commands = [command]
    running = [subprocess.Popen(c, env=env) for c in commands]
    return [process.wait(timeout=1800) for process in running]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
