"""Reports people look at: the demo index, plots."""
