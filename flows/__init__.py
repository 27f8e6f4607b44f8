"""Bytewax dataflows, their operators, and the pure logic they call (rating, dedupe)."""
