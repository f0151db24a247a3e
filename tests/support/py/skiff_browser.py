"""Debian's Chromium under Playwright, launched the one way the tests and
the demo use it: as root on a machine with no way out, so without the
sandbox, the GPU or any of Chromium's own background connections (on a
closed network those fail and retry, many at a time). Playwright downloads
no browser here; `cargo xtask setup` installs Debian's.

Found through PYTHONPATH, which the harness (`ApiServer::run_python*`) and
`cargo xtask demo` set.
"""

import os

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    """A headless Chromium: SKIFF_CHROMIUM, else /usr/bin/chromium."""
    return playwright.chromium.launch(
        executable_path=os.environ.get("SKIFF_CHROMIUM", "/usr/bin/chromium"), args=ARGS
    )
