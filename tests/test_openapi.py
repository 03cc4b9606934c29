"""The API description: every route described, the live server checked against it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_openapi_document_describes_every_route(app):
    # Every route but Flask's own static files, page shells included, each of its methods.
    document = app.test_client().get("/openapi.json").get_json()
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routes


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(live_server):
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    # Every check runs (schemathesis' default); schemathesis.toml turns one off for the
    # ingestion endpoints only, and says why.
    result = subprocess.run(
        [
            command,
            "--config-file",
            str(ROOT / "schemathesis.toml"),
            "run",
            f"{live_server.url}/openapi.json",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
