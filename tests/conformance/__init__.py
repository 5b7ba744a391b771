"""Conformance against the official JSON-Schema-Test-Suite (see ``harness.py``)."""
