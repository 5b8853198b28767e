"""Schemathesis against the server's own OpenAPI document (RELIABILITY T16).

Figure: 0 × 5xx over every operation, called with a valid workspace token and generated
(valid and invalid) inputs; bounded by a fixed example count per operation.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from _server import SatchelServer

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 30


def test_no_server_errors_on_any_operation(satchel_server: SatchelServer):
    token = satchel_server.create_workspace("fuzz")
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(satchel_server.url + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case):
            label = f"{case.method} {case.path}"
            response = case.call(headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{label}: {response.status_code} {response.text[:200]}")
            assert "Traceback" not in response.text

        run()
    assert operations >= 15
    assert failures == []
