"""Regressions from the adversarial review: misuse must fail loudly, once."""

from __future__ import annotations

from typing import Any

import pytest

from buttress import CircuitBreaker, ConfigurationError, Pipeline, Retry, backoff


def test_configuration_error_is_never_handled() -> None:
    calls = 0

    def misuse() -> None:
        nonlocal calls
        calls += 1
        raise ConfigurationError("programming error")

    breaker = CircuitBreaker(consecutive_failures=1)
    p = Pipeline(Retry(on=Exception, attempts=3, backoff=backoff.none()), breaker)
    with pytest.raises(ConfigurationError):
        p.call(misuse)
    assert calls == 1  # not retried
    assert breaker.state == "closed"  # not a dependency failure


def test_call_with_a_generator_function_is_refused() -> None:
    def gen() -> Any:
        yield 1

    with pytest.raises(ConfigurationError, match="generator"):
        Pipeline(Retry(on=OSError)).call(gen)


def test_shared_exception_gets_one_identical_note() -> None:
    shared = ValueError("boom")

    def fail() -> None:
        raise shared

    p = Pipeline(Retry(on=ValueError, attempts=2, backoff=backoff.none(), budget=None))
    for _ in range(5):
        with pytest.raises(ValueError):
            p.call(fail)
    assert len(shared.__notes__) == 1


def test_a_scope_object_can_be_entered_again_while_open() -> None:
    from buttress import current_context, scope

    s = scope(idempotency_key="k")
    with s, s:
        ctx = current_context()
        assert ctx is not None
        assert ctx.idempotency_key == "k"
    assert current_context() is None


def test_lab_list_finds_the_checkout_examples_from_any_directory(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from buttress._cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    assert "s4-metastable-retry-storm" in out
    assert "demo-zone-outage" in out
