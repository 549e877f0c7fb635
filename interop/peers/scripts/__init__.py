"""Stand-alone helper programs run by the peers' own virtual environments (not by the project's).

They import only their peer's packages and the standard library, never ``interop`` or
``quicstore``.
"""
