"""Connections: where deliveries go (SFTP so far), with secrets sealed at rest.

`model` (values), `rules` (validation and the calls' logic, no I/O of its own),
`store` (the only SQL), `server` (the gRPC servicer)."""
