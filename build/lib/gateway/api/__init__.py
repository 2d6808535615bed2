"""The HTTP interface: internal API, callback endpoints and ops endpoints."""
