"""The package is typed (py.typed and stubs): mypy --strict accepts the package itself and a
program using its whole public API (typing/usage.py); the demos, annotated as the seed's
examples are, type-check too. mypy is Debian's python3-mypy."""

import subprocess
import sys

from conftest import ROOT


def mypy(*args):
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir",
         str(ROOT / "build/mypy-cache"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_package_and_its_api_are_strictly_typed():
    mypy("--strict", "-p", "pulsec")
    mypy("--strict", "tests/python/typing/usage.py")


def test_the_demos_type_check():
    mypy("--check-untyped-defs", "examples/python/chat.py", "examples/python/progress.py",
         "bench/python/pulsec_echo.py")
