"""Each daemon's RBAC grants exactly the calls its code makes (tests/rbac_matrix.py), nothing more or less."""

from __future__ import annotations

import pytest

from devcluster.applying import project_objects
from tests.rbac_matrix import USES, grants


@pytest.mark.parametrize("account", sorted(USES))
def test_rbac_grants_exactly_what_the_code_calls(account: str) -> None:
    granted = grants(project_objects(), account)
    assert sorted(granted - USES[account]) == [], "granted, but no call needs it"
    assert sorted(USES[account] - granted) == [], "called, but not granted"


def test_no_rule_grants_wildcards_or_secrets() -> None:
    for obj in project_objects():
        for rule in obj.get("rules") or []:
            assert "*" not in rule["verbs"], obj["metadata"]["name"]
            assert "*" not in rule.get("resources", []), obj["metadata"]["name"]
            assert "secrets" not in rule.get("resources", []), obj["metadata"]["name"]
