"""Shared fixtures."""

from __future__ import annotations

import random

import pytest

from buttress.testing import ManualClock, RecordingListener
from redis_fixture import own_redis, redis_server, redis_url  # noqa: F401


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def events() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
