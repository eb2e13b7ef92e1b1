"""Command line: one module per subcommand, each with ``add_arguments(parser)`` and ``run(args)``.
"""
from __future__ import annotations

