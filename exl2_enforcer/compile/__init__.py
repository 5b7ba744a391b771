"""Compile: constraints (JSON Schema, regex, numbers, formats) to a byte-level NFA."""
