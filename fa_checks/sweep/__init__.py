"""Sweeps: a grid of methods, options and seeds (:mod:`.grid`), read from a file as data
(:mod:`.config`)."""
