"""Lab-only tests: they run inside `invoke lab` (which sets KVMPORT_LAB=svm|vmx)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KVMPORT_LAB"):
        return
    skip = pytest.mark.skip(reason="lab test: run it with `invoke lab --cpu svm -- pytest ...`")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)
