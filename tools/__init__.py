"""Developer tools of the quicstore project (not shipped in the package)."""
