"""Builds the compiled hot path (djl._batch); everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("djl._batch", ["djl/_batch.pyx"],
                   depends=["djl/_tensor.pxi", "djl/_answer.pxi", "djl/_v2.pxi",
                            "djl/_head.pxi", "djl/_json.pxi"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
