"""Baton's audit trail: an append-only, hash-chained store of run events and its reports.

Import from the submodules (`baton.audit.events`, `.store`, `.verify`, `.export`): this
package module stays empty so that workflow code importing the event models does not pull
database drivers into Temporal's workflow sandbox.
"""
