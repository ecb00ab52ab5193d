"""I/O at the edges: one module per external system."""
