"""``GET /``: the dashboard page and its assets, served without a CDN; ``/api/node`` for
its header."""

from __future__ import annotations

from tests.web_node import Node


def test_dashboard_page_and_assets_are_served(node: Node) -> None:
    page = node.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="studies"' in page.text and 'id="jobs"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    script = node.client.get("/static/app.js")
    assert script.status_code == 200
    assert "innerHTML" not in script.text
    assert node.client.get("/static/style.css").status_code == 200
    assert node.client.get("/api/node").json() == {
        "ae_title": "AINODE_T",
        "dicom_port": 11112,
        "archive": None,
        "destinations": [
            {
                "name": "viewer",
                "address": "http://viewer/dicom-web",
                "transport": "stow",
                "kinds": ["SR", "SC"],
                "models": [],
                "storage_commitment": False,
            }
        ],
    }
