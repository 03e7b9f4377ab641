"""flowxfer: resumable, verified, rate-limit-aware bulk transfers for Flow.

This top-level package is deliberately tiny so that importing the local
server (``flowxfer.server``) never drags in the engine.
"""

from __future__ import annotations

__version__ = "0.1.0"
