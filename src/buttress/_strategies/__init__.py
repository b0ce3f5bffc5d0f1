"""One module per pattern: the spec (validated configuration) and its sync/async flows."""
