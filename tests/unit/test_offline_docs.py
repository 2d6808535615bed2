"""``/docs`` and ``/redoc`` load nothing from outside the app (they work on an intranet)."""

from __future__ import annotations

import re

import httpx
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings

#: Every place a page names a URL: attributes, and the URLs Swagger UI is configured with.
URL_IN_PAGE = re.compile(r"""(?:src|href|spec-url)="([^"]*)"|url: '([^']*)'|\+ '(/[^']*)'""")
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


@pytest.fixture
async def client() -> httpx.AsyncClient:
    # No lifespan: the documentation pages need neither the store nor the broker.
    app = create_app(Settings())
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ywtb.intranet"
    )


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_page_and_every_asset_it_names_are_served_by_the_app(
    client: httpx.AsyncClient, page: str
) -> None:
    async with client:
        response = await client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert "http://" not in html and "https://" not in html, "no absolute URL at all"
        urls = {next(filter(None, match)) for match in URL_IN_PAGE.findall(html)}
        assert "/openapi.json" in urls
        assert any(url.endswith(".js") for url in urls), urls
        for url in sorted(urls):
            assert url.startswith("/") and not url.startswith("//"), f"{url} is off-host"
            if url.endswith("oauth2-redirect"):
                continue  # a page Swagger UI opens only for an OAuth2 login
            asset = await client.get(url)
            assert asset.status_code == 200, url
            kind = CONTENT_TYPES[url[url.rindex(".") :]]
            assert asset.headers["content-type"].startswith(kind), (url, asset.headers)
            assert len(asset.content) > 1000, url


async def test_the_oauth2_redirect_page_is_served_too(client: httpx.AsyncClient) -> None:
    async with client:
        response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "http://" not in response.text and "https://" not in response.text
