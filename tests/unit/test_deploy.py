"""Deploy files: the container health check follows the configured port, the serving process
never imports TensorFlow, and the systemd unit's sandbox rates 2.5 or better."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from open_dsm import healthcheck

ROOT = Path(__file__).resolve().parents[2]


def test_the_probe_target_follows_flags_then_environment() -> None:
    argv = ["open-dsm", "serve", "--http-port", "9123"]
    assert healthcheck.target(argv, {}, {}) == ("127.0.0.1", "9123")
    assert healthcheck.target(["open-dsm", "serve", "--http-port=9124"], {}, {})[1] == "9124"
    service_env = {"OPEN_DSM_HTTP_PORT": "9200", "OPEN_DSM_HTTP_HOST": "0.0.0.0"}
    assert healthcheck.target(["open-dsm", "serve"], service_env, {}) == ("127.0.0.1", "9200")
    assert healthcheck.target(argv, service_env, {})[1] == "9123"  # the flag wins
    own = {"OPEN_DSM_HTTP_PORT": "9300"}
    assert healthcheck.target(["open-dsm", "serve"], {}, own) == ("127.0.0.1", "9300")
    assert healthcheck.target(["open-dsm", "serve"], {}, {}) == ("127.0.0.1", "8000")
    assert healthcheck.target(["x", "--http-host", "::1"], {}, {})[0] == "[::1]"


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def healthz_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_the_probe_answers_on_the_configured_port(
    healthz_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This test process stands in for PID 1; its environment names the port.
    monkeypatch.setenv("OPEN_DSM_HTTP_PORT", str(healthz_server))
    assert healthcheck.main(pid=999_999_999) == 0
    monkeypatch.setenv("OPEN_DSM_HTTP_PORT", "1")  # nothing listens there
    assert healthcheck.main(pid=999_999_999) == 1


def test_the_serving_process_never_imports_tensorflow() -> None:
    code = (
        "import sys; import open_dsm.bootstrap, open_dsm.cli, api.app, core.training; "
        "from open_dsm.cli import build_parser; build_parser(bench_arguments=False); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'sklearn'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_docker_health_check_uses_the_probe_not_a_fixed_port() -> None:
    text = (ROOT / "Dockerfile").read_text()
    check = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    assert "open_dsm.healthcheck" in check and "8000" not in check
    serve = text[text.index("FROM base AS serve") :]
    assert '".[lite,postgres]"' in serve and "[train" not in serve and ",train" not in serve


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="needs systemd-analyze (Debian's systemd)")
def test_the_systemd_unit_is_hardened() -> None:
    assert SYSTEMD_ANALYZE is not None
    out = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(ROOT / "deploy/open-dsm.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match[1]) <= 2.5
    unit = (ROOT / "deploy/open-dsm.service").read_text()
    assert re.search(r"^MemoryMax=\d+[MG]$", unit, re.M)


def test_the_env_example_names_every_setting() -> None:
    """deploy/open-dsm.env.example is the documented env file: every setting has its line."""
    from core.config import Settings

    text = (ROOT / "deploy" / "open-dsm.env.example").read_text()
    named = set(re.findall(r"^# (OPEN_DSM_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    missing = {f"OPEN_DSM_{name.upper()}" for name in Settings.model_fields} - named
    assert not missing, f"settings missing from the env example: {sorted(missing)}"
