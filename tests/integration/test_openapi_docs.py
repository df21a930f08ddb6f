"""The API's own documentation: stable operation ids, explaining descriptions, examples, and the
Swagger UI and ReDoc pages served from this package (no CDN)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from core.config import Settings
from core.storage.repository import Storage
from tests.integration.test_api import LiveApi, serve_app

pytestmark = pytest.mark.integration

NO_BODY = {"post_inputs", "points_ede_zip"}  # 204 without a body; a binary archive


@pytest.fixture
def api(settings: Settings, storage: Storage) -> Iterator[LiveApi]:
    """The app on a real port."""
    with serve_app(settings, storage) as live:
        yield live


def test_operations_have_ids_descriptions_and_examples(api: LiveApi) -> None:
    spec = httpx.get(f"{api.base_url}/openapi.json").json()
    ids = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            name = operation["operationId"]
            ids.append(name)
            assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
            assert "api_v1" not in name and not name.endswith(("_get", "_post", "_put")), name
            description = operation["description"]
            assert description and description.rstrip(".") != operation["summary"], name
            if name in NO_BODY:
                continue
            ok = next(code for code in operation["responses"] if code.startswith("2"))
            content = operation["responses"][ok]["content"]
            assert any("example" in media for media in content.values()), (method, path)
    assert len(ids) == len(set(ids))
    assert "list_points" in ids and "get_day_ahead" in ids


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_from_this_host(api: LiveApi, page: str) -> None:
    reply = httpx.get(f"{api.base_url}{page}")
    assert reply.status_code == 200
    assert "connect-src 'self'" in reply.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', reply.text)
    assert sources and all(s.startswith(("/static/", "data:")) for s in sources), sources
    for source in sources:
        if source.startswith("/static/"):
            assert httpx.get(f"{api.base_url}{source}").status_code == 200, source
