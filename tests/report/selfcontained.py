"""The check that an HTML page is self-contained: shared by the unit and integration tests."""

from __future__ import annotations

import base64
from html.parser import HTMLParser


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_self_contained(html: str) -> int:
    """No script, stylesheet link, frame or external reference; every <img> a PNG or SVG data
    URI (an SVG that references nothing outside itself); links only to anchors on the page.
    Returns the number of images."""
    parser = _Tags()
    parser.feed(html)
    images = 0
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), tag
        for key in ("src", "href", "data", "action", "poster", "srcset"):
            value = attrs.get(key) or ""
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, attrs)
            if key == "href" and key in attrs:
                assert value.startswith("#") and len(value) > 1, attrs
        if tag == "img":
            src = attrs.get("src") or ""
            body = base64.b64decode(src.split(",", 1)[1]) if "," in src else b""
            if src.startswith("data:image/svg+xml;base64,"):
                svg = body.decode("utf-8")
                assert "<svg" in svg, svg[:80]
                # namespaces and the DTD are names, not fetches; nothing else may point out
                for ref in ('href="http', "href='http", "url(http", "@import", "<script"):
                    assert ref not in svg, ref
            else:
                assert src.startswith("data:image/png;base64,"), src[:60]
                assert body.startswith(b"\x89PNG")
            images += 1
    assert "http://" not in html and "https://" not in html
    assert "@import" not in html and "url(" not in html
    return images
