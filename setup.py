"""Build hook for the optional native walks (``exl2_enforcer/engine/_walk.c``).

Everything else is declared in pyproject.toml.  The extension is ``optional``: without a C
compiler setuptools warns and goes on, but it still lists the missing library among its
outputs, and a strict editable install (README: ``editable_mode=strict``) then fails copying
it.  This command leaves an optional extension that did not build out of the outputs, so the
install succeeds and the engine uses its numpy walks (``exl2_enforcer.engine.native.available``
is False).
"""

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """``build_ext`` whose outputs are only the extensions that were built."""

    def run(self) -> None:
        super().run()
        self.extensions = [ext for ext in self.extensions if not ext.optional or os.path.exists(
            os.path.join(self.build_lib, self.get_ext_filename(self.get_ext_fullname(ext.name))))]


setup(cmdclass={"build_ext": OptionalBuildExt})
