"""A headless-Chromium screenshot of the report (`make screenshots`): the page as a reader's
browser draws it, every figure included, in one PNG to look at."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from circuitlab.errors import CircuitlabError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def screenshot(
    page: Path, out: Path, *, width: int = 1280, height: int = 60000, whole_page: bool = True
) -> Path:
    """Render ``page`` (a local HTML file) headless at ``width`` × ``height`` CSS pixels into
    ``out`` (PNG). ``whole_page``: the report is one long page, so the window is tall and the
    blank rest is cut; otherwise the picture is the first screen exactly as a reader sees it."""
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
    if whole_page and _crop_blank_bottom(out) >= height:
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


#: Measures the elements a reader should see first, once the page has loaded, and writes the
#: result into the DOM that `--dump-dom` prints.
_PROBE = """<script>
window.addEventListener("load", () => {
  const out = {viewport: window.innerHeight, width: window.innerWidth, found: {}};
  for (const sel of %s) {
    const el = document.querySelector(sel);
    const r = el && el.getBoundingClientRect();
    out.found[sel] = r ? {top: r.top, bottom: r.bottom, left: r.left, right: r.right} : null;
  }
  document.body.setAttribute("data-layout", JSON.stringify(out));
});
</script>"""


def first_screen_layout(
    page: Path, selectors: list[str], *, width: int = 1280, height: int = 800
) -> dict[str, Any]:
    """Where each of ``selectors`` lies when Chromium opens ``page`` in a ``width`` × ``height``
    window, as a reader first sees it: ``{"viewport": h, "width": w, "found": {selector:
    {top, bottom, left, right} or None}}`` in CSS pixels (top < viewport: on the first
    screen)."""
    import html as html_lib
    import json
    import re

    browser = find_browser()
    if browser is None:
        raise CircuitlabError("no Chromium found (apt-get install chromium)")
    text = page.read_text(encoding="utf-8")
    probe = _PROBE % json.dumps(selectors)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={width},{height}",
            "--virtual-time-budget=10000", "--dump-dom", copy.as_uri(),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    found = re.search(r'data-layout="([^"]*)"', proc.stdout)
    if proc.returncode != 0 or found is None:
        raise CircuitlabError(f"{browser} did not lay out {page} ({proc.returncode}): "
                              f"{proc.stderr[-500:]}")  # fmt: skip
    return json.loads(html_lib.unescape(found.group(1)))
