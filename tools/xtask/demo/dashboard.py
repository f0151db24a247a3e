"""The demo's look at its own dashboard in headless Chromium (Debian's,
driven by Playwright): a read-only user signs in, and the Nodes page shows
every kernel node Ready with its CPU and memory figures from the nodes'
own reports. A screenshot goes to SKIFF_SHOT.

Environment: SKIFF_URL, SKIFF_TOKEN, SKIFF_NODES (space-separated names),
SKIFF_SHOT, PYTHONPATH (tests/support/py).
"""

import os

from playwright.sync_api import expect, sync_playwright
from skiff_browser import launch

with sync_playwright() as p:
    browser = launch(p)
    page = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800}).new_page()
    page.goto(os.environ["SKIFF_URL"] + "/ui/#/nodes")
    page.fill("#token", os.environ["SKIFF_TOKEN"])
    page.click("form.login button[type=submit]")
    for node in os.environ["SKIFF_NODES"].split():
        row = page.locator(f"tr[data-name={node}]")
        expect(row).to_contain_text("Ready", timeout=30_000)
        # Usage comes with the node's reports, every 10 s.
        expect(row).not_to_contain_text("– /", timeout=45_000)
        print(f"dashboard: {row.inner_text()}".replace("\t", "  "))
    page.screenshot(path=os.environ["SKIFF_SHOT"], full_page=True)
    browser.close()
print("dashboard: every kernel node is on the Nodes page with its usage")
