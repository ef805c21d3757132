"""Access control: tokens and their rights, the Origin allowlist, request rate limits, exposure warnings."""
