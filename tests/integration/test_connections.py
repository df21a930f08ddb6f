"""REST connection limits on the real app and server config: silent and slowloris connections
are closed by the head deadline, and connections past the cap are closed on accept."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from core.config import Settings
from core.storage.repository import Storage
from open_dsm.connections import FD_MARGIN, connection_cap
from tests.integration.test_api_hygiene import Live, serve

HEAD_TIMEOUT_S = 0.5
CAP = 4


@pytest.fixture
def limited(settings: Settings, storage: Storage) -> Iterator[Live]:
    """The app with a short head deadline and a small connection cap."""
    configured = settings.model_copy(
        update={
            "http_header_timeout_s": HEAD_TIMEOUT_S,
            "http_max_connections": CAP,
            "http_keepalive_s": 30,
        }
    )
    with serve(configured, storage) as running:
        yield running


def _closed_within(conn: socket.socket, timeout_s: float) -> bool:
    """True when the server closes ``conn`` (EOF or reset) within ``timeout_s`` (data that
    arrives meanwhile, the rest of a response, is read past)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            if conn.recv(65536) == b"":
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_a_silent_connection_is_closed_by_the_head_deadline(limited: Live) -> None:
    with socket.create_connection((limited.host, limited.port)) as conn:
        assert _closed_within(conn, 10 * HEAD_TIMEOUT_S)


def test_slowloris_is_closed_although_it_keeps_sending(limited: Live) -> None:
    with socket.create_connection((limited.host, limited.port)) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 10 * HEAD_TIMEOUT_S:
            try:
                conn.sendall(b"X-a: b\r\n")  # a header line every 50 ms, never the blank line
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if _closed_within(conn, 0.05):
                closed = True
                break
        assert closed


def test_the_deadline_restarts_after_each_response_on_keep_alive(limited: Live) -> None:
    with socket.create_connection((limited.host, limited.port)) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(5)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        # Kept alive (30 s) but silent: the head deadline of the next request closes it.
        assert _closed_within(conn, 10 * HEAD_TIMEOUT_S)


def test_connections_past_the_cap_are_closed_and_the_service_stays_reachable(
    limited: Live,
) -> None:
    held = [socket.create_connection((limited.host, limited.port)) for _ in range(CAP)]
    try:
        time.sleep(0.1)
        with socket.create_connection((limited.host, limited.port)) as extra:
            assert _closed_within(extra, 2.0)
    finally:
        for conn in held:
            conn.close()
    # The held ones gone (closed here, or by the deadline), a normal client gets through.
    for _ in range(50):
        try:
            if httpx.get(f"{limited.base_url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    else:
        pytest.fail("the service stayed unreachable after the cap was released")


def test_the_cap_keeps_a_margin_below_the_open_file_limit() -> None:
    assert connection_cap(1000, 1024) == 1024 - FD_MARGIN
    assert connection_cap(100, 65536) == 100
    assert connection_cap(1000, 100) == 1


def test_a_method_the_path_does_not_serve_is_405_before_the_token(
    settings: Settings, storage: Storage
) -> None:
    from pydantic import SecretStr

    configured = settings.model_copy(update={"api_token": SecretStr("secret")})
    with serve(configured, storage) as live:
        trace = httpx.request("TRACE", f"{live.base_url}/api/v1/readings", timeout=5)
        assert trace.status_code == 405
        assert set(trace.headers["allow"].split(", ")) == {"GET", "POST"}
        options = httpx.options(f"{live.base_url}/api/v1/readings", timeout=5)
        assert options.status_code == 405
        assert set(options.headers["allow"].split(", ")) == {"GET", "POST"}
        # A served write method still needs the token.
        assert httpx.post(f"{live.base_url}/api/v1/readings", json={"kw": 1}).status_code == 401
        assert httpx.get(f"{live.base_url}/api/v1/readings", timeout=5).status_code == 200


def test_the_openapi_document_states_the_limits_the_code_enforces(
    settings: Settings, storage: Storage
) -> None:
    with serve(settings, storage) as live:
        document = httpx.get(f"{live.base_url}/openapi.json", timeout=5).json()
    post = document["paths"]["/api/v1/readings"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    batch = next(option for option in body["anyOf"] if option.get("type") == "array")
    assert batch["minItems"] == 1 and batch["maxItems"] == 100_000
    parameters = {p["name"]: p for p in document["paths"]["/api/v1/readings"]["get"]["parameters"]}
    assert "after start" in parameters["end"]["description"]
    when = next(o for o in parameters["start"]["schema"]["anyOf"] if o.get("type") == "string")
    assert when["formatMinimum"].startswith("1970") and when["formatMaximum"].startswith("2999")
    target = document["components"]["schemas"]["TargetIn"]["properties"]["target_kw"]
    assert target["maximum"] == 100_000 and target["exclusiveMinimum"] == 0
