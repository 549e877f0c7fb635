"""Interop suite: quicstore against reference QUIC/HTTP/3 peers, in the QUIC interop runner's model.

``python -m interop.install`` installs the peers, ``python -m interop.run`` runs the matrix and
writes ``interop/results/matrix.json`` and ``matrix.md``. See ``interop/README.md``.
"""
