"""Stateful property test: the embedded idempotency stores against a reference model."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from buttress.integrations.idempotency import (
    MemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    StoredResponse,
)

KEYS = st.sampled_from(["a", "b"])
FPS = st.sampled_from(["f1", "f2"])
LEASE = 10.0
TTL = 30.0


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class StoreMachine(RuleBasedStateMachine):
    """Model: key -> (state, fingerprint, token, expires_at, response)."""

    kind = "memory"

    @initialize()
    def setup(self) -> None:
        self.clock = Clock()
        if self.kind == "memory":
            self.store: Any = MemoryIdempotencyStore(now=self.clock)
        else:
            self.dir = tempfile.TemporaryDirectory()
            self.store = SQLiteIdempotencyStore(f"{self.dir.name}/s.db", now=self.clock)
        self.model: dict[str, list[Any]] = {}
        self.tokens: dict[str, list[str]] = {"a": [], "b": []}
        self.serial = 0

    def teardown(self) -> None:
        if self.kind == "sqlite":
            self.store.close()
            self.dir.cleanup()

    def _live(self, key: str) -> list[Any] | None:
        record = self.model.get(key)
        if record is not None and record[3] <= self.clock.t:
            del self.model[key]
            return None
        return record

    @rule(key=KEYS, fp=FPS)
    def begin(self, key: str, fp: str) -> None:
        got = asyncio.run(self.store.begin(key, fp, LEASE))
        record = self._live(key)
        if record is None:
            assert got.state == "started"
            assert got.token is not None
            self.model[key] = ["running", fp, got.token, self.clock.t + LEASE, None]
            self.tokens[key].append(got.token)
        elif record[1] != fp:
            assert got.state == "mismatch"
        elif record[0] == "running":
            assert got.state == "in_flight"
        else:
            assert got.state == "done"
            assert got.response == record[4]

    @rule(key=KEYS, pick=st.integers(0, 5))
    def complete(self, key: str, pick: int) -> None:
        tokens = self.tokens[key]
        token = tokens[pick % len(tokens)] if tokens else "none"
        self.serial += 1
        response = StoredResponse(201, ((b"x", str(self.serial).encode()),), b"body")
        ok = asyncio.run(self.store.complete(key, token, response, TTL))
        # the owner may still complete after its lease expired, as long as nobody took the
        # key over (the embedded stores keep the record until then)
        record = self.model.get(key)
        owns = record is not None and record[2] == token
        assert ok == owns
        if owns and record is not None:
            record[0], record[3], record[4] = "done", self.clock.t + TTL, response

    @rule(key=KEYS, pick=st.integers(0, 5))
    def release(self, key: str, pick: int) -> None:
        tokens = self.tokens[key]
        token = tokens[pick % len(tokens)] if tokens else "none"
        asyncio.run(self.store.release(key, token))
        record = self.model.get(key)
        if record is not None and record[2] == token:
            del self.model[key]

    @rule(seconds=st.sampled_from([0.5, 5.0, 9.99, 10.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.t += seconds

    @invariant()
    def tokens_are_unique(self) -> None:
        if hasattr(self, "tokens"):
            for tokens in self.tokens.values():
                assert len(tokens) == len(set(tokens))


class SQLiteMachine(StoreMachine):
    kind = "sqlite"


TestMemoryStore = StoreMachine.TestCase
TestMemoryStore.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestSQLiteStore = SQLiteMachine.TestCase
TestSQLiteStore.settings = settings(max_examples=15, stateful_step_count=25, deadline=None)
