"""Tokens: exact token bytes of a vocabulary, byte maps, the token trie."""
