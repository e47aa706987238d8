"""The HTTP API for the host's back end (docs/api.md): messages, broadcasts, transcripts, handoffs."""
