"""The daemon side: the NATS service, notifications, chunked transfers (and, to come, lifecycle)."""
