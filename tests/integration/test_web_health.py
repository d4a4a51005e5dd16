"""``GET /healthz``: 200 only when every part of the node answers, 503 otherwise."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from node.auth.principal import Principal
from node.db.models import Base
from node.db.session import make_engine, make_session_factory
from node.settings import Settings
from node.web import create_app
from tests.web_node import BASE_URL, Node


def test_healthz_is_200_only_when_every_part_answers(node: Node) -> None:
    response = node.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"scp": True, "database": True, "broker": True}

    node.health["broker"] = False
    response = node.client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"scp": True, "database": True, "broker": False}


def test_healthz_is_503_when_the_check_itself_breaks(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    Base.metadata.create_all(engine)

    def broken() -> dict[str, bool]:
        raise RuntimeError("probe crashed")

    def no_retry(job_id: int, _principal: Principal, _reason: str) -> None:
        raise LookupError(job_id)

    app = create_app(settings, make_session_factory(engine), health=broken, retry_job=no_retry)
    with TestClient(app, base_url=BASE_URL) as client:  # no credentials: /healthz is open
        response = client.get("/healthz")
    engine.dispose()
    assert response.status_code == 503
    assert response.json() == {"health_check": False}
