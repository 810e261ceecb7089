"""The data path: listeners and their limits, request targets, routing, headers, rewrite,
upstream pools, streaming, WebSocket, every router-made answer, the access log.
Of the control plane it imports only ``router.failover.director``."""
