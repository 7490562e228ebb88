"""Feed parsers (GDMF, SOFA v2/v1), the merge of their observations, and the fetcher."""

from catalog.feeds.errors import FeedError
from catalog.feeds.gdmf import parse_gdmf
from catalog.feeds.merge import merge_release, merge_sources
from catalog.feeds.sofa import SofaFeed, parse_sofa

__all__ = ["FeedError", "SofaFeed", "merge_release", "merge_sources", "parse_gdmf", "parse_sofa"]
