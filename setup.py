"""Build kamigate, compiling the matching kernel with Cython when it can.

`KAMIGATE_NO_EXTENSIONS=1` (or a missing compiler, or a non-CPython interpreter) gives a pure
install: the engine then runs the pure-Python twin of the kernel and says so at start.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("KAMIGATE_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to a pure install instead of failing."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any build failure means "pure install"
            _report_pure(f"the matching kernel was not built ({exc})")

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            _report_pure(f"the matching kernel was not built ({exc})")


def _report_pure(why: str) -> None:
    print("*" * 60, file=sys.stderr)
    print(f"* kamigate: pure-Python install: {why}", file=sys.stderr)
    print("* the engine runs the pure-Python matching twin", file=sys.stderr)
    print("*" * 60, file=sys.stderr)


def _extensions() -> list[object]:
    if NO_EXTENSIONS:
        _report_pure("KAMIGATE_NO_EXTENSIONS is set")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _report_pure("Cython is not available")
        return []
    from setuptools import Extension

    kernel = Extension(
        "engine.worker._matching_c",
        ["ext/_matching_c.pyx"],
        extra_compile_args=["-O3"],
    )
    try:
        built = cythonize(
            [kernel],
            include_path=["ext"],
            compiler_directives={"language_level": "3", "boundscheck": False,
                                 "wraparound": False, "cdivision": True},
            quiet=True,
        )
    except Exception as exc:  # a kernel that does not translate: pure install
        _report_pure(f"Cython could not translate the kernel ({exc})")
        return []
    print("* kamigate: accelerated build (compiled matching kernel)", file=sys.stderr)
    return list(built)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
