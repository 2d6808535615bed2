"""The gateway: API, application services, store, outbox relay, workers, settings and CLI."""
