"""Diagnostics: the pairing checker, its demo, and the worked numbers of ``softclass explain``."""
