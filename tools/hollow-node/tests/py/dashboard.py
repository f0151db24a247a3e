"""The dashboard in headless Chromium (Debian's, driven by Playwright).

Signs in with bad tokens (the reason is shown), as a user without rights
(403s, no data), then as an admin: the overview and node pages show the
nodes and their usage, a Deployment is scaled and the page follows it, a
pod's log is followed, a pod is deleted, the Deployment restarted, a node
cordoned and uncordoned. Finally a browser holding a client
certificate from the cluster CA is signed in without a token.

Environment: SKIFF_URL (the API server), SKIFF_UI_ADMIN_TOKEN,
SKIFF_UI_NOBODY_TOKEN, SKIFF_UI_CERT / SKIFF_UI_KEY (PEM files),
SKIFF_UI_SHOTS (where screenshots go), SKIFF_CHROMIUM (the browser).
"""

import base64
import json
import os
import time

from playwright.sync_api import expect, sync_playwright
from skiff_browser import launch

URL = os.environ["SKIFF_URL"]
UI = URL + "/ui/"
SHOTS = os.environ["SKIFF_UI_SHOTS"]
expect.set_options(timeout=30_000)


def b64url(obj):
    raw = json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_in(page, token):
    page.fill("#token", token)
    page.click("form.login button[type=submit]")


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def main():
    with sync_playwright() as p:
        browser = launch(p)
        # The cluster CA is not the browser's; a user imports it or, as
        # here, accepts the certificate.
        ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        console_errors = []
        page.on("pageerror", lambda e: console_errors.append(str(e)))

        # The sign-in page, with no credentials at all.
        page.goto(UI)
        expect(page.get_by_role("heading", name="Sign in to Skiff")).to_be_visible()
        shot(page, "login")

        # A token the server does not know, then an expired one: each says why.
        sign_in(page, "not-a-token")
        expect(page.locator("#login-error")).to_contain_text("refused this token")
        expired = ".".join(
            [b64url({"alg": "ES256"}), b64url({"iss": "skiff", "exp": 1_600_000_000}), "c2ln"]
        )
        sign_in(page, expired)
        expect(page.locator("#login-error")).to_contain_text("expired at 2020-09-13T12:26:40.000Z")
        expect(page.locator("#nav")).to_be_hidden()

        # A user without rights signs in but sees the API's 403s, not data.
        sign_in(page, os.environ["SKIFF_UI_NOBODY_TOKEN"])
        expect(page.locator("#whoami")).to_have_text("system:serviceaccount:default:nobody")
        expect(page.locator("main .error").first).to_contain_text("403")
        page.goto(UI + "#/nodes")
        expect(page.locator("main .error").first).to_contain_text("403 Forbidden")
        page.goto(UI + "#/deployments/default/web")
        expect(page.locator("main .error").first).to_contain_text("403 Forbidden")
        text = page.locator("main").inner_text()
        assert "hn-a" not in text and "hn-b" not in text, text
        # Buttons are there, but the API refuses what they ask.
        page.fill("input[aria-label=replicas]", "5")
        page.get_by_role("button", name="Scale").click()
        page.click("#confirm-ok")
        expect(page.locator(".actions .error").first).to_contain_text("403 Forbidden")
        page.click("#logout")
        expect(page.get_by_role("heading", name="Sign in to Skiff")).to_be_visible()

        # The admin: the overview shows both nodes with usage against
        # allocatable, the control plane healthy, the workloads.
        sign_in(page, os.environ["SKIFF_UI_ADMIN_TOKEN"])
        page.goto(UI + "#/")
        for node in ["hn-a", "hn-b"]:
            card = page.locator(f".card.node[data-name={node}]")
            expect(card).to_contain_text("Ready")
            # Usage arrives with the nodes' reports (every 10 s).
            expect(card).to_contain_text("CPU ", timeout=45_000)
            expect(card).not_to_contain_text("CPU – of", timeout=45_000)
        expect(page.locator(".card", has_text="API server")).to_contain_text("healthy")
        expect(page.locator(".card", has_text="kube-scheduler")).to_contain_text("leader")
        expect(page.locator(".card", has_text="Deployments")).to_contain_text("Available: 1")
        expect(page.locator("#warnings tr", has_text="Pod/crasher").first).to_contain_text("BackOff")
        shot(page, "overview")

        page.click("#nav >> text=Nodes")
        expect(page.locator("tr[data-name=hn-a]")).to_contain_text("Ready")
        expect(page.locator("tr[data-name=hn-b]")).to_contain_text("/ 4000m")
        shot(page, "nodes")

        # Scale the Deployment to 3; the page follows the rollout by watch.
        page.click("#nav >> text=Deployments")
        page.click("tr[data-name=web] a")
        expect(page.locator(".replicas")).to_contain_text("1 ready of 1 desired")
        page.fill("input[aria-label=replicas]", "3")
        page.get_by_role("button", name="Scale").click()
        expect(page.locator("#confirm-text")).to_have_text("Scale default/web to 3 replicas?")
        page.click("#confirm-ok")
        expect(page.locator(".actions", has_text="Scaled to 3.")).to_be_visible()
        expect(page.locator(".replicas")).to_contain_text("3 ready of 3 desired", timeout=60_000)
        expect(page.locator("main table tbody tr a[href^='#/pods/default/web-']")).to_have_count(3)
        shot(page, "deployment")

        # A pod's log: its first line at once, then new lines as they come.
        page.locator("main table tbody tr a[href^='#/pods/default/web-']").first.click()
        logs = page.locator("pre.logs")
        expect(logs).to_contain_text("hello from web")
        expect(logs).to_contain_text("tick 3")
        seen = logs.inner_text().count("\n")
        deadline = time.time() + 20
        while logs.inner_text().count("\n") <= seen:
            assert time.time() < deadline, "the followed log did not grow"
            time.sleep(0.2)
        shot(page, "pod")

        # Delete it (after confirming); the ReplicaSet replaces it.
        pod_name = page.locator("h1").inner_text().split("/")[-1]
        page.get_by_role("button", name="Delete").click()
        expect(page.locator("#confirm-text")).to_have_text(f"Delete pod default/{pod_name}?")
        page.click("#confirm-ok")
        expect(page.locator(".actions", has_text="Deleted")).to_be_visible()
        expect(page.locator("main")).to_contain_text("This pod is gone.", timeout=30_000)
        print("deleted", pod_name)

        # Restart the Deployment (a rolling update through its template).
        page.goto(UI + "#/deployments/default/web")
        page.get_by_role("button", name="Restart").click()
        expect(page.locator("#confirm-text")).to_have_text(
            "Restart every pod of default/web (a rolling update)?"
        )
        page.click("#confirm-ok")
        expect(page.locator(".actions", has_text="Restarting.")).to_be_visible()

        # Cordon a node; the page follows it; uncordon it again.
        page.goto(UI + "#/nodes/hn-b")
        page.get_by_role("button", name="Cordon", exact=True).click()
        page.click("#confirm-ok")
        expect(page.locator("main dl")).to_contain_text("SchedulingDisabled")
        page.get_by_role("button", name="Uncordon").click()
        page.click("#confirm-ok")
        expect(page.locator("main dl")).not_to_contain_text("SchedulingDisabled")

        assert not console_errors, console_errors
        ctx.close()

        # A browser with a client certificate needs no token.
        ctx = browser.new_context(
            ignore_https_errors=True,
            client_certificates=[
                {
                    "origin": URL,
                    "certPath": os.environ["SKIFF_UI_CERT"],
                    "keyPath": os.environ["SKIFF_UI_KEY"],
                }
            ],
        )
        page = ctx.new_page()
        page.goto(UI + "#/nodes")
        expect(page.locator("#whoami")).to_have_text("dashboard-admin (certificate)")
        expect(page.locator("tr[data-name=hn-a]")).to_be_visible()
        expect(page.locator("#logout")).to_be_hidden()
        ctx.close()
        browser.close()
    print("DASHBOARD PASSED")


main()
