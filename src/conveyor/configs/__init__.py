"""Deployment config: find image references (Kubernetes, Helm values, kustomize, Compose,
GitHub Actions, GitLab CI, Dockerfiles, shell), lint them, pin them to digests.

Pure code: no network and no database. What needs the registry or the ledger (resolving a
tag, "was this digest promoted to production?") comes in as a function argument.
"""

from __future__ import annotations

from conveyor.configs.extract import ParsedFile, analyse, extract_sites
from conveyor.configs.files import detect_kind, discover, read_source
from conveyor.configs.sites import ConfigFileError, ImageSite, Location, is_dynamic

__all__ = [
    "ConfigFileError",
    "ImageSite",
    "Location",
    "ParsedFile",
    "analyse",
    "detect_kind",
    "discover",
    "extract_sites",
    "is_dynamic",
    "read_source",
]
