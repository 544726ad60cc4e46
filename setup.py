"""Only what pyproject.toml cannot say: the cffi extension (bulkhead._copyengine)."""

from setuptools import setup

setup(cffi_modules=["cffi_build/build_copyengine.py:ffibuilder"])
