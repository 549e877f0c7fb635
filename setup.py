"""Build of quicstore's optional C extension, quicstore._native (QUIC packet protection on
OpenSSL's libcrypto). Everything else about the package is in pyproject.toml.

The extension is optional: without a C compiler or libcrypto's headers (Debian:
``apt-get install gcc libssl-dev``) the build skips it and quicstore runs on its pure-Python
path (quicstore/transport/native.py says which path is in use, once, at import).
``QUICSTORE_NATIVE_CFLAGS`` adds compiler flags (tools/native_asan.py uses it).
"""

import os
import shlex

from setuptools import Extension, setup

extra = shlex.split(os.environ.get("QUICSTORE_NATIVE_CFLAGS", ""))

setup(
    ext_modules=[
        Extension(
            "quicstore._native",
            sources=["quicstore/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror", *extra],
            extra_link_args=[f for f in extra if f.startswith("-fsanitize")],
            optional=os.environ.get("QUICSTORE_NATIVE_REQUIRED", "") != "1",
        )
    ]
)
