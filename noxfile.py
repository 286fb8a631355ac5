"""Every development task runs through nox: ``nox -l`` lists the sessions."""

from __future__ import annotations

import os

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
def docs(session: nox.Session) -> None:
    """Build the documentation site (MkDocs Material, API pages from the docstrings) with warnings as errors."""
    session.install("-e", ".[docs]")
    # Material prints a notice about MkDocs 2 on every build; it is not about our pages.
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHONS)
def cpython(session: nox.Session) -> None:
    """Run CPython's own test_concurrent_futures process-pool tests against localabort.Executor.

    On each installed Python that ships its ``test`` package (pyenv builds do; some
    distributions strip it, and then the session says so and skips). The plugin
    tests/cpython/plugin.py changes only the executor the tests' mixins build;
    tests/cpython/expected.py lists, with reasons, the tests that cannot pass.
    ``-- --ppe`` runs the same files on ProcessPoolExecutor itself, for comparison.
    """
    found = session.run(
        "python", "-c", "import importlib.util as u; print(u.find_spec('test.test_concurrent_futures') is not None)",
        silent=True,
    )  # fmt: skip
    if "True" not in str(found):
        session.skip(f"Python {session.python} ships no test.test_concurrent_futures")
    session.install("-e", ".[test]")
    ppe = "--ppe" in session.posargs
    args = [a for a in session.posargs if a != "--ppe"]
    plugin = [] if ppe else ["-p", "tests.cpython.plugin"]
    session.run(
        "python", "-m", "pytest", "--pyargs", "test.test_concurrent_futures", *plugin, "-k", "ProcessPool",
        "-p", "no:localabort", "--timeout", "300", "-o", "addopts=", "-o", "filterwarnings=", "-q", *args,
    )  # fmt: skip


#: Each benchmark script, and whether it takes ``--quick``.
BENCHMARKS = {
    "core": True, "throughput": True, "startup": True, "memory": True, "celery": True, "faults": False, "status": False,
    "retries": True, "soak": True, "dashboard": True, "asyncio": True, "logs": True,
    "byvalue": True, "limits": True, "floor": True, "sleep": True,
}  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark beside its peers (installed here) and print the tables.

    ``-- --quick`` for a short run; ``-- celery soak`` (names of ``BENCHMARKS``) for some of them only.
    """
    session.install("-e", ".[celery,postgresql,web]", "celery[redis]", "playwright", "loky", "pebble", "mpire")
    quick = [arg for arg in session.posargs if arg == "--quick"]
    chosen = [arg for arg in session.posargs if arg in BENCHMARKS] or list(BENCHMARKS)
    servers = {}  # bench_celery's Redis broker and PostgreSQL store, from the scripts CI uses
    for var, script, scheme in (("LOCALABORT_TEST_REDIS_URL", ".ci/redis.sh", "redis://"),
                                ("LOCALABORT_TEST_POSTGRES_URL", ".ci/postgres.sh", "postgresql")):  # fmt: skip
        if not os.environ.get(var):
            said = session.run("bash", script, silent=True, external=True, success_codes=[0, 1]) or ""
            servers.update((var, word) for word in said.split() if word.startswith(scheme))
    for name in chosen:
        takes_quick = BENCHMARKS[name]
        session.run("python", f"tests/benchmarks/bench_{name}.py", *(quick if takes_quick else []), env=servers)
