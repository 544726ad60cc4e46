"""Only what pyproject.toml cannot say: the cffi extension (bulkhead_wire._copyengine)."""

from setuptools import setup

setup(cffi_modules=["cffi_build/build_copyengine.py:ffibuilder"])
