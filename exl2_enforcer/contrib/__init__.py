"""Adapters that plug exl2_enforcer grammars into inference libraries (each imports its library)."""
