"""Ledger schema revisions (frozen: never edit a released one, add a new revision)."""
