"""Core: context, outcome, handle predicates, validation, clock, pipeline."""
