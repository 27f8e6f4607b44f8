"""One world for the API tests, built once for the package (`apiworld.build_world`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apiworld import World, build_world

from flows.settings import Settings


@pytest.fixture(scope="package")
def world(
    settings: Settings, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    built = build_world(kafka_bootstrap, tmp_path_factory.mktemp("api"))
    yield built
    built.server.stop()
