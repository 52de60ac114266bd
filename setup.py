"""Builds the one C extension; everything else about the project is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.ingest._scan",
            sources=["services/ingest/_scan.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            # Without a C compiler Handoff still installs and takes the Python path.
            optional=True,
        )
    ]
)
