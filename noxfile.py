"""Run the test suite on every supported Python installed here (`make test-all`)."""

import nox

nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=["3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    session.install("-e", ".[all]", "-r", "requirements-dev.txt")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
