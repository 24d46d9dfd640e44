"""Importing this module registers every built-in method (each lives in a module of its own)."""
