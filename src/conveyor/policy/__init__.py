"""Policy: conveyor.yaml (identities, environments, gates) and gate evaluation."""
