"""The facilities REST API the ``sites`` source reads: a paginated ``GET /api/v1/sites``.

Reads ``sites.json`` from the data directory on every request, so freshly generated data is
served without a restart. Errors are JSON, as a real API's would be, so clients can report them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def _positive_int(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer, got {raw!r}") from None
    if value < 1 or (maximum is not None and value > maximum):
        bounds = f"between 1 and {maximum}" if maximum else "at least 1"
        raise HTTPException(400, f"{name} must be {bounds}, got {value}")
    return value


def build_app(data_dir: Path) -> Starlette:
    sites_file = Path(data_dir) / "sites.json"

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def sites(request: Request) -> JSONResponse:
        page = _positive_int(request, "page", 1)
        page_size = _positive_int(request, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            records = json.loads(sites_file.read_text())
        except FileNotFoundError:
            return JSONResponse({"error": "no data: run make demo-data"}, status_code=503)
        first = (page - 1) * page_size
        return JSONResponse(
            {
                "items": records[first : first + page_size],
                "page": page,
                "page_size": page_size,
                "total": len(records),
                "next_page": page + 1 if first + page_size < len(records) else None,
            }
        )

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if exc.status_code != 404 else f"no such endpoint: {request.url.path}"
        return JSONResponse({"error": detail}, status_code=exc.status_code)

    return Starlette(
        routes=[Route("/health", health), Route("/api/v1/sites", sites)],
        exception_handlers={HTTPException: http_error},
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from platform_assets.settings import load_local_defaults

    load_local_defaults()
    default_dir = Path(os.environ.get("PLATFORM_DATA_DIR", "data")) / "sources" / "api"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("DEMO_API_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_API_PORT", "28080")))
    parser.add_argument("--data-dir", type=Path, default=default_dir)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.data_dir), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
