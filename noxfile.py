"""Run the test suite on every supported Python installed here (`make test-all`).

Interpreters are looked up on PATH and, because pyenv shims on PATH may refuse versions
that are installed but not selected, directly under ``$PYENV_ROOT/versions`` too.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True

VERSIONS = ["3.11", "3.12", "3.13"]


def _works(path: str) -> bool:
    try:
        subprocess.run([path, "-c", "pass"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _find(version: str) -> str:
    candidates = [shutil.which(f"python{version}")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}"), reverse=True)
    for path in candidates:
        if path and _works(path):
            return path
    return version  # let nox report it as missing


@nox.session(python=[_find(v) for v in VERSIONS])
def tests(session: nox.Session) -> None:
    session.install("-e", ".[all]", "-r", "requirements-dev.txt")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
