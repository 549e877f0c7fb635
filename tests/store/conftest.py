"""Fixtures shared by the store tests. moto's S3 server is registered here, once, so that
every module of the session uses one server (a session fixture imported into two modules
would be two fixtures, and two servers)."""

from .motoserver import moto_server, s3_store  # noqa: F401 (fixtures)
