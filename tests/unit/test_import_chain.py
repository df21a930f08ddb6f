"""The serving process never imports TensorFlow, Keras or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorflow", "keras", "sklearn")


def test_serving_import_chain_stays_light() -> None:
    code = (
        "import json, sys\n"
        "import open_dsm.bootstrap, open_dsm.cli, api.app, bacnet.device, core.service\n"
        "open_dsm.cli.build_parser()\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert {"bacpypes3", "fastapi", "sqlalchemy", "uvicorn"} <= loaded


def test_serve_does_not_import_the_benchmarks() -> None:
    code = (
        "import json, sys\n"
        "import open_dsm.cli\n"
        "open_dsm.cli.build_parser(bench_arguments=False).parse_args(['serve'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'bench')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
