"""conveyor: promote one immutable image digest through environments, with signed evidence."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
