"""schemathesis generates requests from the OpenAPI document (valid and invalid ones) and
checks the answers against it: no 5xx, every status, header and body as documented,
input outside the schema refused, missing authentication refused, wrong methods answered
405 with the right Allow header.

Not checked: that every schema-valid request succeeds. Some rules are not JSON Schema
(a reservation ends in the future, an exception's last day is not before its first,
exactly one of zone, street or node ids); such requests get a 422 naming the field,
which test_api.py checks case by case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from citisense_gateway.api import document
from citisense_gateway.api.devserver import FLEET, DevGateway, Threaded, running

PASSWORD = "schemathesis admin"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

# Logging out would end the session the rest of the run uses.
schema = schemathesis.openapi.from_dict(document()).exclude(path="/api/v1/auth/logout")


class Live:
    def __init__(self, threaded: Threaded, token: str) -> None:
        self.threaded = threaded
        self.url = threaded.gateway.url
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    db = Path(tmp_path_factory.mktemp("schemathesis")) / "gw.db"
    # A small street keeps each generated request cheap; every role is there.
    placements = [p for p in FLEET if p.node_id in (101, 102, 301, 302, 401)]
    with running(DevGateway(db, placements=placements, period=3600, hasher=FAST)) as t:
        t.call(t.gateway.accounts.add_user("admin", PASSWORD, "admin", by="test"))
        r = httpx.post(f"{t.gateway.url}/api/v1/auth/login",
                       json={"username": "admin", "password": PASSWORD})
        live = Live(t, r.json()["token"])
        # Something for the generated names to find.
        httpx.post(f"{live.url}/api/v1/schedules", headers=live.headers, json={
            "name": "night", "steps": [{"at": "dusk", "level": 100}, {"at": "dawn", "level": 0}]})
        yield live


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_document(case: schemathesis.Case[Any], live: Live) -> None:
    case.call_and_validate(base_url=live.url, headers=live.headers,
                           excluded_checks=[positive_data_acceptance])
