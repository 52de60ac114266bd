"""The HTTP API channel: settings, body templates, response rules and the client."""
