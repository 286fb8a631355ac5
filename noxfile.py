"""Every development task runs through nox: ``nox -l`` lists the sessions."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "mypy"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite on each installed Python (missing ones are skipped)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def mypy(session: nox.Session) -> None:
    """Type-check the package strictly."""
    session.install("mypy", "pytest", "types-tqdm", "-e", ".")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (beside ProcessPoolExecutor) and the fault-recovery timings; print their tables."""
    session.install("-e", ".")
    session.run("python", "tests/benchmarks/bench_core.py", *session.posargs)
    session.run("python", "tests/benchmarks/bench_faults.py")
    session.run("python", "tests/benchmarks/bench_status.py")
