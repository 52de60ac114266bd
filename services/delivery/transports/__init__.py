"""Transports: one module per channel behind the interface in `base`, found by kind in
`registry`. Retry, tracing, metrics and the egress policy wrap the interface once (in the
delivery engine); no transport re-implements them."""
