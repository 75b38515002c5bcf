"""The activities the worker registers: everything that touches the world."""
