"""Serving: one frozen base model, an adapter store, a mixed-adapter batching engine, the HTTP app."""
