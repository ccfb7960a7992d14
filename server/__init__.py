"""The Flask side of Fleet Monitor: app state, CLI, and (later) auth, REST API and metrics."""
