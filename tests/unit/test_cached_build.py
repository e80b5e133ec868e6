"""lab.common.cached_build: a cache entry appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.common import LabError, cached_build


def test_a_build_lands_with_its_build_info(tmp_path: Path) -> None:
    out = tmp_path / "tool-1234"

    def build(work: Path) -> str:
        assert work == tmp_path / "tool-1234.tmp" and not any(work.iterdir())
        (work / "tool").write_text("binary")
        return "source tool.tar.gz\n"

    cached_build(out, build, "tool")
    assert (out / "tool").read_text() == "binary"
    info = (out / "BUILD-INFO").read_text().splitlines()
    assert info[0] == "source tool.tar.gz" and info[1].startswith("build seconds ")
    assert not (tmp_path / "tool-1234.tmp").exists()


def test_a_failed_build_leaves_no_entry_and_the_next_starts_clean(tmp_path: Path) -> None:
    out = tmp_path / "tool-1234"

    def failing(work: Path) -> str:
        (work / "half").write_text("x")
        raise LabError("make failed")

    with pytest.raises(LabError):
        cached_build(out, failing, "tool")
    assert not out.exists() and (tmp_path / "tool-1234.tmp" / "half").exists()

    def build(work: Path) -> str:
        assert not (work / "half").exists()  # the leftover was cleared
        return ""

    cached_build(out, build, "tool")
    assert out.is_dir() and not (tmp_path / "tool-1234.tmp").exists()
