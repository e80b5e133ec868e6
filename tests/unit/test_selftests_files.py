"""lab/selftests' checked-in files: the expected differences and our patches to Linux's
selftests (the lab run itself is `invoke selftests`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.selftests import build, run


def test_every_expected_difference_has_a_reason():
    expected = run.read_expected()
    assert expected, "lab/selftests/expected.txt lists nothing"
    for name, reason in expected.items():
        assert re.fullmatch(r"(x86_64/)?[a-z0-9_]+", name), name
        assert len(reason) > 15, f"{name}: reason too short: {reason!r}"
        assert name not in run.NOT_RUN, f"{name} is listed but never run"


def test_expected_rejects_a_line_without_reason_or_twice(tmp_path: Path):
    f = tmp_path / "expected.txt"
    f.write_text("# comment\nx86_64/a_test\n")
    with pytest.raises(SystemExit, match="has no reason"):
        run.read_expected(f)
    f.write_text("a_test  needs X\na_test  needs Y\n")
    with pytest.raises(SystemExit, match="listed twice"):
        run.read_expected(f)


def test_patches_only_touch_the_kvm_selftests_and_say_why():
    for p in build.patches():
        text = p.read_text()
        files = re.findall(r"^\+\+\+ b/(\S+)", text, re.M)
        assert files, f"{p.name} changes no file"
        assert all(f.startswith("tools/testing/selftests/kvm/") for f in files), files
        description = text.split("\n--- a/", 1)[0]
        assert len(description.split()) >= 20, f"{p.name} needs a description"


def test_the_cache_key_follows_the_patches(tmp_path: Path):
    patches = build.patches()
    key = build.key_hash("linux-source-6.1", "6.1.192-3", patches)
    assert key == build.key_hash("linux-source-6.1", "6.1.192-3", patches)
    assert key != build.key_hash("linux-source-6.1", "6.1.193-1", patches)
    changed = tmp_path / patches[0].name
    changed.write_text(patches[0].read_text() + "\n")
    assert key != build.key_hash("linux-source-6.1", "6.1.192-3", [changed, *patches[1:]])
