"""The API docs (`/api/docs`) in a real Chromium: Swagger UI comes from the console's own static
files (npm, no CDN) and starts under the same strict CSP as every other page — no inline
script, no violation, and the console's operations are listed for a signed-in user."""

from __future__ import annotations

from pathlib import Path

from console_fixtures import PASSWORDS, running_console
from playwright.async_api import expect
from test_agent_console_browser import chromium_page


async def test_swagger_ui_is_served_locally_under_the_strict_csp(tmp_path: Path) -> None:
    errors: list[str] = []
    async with running_console(tmp_path) as console, chromium_page(errors) as page:
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(f"{console.base_url}/login?lang=en&next=/api/docs")
        await page.get_by_label("Username").fill("alice")
        await page.get_by_label("Password").fill(PASSWORDS["alice"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{console.base_url}/api/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "Guichet console API"
        )
        await expect(page.locator(".opblock").first).to_be_visible()
        csp = await page.evaluate(
            "fetch('/api/docs').then(r => r.headers.get('content-security-policy'))"
        )
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    assert errors == []
    assert all(url.startswith(console.base_url) or url.startswith("data:") for url in requested)
