"""Headless Chromium for the service map's page (Debian's `chromium`, driven by its command line)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--hide-scrollbars"]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def chromium(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run headless Chromium with a private profile; fails (not skips) under NETC_REQUIRE_KERNEL=1
    when it is missing, as CI must not pass a browser test it never ran."""
    binary = chromium_binary()
    if binary is None:
        why = "Debian's `chromium` is not installed (apt-get install chromium; `make setup` installs it)"
        if os.environ.get("NETC_REQUIRE_KERNEL") == "1":
            pytest.fail(f"NETC_REQUIRE_KERNEL=1 but the browser test cannot run: {why}", pytrace=False)
        pytest.skip(why)
    profile = tmp_path / "chromium-profile"

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return run
