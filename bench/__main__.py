"""Run every benchmark in this folder."""

from __future__ import annotations

import asyncio

from bench import ddm_sync


def main() -> None:
    asyncio.run(ddm_sync.main())


if __name__ == "__main__":
    main()
