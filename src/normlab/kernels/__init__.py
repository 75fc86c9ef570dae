"""Pure functions with hand-derived backward passes; no state, no classes with behaviour."""
