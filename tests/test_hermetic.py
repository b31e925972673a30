"""The tree check of tests/conftest.py (tests/hermetic.py) sees what a test could leave."""

from __future__ import annotations

import os
from pathlib import Path

from hermetic import changes, listing


def test_the_listing_sees_new_gone_and_rewritten_files_but_not_caches(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    before = listing(tmp_path)
    assert changes(before, listing(tmp_path)) == []

    (tmp_path / "logs" / "wandb").mkdir(parents=True)  # a W&B run where history lives
    (tmp_path / "data" / "a.json").unlink()
    config = tmp_path / "config.yaml"
    st = config.stat()
    config.write_text("seed: 1\n")  # same size, rewritten in place
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    for cache in ("__pycache__", ".pytest_cache", ".venv", ".git", "pkg.egg-info"):
        (tmp_path / cache).mkdir()
        (tmp_path / cache / "x").write_text("x")
    assert changes(before, listing(tmp_path)) == [
        "~ config.yaml",
        "- data/a.json",
        "+ logs",
        "+ logs/wandb",
    ]
