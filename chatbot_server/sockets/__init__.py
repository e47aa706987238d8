"""Websockets: the consumer model, layer-message dispatch, frames on the wire, the open-socket registry."""
