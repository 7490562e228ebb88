"""Policy compiler: blueprint configuration + catalog → candidate declarations, each with its
applicability rule. Pure and clock-free (DESIGN.md): the same inputs always give the same
candidates, tokens included, so recompiling unchanged inputs stores nothing and emits nothing.
"""

from declarations.compiler.compile import (
    STATUS_ITEMS,
    STATUS_SUBSCRIPTIONS_ID,
    compile_blueprint,
    policy_token,
    status_subscriptions_candidate,
)

__all__ = [
    "STATUS_ITEMS",
    "STATUS_SUBSCRIPTIONS_ID",
    "compile_blueprint",
    "policy_token",
    "status_subscriptions_candidate",
]
