"""I/O at the edges: files, formats and services. Cores never import from here."""
