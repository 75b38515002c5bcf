"""Reference systems of record that processes write to."""
