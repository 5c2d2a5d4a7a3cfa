"""OCI model: references, digests, media types, manifests and the image layout store.

Pure code except ``layout`` (local disk). Imports nothing of conveyor's but ``errors``.
"""
