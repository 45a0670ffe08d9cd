"""``roles`` / ``callstream run --roles``: which parts a process runs; connector ownership."""

from __future__ import annotations

import click
import pytest

from streams.cli import _roles
from streams.ownership import Ownership, connector_key, partition_of
from streams.settings import Settings


def test_roles_default_to_all_three_and_processors_enabled_false_turns_processors_off() -> None:
    s = Settings(demo=False)
    assert [r for r in ("connectors", "processors", "api") if s.runs(r)] == [
        "connectors",
        "processors",
        "api",
    ]
    off = Settings(demo=False, processors={"enabled": False})
    assert not off.runs("processors") and off.runs("connectors")
    only = Settings(demo=False, roles=["api"])
    assert only.runs("api") and not only.runs("connectors") and not only.runs("processors")


def test_roles_option_parses_names_and_names_what_is_wrong() -> None:
    assert _roles("connectors, api,api") == ["connectors", "api"]
    assert _roles(None) is None
    with pytest.raises(click.BadParameter, match="brokers: choose from connectors"):
        _roles("connectors,brokers")
    with pytest.raises(click.BadParameter, match="nothing given"):
        _roles(" , ")


def test_a_worker_owns_the_connectors_of_its_partitions_only() -> None:
    own = Ownership()
    assert not own.owns("acme", "crm")  # nothing before the first assignment
    mine = partition_of(connector_key("acme", "crm"), 6)
    own.add(6, {mine})
    assert own.settled and own.owns("acme", "crm")
    others = [
        n for n in ("a", "b", "c", "d", "e", "f", "g") if partition_of(f"acme/{n}", 6) != mine
    ]
    assert others and not any(own.owns("acme", n) for n in others)
    own.remove({mine})
    assert not own.owns("acme", "crm")
