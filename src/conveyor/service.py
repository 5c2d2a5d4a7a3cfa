"""The operations users name, wiring registry, ledger and policy. Faces call only this."""

from __future__ import annotations
