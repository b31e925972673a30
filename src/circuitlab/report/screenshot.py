"""A headless-Chromium screenshot of the report (`make screenshots`): the page as a reader's
browser draws it, every figure included, in one PNG to look at."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from circuitlab.errors import CircuitlabError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def screenshot(page: Path, out: Path, *, width: int = 1280, height: int = 60000) -> Path:
    """Render ``page`` (a local HTML file) headless at ``width`` × ``height`` CSS pixels into
    ``out`` (PNG; the report is one long page, so the window is tall)."""
    browser = find_browser()
    if browser is None:
        raise CircuitlabError(
            "no Chromium found for the screenshot: install it (Debian/Ubuntu: "
            "`apt-get install chromium`) or open the page in any browser"
        )
    if not page.is_file():
        raise CircuitlabError(f"{page} does not exist: run `make reproduce` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # never report an old picture as new
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}", page.resolve().as_uri(),
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise CircuitlabError(f"{browser} did not finish the screenshot in 300 s") from None
    if proc.returncode != 0 or not out.is_file():
        raise CircuitlabError(f"{browser} failed ({proc.returncode}): {proc.stderr[-500:]}")
    if _crop_blank_bottom(out) >= height:
        raise CircuitlabError(
            f"the page is longer than {height} px: the screenshot {out} is cut; raise --height"
        )
    return out


def _crop_blank_bottom(png: Path) -> int:
    """Cut the blank rows below the page's end (the window is taller than most pages); the
    height kept."""
    from PIL import Image, ImageChops

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((0, rgb.height - 1)))
    differs = ImageChops.difference(rgb, background).convert("L").point(lambda v: 255 * (v > 8))
    box = differs.getbbox()  # everything that is not the page's background
    bottom = box[3] if box else rgb.height
    if bottom < rgb.height:
        rgb.crop((0, 0, rgb.width, min(bottom + 16, rgb.height))).save(png)
    return bottom
