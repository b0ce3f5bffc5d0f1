"""Integrations with other libraries, each an opt-in module with its own extra:

* `buttress.integrations.httpx`: `ResilientTransport` / `AsyncResilientTransport`;
* `buttress.integrations.asgi`: `ResilienceMiddleware` with idempotency keys.
"""
