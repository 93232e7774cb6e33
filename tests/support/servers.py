"""Real servers in subprocesses, for the process and end-to-end tests.

A :class:`Server` runs a command (uvicorn, gunicorn …, with this interpreter) in its own
process group, its output kept in a file; :func:`server_environment` is the environment
that points apiusage at a :class:`~tests.support.capture_server.CaptureServer` with a flush
interval of a minute, so that nothing is delivered while the server runs and only the
shutdown path can deliver what a test then finds.

Always ``kill()`` a server in a ``finally``: it kills the whole process group (workers
included) if the server is still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from tests.support.capture_server import CaptureServer

__all__ = [
    "EXIT_TIMEOUT",
    "IDENTITY_SECRET",
    "REPO_ROOT",
    "START_TIMEOUT",
    "Server",
    "free_port",
    "server_environment",
    "uvicorn_server",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
IDENTITY_SECRET = "process-test-identity-secret-0123456789"
START_TIMEOUT = 20.0
EXIT_TIMEOUT = 15.0


def free_port() -> int:
    """A port free on the loopback interface right now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(
    capture: CaptureServer, api_key: str, *, pythonpath: Iterable[Path] = ()
) -> dict[str, str]:
    """This process's environment without ``POSTHOG_*``/``APIUSAGE_*``, plus apiusage's
    configuration for a server delivering to ``capture`` only at shutdown.

    ``PYTHONPATH`` gets ``pythonpath`` and the repository root (for ``tests.support``).
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POSTHOG_", "APIUSAGE_"))
    }
    paths = [*(str(path) for path in pythonpath), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        PYTHONUNBUFFERED="1",
        POSTHOG_API_KEY=api_key,
        POSTHOG_HOST=capture.url,
        APIUSAGE_IDENTITY_SECRET=IDENTITY_SECRET,
        # Nothing is sent on a timer while the test runs: only shutdown can deliver.
        APIUSAGE_FLUSH_INTERVAL="60",
    )
    return env


class Server:
    """A server subprocess in its own process group, with its output kept in a file."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        port: int,
        log: Path,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_handle = log.open("wb")
        self.process = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log_handle.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                # /health is excluded from recording, so polling it adds no events.
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server not ready within {timeout}s:\n{self.output()}")

    def terminate(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM to the server process (as a process manager sends it); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server did not exit within {timeout}s of SIGTERM:\n{self.output()}")

    def kill(self) -> None:
        """Kill whatever is left of the server's process group (workers included)."""
        # Even after the server has exited, a worker it left behind is still in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self._log_handle.close()


def uvicorn_server(app: str, env: dict[str, str], log: Path, *options: str) -> Server:
    """uvicorn serving ``app`` (``module:attribute``) on a free port, access log off."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--no-access-log"]
    return Server([*command, *options], env, port, log)
