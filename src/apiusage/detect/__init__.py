"""Detectors: pure functions from a request view to facts (auth method, API version, client).

They run in the delivery worker, off the request path.
"""
