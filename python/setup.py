"""Builds pulsec._core, the C half of the package, against libpulsec.

libpulsec is linked statically (no runtime path to get right, and its symbols stay inside the
extension: --exclude-libs), found in this order:

1. $PULSEC_BUILD_DIR/libpulsec.a, a CMake build of this repository (`make python` sets it);
2. ../build/libpulsec.a, the default build of this repository (`make build`);
3. an installed pulsec (`cmake --install build`), through `pkg-config --static pulsec`.

Its own dependencies (libuv, jansson, OpenSSL's libcrypto, yajl, hiredis, wslay, http-parser)
are the system's shared libraries, the Debian packages the C build uses, as the build's own
pulsec.pc lists them. Everything is offline:
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


def pkg_config(*args, env=None):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True,
                             env=env)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise SystemExit(f"pulsec: pkg-config {' '.join(args)} failed: {detail}")
    return shlex.split(out.stdout)


def find_pulsec():
    """(compile flags, link flags, files to rebuild after) for the extension."""
    build = os.environ.get("PULSEC_BUILD_DIR")
    candidates = [build] if build else [os.path.join(ROOT, "build")]
    for b in candidates:
        b = os.path.abspath(b)
        lib = os.path.join(b, "libpulsec.a")
        header = os.path.join(ROOT, "include", "pulsec.h")
        if os.path.exists(lib) and os.path.exists(header):
            # The build's own pulsec.pc names libpulsec's dependencies (it points at the install
            # prefix for libpulsec itself, which is replaced by the build's archive).
            env = {**os.environ, "PKG_CONFIG_PATH": b}
            cflags = pkg_config("--cflags", "pulsec", env=env)
            libs = pkg_config("--static", "--libs", "pulsec", env=env)
            prefix = pkg_config("--variable=prefix", "pulsec", env=env)[0]
            cflags = [f for f in cflags if not f.startswith(f"-I{prefix}")]
            libs = [f for f in libs if f != "-lpulsec" and not f.startswith(f"-L{prefix}")]
            return [f"-I{os.path.join(ROOT, 'include')}"] + cflags, [lib] + libs, [lib, header]
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
base = os.path.join(HERE, "build")
build = os.environ.get("PULSEC_BUILD_DIR")
if build:
    # Keep setuptools' build tree and egg-info out of the source tree.
    base = os.path.join(os.path.abspath(build), "python-build")
    options = {"build": {"build_base": base}, "egg_info": {"egg_base": base}}
os.makedirs(base, exist_ok=True)
# setuptools rebuilds when a source or a dependency is newer than the extension, not when the
# flags change (a new dependency of libpulsec): the flags go in a file that changes with them.
flags_file = os.path.join(base, "pulsec-flags.txt")
flags = "\n".join(kw["extra_compile_args"] + kw["extra_link_args"] + kw["include_dirs"]) + "\n"
if not os.path.exists(flags_file) or open(flags_file).read() != flags:
    with open(flags_file, "w") as f:
        f.write(flags)
depends.append(flags_file)

setup(
    ext_modules=[Extension("pulsec._core", sources=sources, depends=["src/binding.h"] + depends, **kw)],
    options=options,
)
