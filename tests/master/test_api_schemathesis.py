"""Schema-driven fuzz of the REST API: schemathesis generates requests from /openapi.json.

No request may get a 5xx answer, and afterwards every stored config still parses and
validates with the same parser and registry the nodes use.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from flume_og.master.api import create_app
from flume_og.master.service import MasterService
from flume_og.node.builder import validate_parts
from flume_og.node.spec import parse_sink, parse_source


@pytest.fixture
def app(store, tmp_path):
    service = MasterService(store, tmp_path / "master")
    yield create_app(service)
    service.close()


def test_openapi_fuzz_no_5xx_and_state_stays_valid(app, store):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, calls = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case):
            response = case.call()
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code,
                                 response.text[:300]))
        exercise()
    assert len(calls) > 100
    assert not failures, failures[:5]
    for cfg in store.list_logical().values():
        validate_parts(parse_source(cfg.source), parse_sink(cfg.sink))
