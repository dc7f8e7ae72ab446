"""Fixtures of the gateway tests: PostgreSQL schemas and store URLs."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))  # test modules import gwkit

from gwkit import POSTGRES, GatewayCli

from citisense_gateway.cli import main


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> GatewayCli:
    """`citisense gateway ARGS --user tess`, run in-process on a fresh SQLite store."""
    monkeypatch.setenv("CITISENSE_STORE_URL", f"sqlite:///{tmp_path / 'gw.db'}")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))

    def invoke(*argv: str) -> tuple[int, list[dict[str, object]], str]:
        code = main([*argv, "--user", "tess"])
        out, err = capsys.readouterr()
        return code, [json.loads(line) for line in out.splitlines()], err

    return invoke


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL with a schema of its own, dropped afterwards."""
    schema = f"gwtest_{secrets.token_hex(4)}"
    yield f"{POSTGRES}?schema={schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


