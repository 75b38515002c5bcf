"""Node kinds, one module each; :mod:`baton.nodes.base` is the protocol they
share. Processes import the kinds from :mod:`baton.graph`, their one public
face."""
