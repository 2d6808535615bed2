"""Adapters: everything that knows one external platform lives in its own folder."""
