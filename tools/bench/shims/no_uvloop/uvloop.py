"""Put this folder first on PYTHONPATH to make ``import uvloop`` fail.

aioquic's example programs install uvloop whenever it imports; the bench uses this stand-in to
run them on asyncio's default event loop for the "without uvloop" rows.
"""

raise ImportError("uvloop disabled by tools.bench (asyncio default event loop)")
