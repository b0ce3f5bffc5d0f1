"""Shared fixtures."""

from __future__ import annotations

import random

import pytest

from buttress.testing import ManualClock, RecordingListener


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def events() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
