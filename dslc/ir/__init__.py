"""The IR: typed, immutable nodes with spans, and graphs over them."""
