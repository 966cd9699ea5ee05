"""The ``mlx-host`` command: serve, list plugins, convert models."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mlx_host.errors import MLXHostError, PluginError
from mlx_host.keys import generate_key
from mlx_host.plugins import PluginManager
from mlx_host.settings import get_settings

app = typer.Typer(help="Plugin-based, OpenAI-compatible inference server on MLX.")
models_app = typer.Typer(help="Model conversion and management.")
app.add_typer(models_app, name="models")
console = Console()


def _services() -> list:
    try:
        return PluginManager(get_settings().disabled_plugins).load().services()
    except PluginError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 9123).")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Start the server. With no MLX_HOST_API_KEYS, prints one new key per service, once."""
    import uvicorn

    settings = get_settings()
    if settings.environment == "production" and not (
        settings.ssl_certfile or settings.allow_insecure
    ):
        console.print(
            "[red]error:[/red] production needs TLS: set MLX_HOST_SSL_CERTFILE and "
            "MLX_HOST_SSL_KEYFILE, or MLX_HOST_ALLOW_INSECURE=true behind a TLS proxy"
        )
        raise typer.Exit(2)
    # uvicorn configures only its own loggers; ours say what loads, converts and evicts.
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s"
    )
    services = _services()
    if not settings.api_keys:
        keys = [generate_key(s.spec.key_prefix) for s in services]
        # Handed to the app (and to --reload workers) through the environment, never logged.
        os.environ["MLX_HOST_API_KEYS"] = ",".join(keys)
        get_settings.cache_clear()
        console.print(
            "[bold]API keys for this run[/bold] (shown once; set MLX_HOST_API_KEYS to keep)"
        )
        for service, key in zip(services, keys, strict=True):
            # Plain print: a wrapped or truncated key cannot be copied.
            print(f"  {service.spec.name:<12} {key}", flush=True)
    try:
        uvicorn.run(
            "mlx_host.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            reload=reload,
            log_level=settings.log_level,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
        )
    except PluginError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def plugins() -> None:
    """List installed services: key prefix, default model and the distribution providing it."""
    table = Table(title="Installed services")
    for column in ("service", "key prefix", "default model", "distribution", "version"):
        table.add_column(column)
    for s in _services():
        table.add_row(
            s.spec.name, s.spec.key_prefix, s.spec.default_model, s.distribution, s.version
        )
    console.print(table)


@app.command("env-example")
def env_example() -> None:
    """Print every setting as a commented .env line with its default (this is .env.example)."""
    from mlx_host.settings import Settings

    print("# Every mlx-host setting, with its default. Copy to .env and uncomment what you change.")
    print("# Variables override .env. Lists are comma-separated; MLX_HOST_MODELS is a JSON object.")
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if name == "cache_dir":
            default = "~/.cache/mlx-host"  # not this machine's home
        elif isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, dict):
            default = json.dumps(default)
        value = "" if default is None else default
        print(f"\n# {info.description}\n# MLX_HOST_{name.upper()}={value}")


@models_app.command("convert")
def convert(
    src: Annotated[Path, typer.Argument(help="A .gguf file or a Hugging Face-format directory.")],
    dst: Annotated[Path, typer.Argument(help="The MLX model directory to write.")],
    weight_format: Annotated[
        str, typer.Option("--format", help="auto, float32, float16 or quantized.")
    ] = "auto",
) -> None:
    """Convert a model into an MLX directory that mlx-host (and mlx-lm) can serve."""
    from mlx_host.engine.device import preferred_weight_format
    from mlx_host.models.sources import convert_into_cache

    if dst.exists():
        console.print(f"[red]error:[/red] {dst} already exists")
        raise typer.Exit(2)
    fmt = preferred_weight_format(weight_format)
    try:
        with Progress(console=console) as progress:
            task = progress.add_task(f"converting {src.name} ({fmt})", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            convert_into_cache(src, dst, fmt, advance)
    except MLXHostError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    console.print(f"wrote {dst}")


ServerUrl = Annotated[
    str | None, typer.Option("--url", help="Server URL (default: from the host/port settings).")
]


def _admin_call(method: str, path: str, url: str | None) -> dict:
    """Call a running server's management API with MLX_HOST_ADMIN_KEY."""
    import httpx

    settings = get_settings()
    if settings.admin_key is None:
        console.print("[red]error:[/red] set MLX_HOST_ADMIN_KEY to manage a running server")
        raise typer.Exit(2)
    base = url or f"http://{settings.host}:{settings.port}"
    headers = {"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"}
    try:
        response = httpx.request(method, f"{base}/api/v1{path}", headers=headers, timeout=None)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach {base}: {exc}")
        raise typer.Exit(1) from exc
    body = response.json()
    if response.status_code >= 400:
        console.print(f"[red]error {response.status_code}:[/red] {body['error']['message']}")
        raise typer.Exit(1)
    return body


def _gib(value: int | None) -> str:
    return "" if value is None else f"{value / 1024**3:.2f} GiB"


@models_app.command("list")
def list_models(url: ServerUrl = None) -> None:
    """List a running server's models: loaded state, memory, priority, pins."""
    models = _admin_call("GET", "/models", url)["data"]
    usage = _admin_call("GET", "/models/memory/usage", url)
    table = Table(
        title=f"Models ({_gib(usage['used_bytes'])} used of {_gib(usage['budget_bytes'])})"
    )
    for column in (
        "model",
        "kind",
        "loaded",
        "memory",
        "format",
        "priority",
        "pinned",
        "served by",
    ):
        table.add_column(column)
    for m in models:
        table.add_row(
            m["id"], m.get("kind", ""), "yes" if m["loaded"] else "", _gib(m.get("memory_bytes")),
            m.get("weight_format", ""), str(m.get("priority", "")),
            "yes" if m.get("pinned") else "", m.get("served_by") or "(no source)",
        )  # fmt: skip
    console.print(table)


@models_app.command("load")
def load_model(name: str, url: ServerUrl = None) -> None:
    """Load a model on a running server now (evicting idle ones if the budget needs it)."""
    with console.status(f"loading {name}"):
        model = _admin_call("POST", f"/models/{name}/load", url)
    console.print(f"loaded {name}: {_gib(model['memory_bytes'])}")


@models_app.command("unload")
def unload_model(name: str, url: ServerUrl = None) -> None:
    """Unload a model on a running server."""
    _admin_call("POST", f"/models/{name}/unload", url)
    console.print(f"unloaded {name}")


if __name__ == "__main__":
    app()
