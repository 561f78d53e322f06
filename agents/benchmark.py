"""Moved: the benchmark harness is the package :mod:`agents.harness` (specs, config, runners, pool, summary,
report, cli). This module only re-exports its public names so that ``from agents.benchmark import ...`` and
``from agents import benchmark`` keep working; new code should import from :mod:`agents.harness`.
"""

from agents.harness import *  # noqa: F403
from agents.harness import __all__  # noqa: F401
