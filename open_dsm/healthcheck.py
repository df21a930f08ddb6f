"""Container health check: GET /healthz on the port the service was started with.

``python -m open_dsm.healthcheck`` reads ``--http-port``/``--http-host`` from the serving
process's command line (PID 1 in a container), else OPEN_DSM_HTTP_PORT/OPEN_DSM_HTTP_HOST from its
environment, else this process's environment, else the defaults; exit 0 when /healthz answers.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

DEFAULT_PORT = "8000"
ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}


def _flag(argv: Sequence[str], name: str) -> str | None:
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _read_nul_list(path: Path) -> list[str]:
    try:
        return [part.decode(errors="replace") for part in path.read_bytes().split(b"\0") if part]
    except OSError:
        return []


def target(
    argv: Sequence[str], service_env: dict[str, str], own_env: dict[str, str]
) -> tuple[str, str]:
    """(host, port) to probe: the flag, then the service's variable, then ours, then 8000."""
    port = (
        _flag(argv, "--http-port")
        or service_env.get("OPEN_DSM_HTTP_PORT")
        or own_env.get("OPEN_DSM_HTTP_PORT")
        or DEFAULT_PORT
    )
    host = (
        _flag(argv, "--http-host")
        or service_env.get("OPEN_DSM_HTTP_HOST")
        or own_env.get("OPEN_DSM_HTTP_HOST")
        or "127.0.0.1"
    )
    if host in ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host, port


def main(pid: int = 1) -> int:
    """Probe the service; 0 healthy, 1 not."""
    proc = Path("/proc") / str(pid)
    argv = _read_nul_list(proc / "cmdline")
    service_env = dict(
        item.split("=", 1) for item in _read_nul_list(proc / "environ") if "=" in item
    )
    host, port = target(argv, service_env, dict(os.environ))
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=3) as reply:
            return 0 if reply.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"open-dsm healthcheck: http://{host}:{port}/healthz: {exc}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
