"""Builds pulsec._core, the C half of the package, against libpulsec.

libpulsec is linked statically (no runtime path to get right, and its symbols stay inside the
extension: --exclude-libs), found in this order:

1. $PULSEC_BUILD_DIR/libpulsec.a, a CMake build of this repository (`make python` sets it);
2. ../build/libpulsec.a, the default build of this repository (`make build`);
3. an installed pulsec (`cmake --install build`), through `pkg-config --static pulsec`.

Its own dependencies (libuv, jansson, OpenSSL's libcrypto, yajl, wslay, http-parser) are the
system's shared libraries, the Debian packages the C build uses. Everything is offline:
`pip install --no-build-isolation ./python` needs only Debian's python3-setuptools and
python3-wheel. PULSEC_WERROR=1 turns warnings into errors (the project's own builds);
PULSEC_SANITIZE=1 builds with ASan and UBSan, against a sanitizer build of libpulsec.
"""

import os
import shlex
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEPS = ["libuv", "jansson", "libcrypto", "yajl"]  # libpulsec's dependencies with a .pc file
NO_PC = ["-lwslay", "-lhttp_parser"]  # Debian ships no .pc for these two


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise SystemExit(f"pulsec: pkg-config {' '.join(args)} failed: {detail}")
    return shlex.split(out.stdout)


def find_pulsec():
    """(compile flags, link flags, files to rebuild after) for the extension."""
    build = os.environ.get("PULSEC_BUILD_DIR")
    candidates = [build] if build else [os.path.join(ROOT, "build")]
    for b in candidates:
        lib = os.path.join(os.path.abspath(b), "libpulsec.a")
        header = os.path.join(ROOT, "include", "pulsec.h")
        if os.path.exists(lib) and os.path.exists(header):
            include = [f"-I{os.path.join(ROOT, 'include')}"]
            libs = [lib] + pkg_config("--libs", *DEPS) + NO_PC
            return include + pkg_config("--cflags", *DEPS), libs, [lib, header]
    if build:
        raise SystemExit(f"pulsec: {build}/libpulsec.a not found (run `make build` first)")
    cflags = pkg_config("--cflags", "pulsec")
    libs = pkg_config("--libs", "--static", "pulsec")
    # The static archive even where a shared libpulsec is installed beside it.
    libs = ["-l:libpulsec.a" if f == "-lpulsec" else f for f in libs]
    return cflags, libs, []


def split(cflags, libs):
    kw = {"include_dirs": [], "library_dirs": [], "extra_compile_args": [], "extra_link_args": []}
    for f in cflags:
        (kw["include_dirs"].append(f[2:]) if f.startswith("-I") else kw["extra_compile_args"].append(f))
    for f in libs:
        (kw["library_dirs"].append(f[2:]) if f.startswith("-L") else kw["extra_link_args"].append(f))
    return kw


cflags, libs, depends = find_pulsec()
kw = split(cflags, libs)
kw["extra_compile_args"] += ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter",
                             "-Wno-missing-field-initializers", "-fvisibility=hidden"]
if os.environ.get("PULSEC_WERROR") == "1":
    kw["extra_compile_args"].append("-Werror")
if os.environ.get("PULSEC_SANITIZE") == "1":
    # Against an ASan/UBSan libpulsec (build-asan): run Python with the sanitizer runtimes in
    # LD_PRELOAD (`make test-python-asan`).
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    kw["extra_compile_args"] += san
    kw["extra_link_args"] += san
kw["extra_link_args"] += ["-Wl,--exclude-libs,ALL"]

sources = [f"src/{f}.c" for f in ("module", "convert", "server", "view", "channel", "session")]

options = {}
build = os.environ.get("PULSEC_BUILD_DIR")
if build:
    # Keep setuptools' build tree and egg-info out of the source tree.
    base = os.path.join(os.path.abspath(build), "python-build")
    os.makedirs(base, exist_ok=True)
    options = {"build": {"build_base": base}, "egg_info": {"egg_base": base}}

setup(
    ext_modules=[Extension("pulsec._core", sources=sources, depends=["src/binding.h"] + depends, **kw)],
    options=options,
)
