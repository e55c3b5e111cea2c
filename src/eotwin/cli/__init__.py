"""Typer apps, one per capability: parse options, call a pipeline, print (the command-line adapter)."""
