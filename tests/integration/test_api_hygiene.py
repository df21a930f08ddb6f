"""HTTP hygiene over real sockets: token before size, 4xx for bad bodies, bounded errors,
idle keep-alive closed, strict types, replies that match the OpenAPI document, secure default.

Each test serves the real app over a real core on loopback with the uvicorn settings the
service itself uses (``open_dsm.bootstrap.uvicorn_config``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from api.app import create_app
from api.errors import MAX_ERRORS
from api.schemas import DemandOut, ErrorOut
from bacnet.table import BacnetPointTable
from core.clock import SystemClock
from core.config import Settings
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.service import DsmCore
from core.storage.repository import Storage
from open_dsm.bootstrap import StartupError, check_exposure, uvicorn_config

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRITES = [
    ("POST", "/api/v1/readings"),
    ("PUT", "/api/v1/demand/target"),
    ("POST", "/api/v1/demand/inputs"),
]
SMALL_LIMIT = 64 * 1024


@dataclass
class Live:
    """A running app on loopback."""

    host: str
    port: int
    core: DsmCore

    @property
    def base_url(self) -> str:
        """Root URL."""
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def serve(settings: Settings, storage: Storage) -> Iterator[Live]:
    """Core + uvicorn (the service's own config) on one loop in a thread, on a free port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    core = build_core(settings, storage, SystemClock(), SeasonalMeanForecaster())
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        await core.start()
        app = create_app(
            core,
            point_table=BacnetPointTable(core.reads.settings),
            bacnet_bound=lambda: False,
            version="test",
        )
        server = uvicorn.Server(uvicorn_config(app, settings))
        holder["server"] = server
        runner = asyncio.create_task(core.run())
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
            await asyncio.sleep(0.01)
        ready.set()
        await serving
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await core.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(15), "server did not start"
    try:
        yield Live("127.0.0.1", port, core)
    finally:
        holder["server"].should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def live(settings: Settings, storage: Storage) -> Iterator[Live]:
    """The app with a token, a small body limit and a 1 s keep-alive."""
    configured = settings.model_copy(
        update={
            "api_token": SecretStr(TOKEN),
            "max_body_bytes": SMALL_LIMIT,
            "http_keepalive_s": 1,
        }
    )
    with serve(configured, storage) as running:
        yield running


def raw_exchange(live: Live, head: bytes, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it."""
    with socket.create_connection((live.host, live.port), timeout=timeout) as conn:
        conn.sendall(head + body)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(reply: bytes) -> tuple[int, dict[str, Any]]:
    """Status code and JSON body of a raw HTTP/1.1 reply."""
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def read_reply(conn: socket.socket) -> bytes:
    """One whole HTTP/1.1 reply with a Content-Length body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_by_server(conn: socket.socket, wait_s: float = 3.0) -> bool:
    """True when the server has closed ``conn`` (what is left of a reply is read first)."""
    conn.settimeout(wait_s)
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def stored_minutes(live: Live) -> int:
    """How many minutes the API lists."""
    page = httpx.get(f"{live.base_url}/api/v1/readings", timeout=5).json()
    return len(page["items"])


def test_a_write_without_the_token_is_refused_before_its_body_is_read(live: Live) -> None:
    """50 MB announced, 10 bytes sent, no token: 401 at once, the rest never awaited."""
    head = (
        b"POST /api/v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 52800000\r\n\r\n"
    )
    started = time.monotonic()
    status, body = status_and_body(raw_exchange(live, head, b'[{"kw": 1}'))
    assert status == 401 and "Bearer" in body["detail"]
    assert time.monotonic() - started < 2.0
    # A wrong token is the same 401, before the size is looked at.
    wrong = head.replace(b"Host: x", b"Host: x\r\nAuthorization: Bearer nope")
    status, body = status_and_body(raw_exchange(live, wrong, b"{"))
    assert status == 401 and body["detail"] == "the bearer token is wrong"


def test_an_oversized_body_gets_413_before_parsing(live: Live) -> None:
    """With the token: a declared size over the limit, and a chunked stream passing it."""
    head = (
        b"POST /api/v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 52800000\r\n\r\n"
    )
    status, body = status_and_body(raw_exchange(live, head, b"[" * 100))
    assert status == 413 and "--max-body-bytes" in body["detail"]

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(SMALL_LIMIT // 1000 + 10):
            yield b'{"kw": 1.0}, ' * 80

    response = httpx.post(
        f"{live.base_url}/api/v1/readings",
        content=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    ErrorOut.model_validate(response.json())
    assert stored_minutes(live) == 0
    # Just under the limit is parsed as usual.
    fits = httpx.post(f"{live.base_url}/api/v1/readings", json={"kw": 5.0}, headers=AUTH)
    assert fits.status_code == 201


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(
    ("content", "content_type", "status", "fragment"),
    [
        (b"this is not json", "application/json", 400, "not valid JSON"),
        (b"\xff\xfe\x00garbage", "application/json", 400, "not valid JSON"),
        (b'{"kw": 1', "application/json", 400, "not valid JSON"),
        (b"kw=5", "application/x-www-form-urlencoded", 422, "application/json"),
        (b"\x80\x81binary", "application/octet-stream", 422, "application/json"),
    ],
)
def test_a_body_that_is_not_json_gets_a_4xx_with_a_message(
    live: Live,
    method: str,
    path: str,
    content: bytes,
    content_type: str,
    status: int,
    fragment: str,
) -> None:
    """Never a 500: the reply says what was wrong in the one error format."""
    response = httpx.request(
        method,
        f"{live.base_url}{path}",
        content=content,
        headers={**AUTH, "Content-Type": content_type},
        timeout=5,
    )
    assert response.status_code == status, response.text
    error = ErrorOut.model_validate(response.json())
    assert fragment in error.detail


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00+05:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-05:00",
        "1969-12-31T23:59:59Z",
    ],
)
def test_absurd_timestamps_answer_422(live: Live, stamp: str) -> None:
    """In a reading, in the site inputs and as a query bound: 422, never 500."""
    base = live.base_url
    reading = httpx.post(
        f"{base}/api/v1/readings", json={"kw": 5.0, "observed_at": stamp}, headers=AUTH
    )
    inputs = httpx.post(
        f"{base}/api/v1/demand/inputs",
        json={"pv_power_kw": 1.0, "observed_at": stamp},
        headers=AUTH,
    )
    queries = [
        httpx.get(f"{base}{path}", params={"start": stamp})
        for path in ("/api/v1/readings", "/api/v1/demand/intervals", "/api/v1/forecast/history")
    ]
    for response in (reading, inputs, *queries):
        assert response.status_code == 422, (response.request.url, response.text)
        assert "year" in ErrorOut.model_validate(response.json()).detail
    assert stored_minutes(live) == 0


def test_a_huge_invalid_batch_gets_a_small_reply(live: Live) -> None:
    """Thousands of bad readings: at most MAX_ERRORS listed, the input never echoed."""
    bad = [{"kw": "x" * 8, "observed_at": "2026-07-01T10:00:00Z"}] * 1000
    payload = json.dumps(bad).encode()
    assert len(payload) < SMALL_LIMIT
    response = httpx.post(
        f"{live.base_url}/api/v1/readings",
        content=payload,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    error = ErrorOut.model_validate(response.json())
    assert error.errors is not None and len(error.errors) == MAX_ERRORS
    assert error.errors_omitted is not None and error.errors_omitted >= len(bad) - MAX_ERRORS
    assert len(response.content) < 8000 < len(payload)
    assert "xxxxxxxx" not in response.text


def test_idle_keep_alive_connections_are_closed(live: Live) -> None:
    """50 real keep-alive connections, each served once, then idle: all closed by the server."""
    conns = []
    try:
        for _ in range(50):
            conn = socket.create_connection((live.host, live.port), timeout=5)
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(conn)
        for conn in conns:
            assert read_reply(conn).startswith(b"HTTP/1.1 200")
        # Still open right after the reply: a second request on the same connection works.
        conns[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(conns[0]).startswith(b"HTTP/1.1 200")
        time.sleep(2.5)  # keep-alive is 1 s
        closed = 0
        for conn in conns:
            closed += closed_by_server(conn)
        assert closed == len(conns)
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/readings", {"kw": False}),
        ("POST", "/api/v1/readings", {"kw": True}),
        ("POST", "/api/v1/readings", {"kw": "12.5"}),
        ("POST", "/api/v1/readings", {"kw": 5, "observed_at": 1782900000}),
        ("POST", "/api/v1/readings", [{"kw": 5}, {"kw": False}]),
        ("PUT", "/api/v1/demand/target", {"target_kw": True}),
        ("PUT", "/api/v1/demand/target", {"target_kw": "30"}),
        ("POST", "/api/v1/demand/inputs", {"battery_soc_pct": True}),
        ("POST", "/api/v1/demand/inputs", {"pv_power_kw": 1.0, "observed_at": 0.5}),
    ],
)
def test_booleans_strings_and_numbers_are_not_taken_for_other_types(
    live: Live, method: str, path: str, body: Any
) -> None:
    """``kw: false`` is not 0 kW, ``target_kw: true`` not 1 kW, a number is not a time."""
    response = httpx.request(method, f"{live.base_url}{path}", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    ErrorOut.model_validate(response.json())
    assert stored_minutes(live) == 0
    assert live.core.snapshot.demand_target_kw is None


@pytest.mark.parametrize("value", ["0.5", "1782900000", "1e9", "-3"])
def test_a_number_is_not_a_query_time(live: Live, value: str) -> None:
    """``?start=0.5`` is not read as a Unix time."""
    for path in ("/api/v1/readings", "/api/v1/demand/intervals", "/api/v1/forecast/history"):
        response = httpx.get(f"{live.base_url}{path}", params={"start": value})
        assert response.status_code == 422, (path, response.text)
        assert "ISO 8601" in response.json()["detail"]


def test_error_replies_match_the_openapi_document(live: Live) -> None:
    """One error model, declared for every error the app answers; typed demand reply."""
    document = httpx.get(f"{live.base_url}/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ErrorOut"]["properties"]["detail"]["type"] == "string"
    error_ref = "#/components/schemas/ErrorOut"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")) and path != "/readyz":  # 503 there: ReadyOut
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": error_ref}, (method, path, code)
            if method != "get":
                assert {"400", "401", "413", "422"} <= operation["responses"].keys(), path
    demand = schemas["DemandOut"]["properties"]
    for name in ("interval", "period", "decisions"):
        assert "$ref" in demand[name], name
    # What the app answers has that shape, live.
    for response in (
        httpx.post(f"{live.base_url}/api/v1/readings", json={"kw": []}, headers=AUTH),
        httpx.post(f"{live.base_url}/api/v1/readings", json={"kw": 1}),
        httpx.get(f"{live.base_url}/api/v1/readings", params={"start": "2026-07-01T00:00:00"}),
    ):
        assert response.status_code in (401, 422)
        assert isinstance(ErrorOut.model_validate(response.json()).detail, str)
    httpx.post(f"{live.base_url}/api/v1/readings", json={"kw": 5.0}, headers=AUTH)
    deadline = time.monotonic() + 5
    while live.core.snapshot.demand is None and time.monotonic() < deadline:
        time.sleep(0.05)
    demand_reply = httpx.get(f"{live.base_url}/api/v1/demand")
    assert demand_reply.status_code == 200
    demand = DemandOut.model_validate(demand_reply.json())
    assert demand.interval.length_minutes == live.core.reads.settings.demand_interval_minutes
    assert demand.decisions.kw_to_shed >= 0


def test_open_writes_beyond_loopback_refuse_to_start(tmp_path: Path) -> None:
    """No token on 0.0.0.0: the service exits with one clear line, opens no database."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "open_dsm",
            "serve",
            "--http-host",
            "0.0.0.0",
            "--data-dir",
            str(tmp_path / "data"),
            "--bacnet-address",
            "127.0.0.1/8:47808",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("open-dsm:")]
    assert len(lines) == 1 and "--api-token" in lines[0] and "--allow-open-writes" in lines[0]
    assert not (tmp_path / "data" / "open-dsm.sqlite3").exists()


def test_the_exposure_check(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Loopback or a token start quietly; open on purpose starts with a loud warning."""
    base = Settings(data_dir=tmp_path, timezone="UTC")
    for host in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
        check_exposure(base.model_copy(update={"http_host": host}))
    check_exposure(base.model_copy(update={"http_host": "10.0.0.5", "api_token": SecretStr("t")}))
    for host in ("0.0.0.0", "::", "192.168.1.10", "dsm.example.org"):
        with pytest.raises(StartupError, match="--allow-open-writes"):
            check_exposure(base.model_copy(update={"http_host": host}))
    with caplog.at_level(logging.WARNING, logger="open_dsm"):
        check_exposure(base.model_copy(update={"http_host": "0.0.0.0", "allow_open_writes": True}))
    assert any("OPEN TO THE NETWORK" in record.getMessage() for record in caplog.records)
