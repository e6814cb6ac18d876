"""Builds the compiled hot path (djl._batch); everything else is in pyproject.toml."""

import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("djl._batch", ["djl/_batch.pyx"],
                   depends=sorted(glob.glob("djl/*.pxi")))],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
