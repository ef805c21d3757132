"""Live streams: per-stream sessions, their ring buffers, and batched hand-off to the detection pool."""
