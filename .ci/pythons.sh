#!/usr/bin/env bash
# The suite on the oldest and the newest Python the package claims (3.9 and 3.13, pyproject's classifiers),
# and CPython's own test_concurrent_futures on the newest (nox -s cpython), when this machine has them:
# on PATH, or installed by pyenv. A Python it does not have is said to be skipped; a red run fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {  # a working pythonX.Y: on PATH (not a pyenv shim that refuses), else pyenv's newest X.Y.*
    local version="$1" found
    found="$(command -v "python$version" || true)"
    if [ -n "$found" ] && "$found" -c pass 2>/dev/null; then
        echo "$found"
        return
    fi
    local root
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    ls -d "$root"/versions/"$version".*/bin/"python$version" 2>/dev/null | sort -V | tail -1 || true
}

for version in 3.9 3.13; do
    python="$(find_python "$version")"
    if [ -z "$python" ]; then
        echo "pythons.sh: no Python $version on this machine: the suite on it is skipped"
        continue
    fi
    echo "pythons.sh: the suite on $("$python" --version)"
    "$python" -m venv ".venv-$version"
    ".venv-$version/bin/pip" install -q -e ".[test]"
    ".venv-$version/bin/python" -m pytest -q
done

python="$(find_python 3.13)"
if [ -n "$python" ]; then
    echo "pythons.sh: CPython's test_concurrent_futures on localabort.Executor ($("$python" --version))"
    .venv/bin/pip install -q nox
    PATH="$(dirname "$python"):$PATH" .venv/bin/nox -s cpython-3.13
fi
