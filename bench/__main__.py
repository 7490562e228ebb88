"""Run every benchmark in this folder."""

from __future__ import annotations

import asyncio

from bench import catalog_sync, compliance, ddm_sync, recompile


def main() -> None:
    asyncio.run(catalog_sync.main())
    print()
    asyncio.run(recompile.main())
    print()
    asyncio.run(ddm_sync.main())
    print()
    asyncio.run(compliance.main())


if __name__ == "__main__":
    main()
