"""Commands on images: resolve, inspect, copy, tags (filled in by the foundation issue)."""
