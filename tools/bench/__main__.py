"""``python -m tools.bench``: see tools/bench/__init__.py."""

from tools.bench.cli import main

raise SystemExit(main())
