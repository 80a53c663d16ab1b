from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import ConfigError
from orchestrator.settings import get_settings


def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    workers: Annotated[int, typer.Option(help="Server processes.", min=1)] = 1,
) -> None:
    """Run the HTTP API (fal's clients speak only https: give a certificate)."""
    import uvicorn

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together")
    from orchestrator.observability.logs import configure_logging

    settings = get_settings()  # bad settings stop start-up here, with the setting's name
    configure_logging(settings)
    uvicorn.run(
        "orchestrator.api.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        # uvicorn's loggers propagate to the orchestrator's handler (JSON or text); the access
        # line comes from the app's middleware, with the request id.
        log_config=None,
        log_level=settings.logs.level.lower(),
        access_log=False,
        # Where the h11 parser is used, it too stops buffering past the header limit (the app
        # refuses oversized headers with 431 in either case).
        h11_max_incomplete_event_size=settings.api.max_header_bytes + 8 * 1024,
    )
