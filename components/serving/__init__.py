"""Serving: a KServe model server for the one servable model artifact (V1 and V2 REST protocols)."""
