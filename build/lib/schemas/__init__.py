"""Canonical models, event types and the error tree shared by every part of the connector."""
