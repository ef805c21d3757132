"""WebRTC ingest (aiortc): peer connections whose audio tracks drive live-stream sessions."""
