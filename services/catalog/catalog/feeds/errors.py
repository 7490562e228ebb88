class FeedError(ValueError):
    """A feed that cannot be used (fetch failed, or the body is unusable); the catalog keeps
    its previous data and records the reason on the source."""
