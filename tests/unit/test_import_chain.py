"""The serving process never imports TensorFlow, Keras or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorflow", "keras", "sklearn")


def _modules_after(setup: str) -> list[str]:
    """Every module a fresh interpreter has loaded after running ``setup``."""
    code = f"import json, sys\n{setup}\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_serving_import_chain_stays_light() -> None:
    modules = _modules_after(
        "import open_dsm.bootstrap, open_dsm.cli, api.app, bacnet.device, core.service\n"
        "open_dsm.cli.build_parser()"
    )
    loaded = {m.split(".")[0] for m in modules}
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert {"bacpypes3", "fastapi", "sqlalchemy", "uvicorn"} <= loaded


def test_serve_does_not_import_the_benchmarks() -> None:
    modules = _modules_after(
        "import open_dsm.cli\n"
        "open_dsm.cli.build_parser(bench_arguments=False).parse_args(['serve'])"
    )
    assert [m for m in modules if m.split(".")[0] == "bench"] == []
