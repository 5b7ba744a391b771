"""Command line: ``exl2-enforcer check | bench | generate`` (see :mod:`.app`)."""
