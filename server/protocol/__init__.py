"""Wire protocol: framing codecs, typed messages, error codes. See docs/protocol.md."""
