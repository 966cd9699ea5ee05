"""The ``mlx-host`` command: serve, list plugins, manage models, and plugins' own commands."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mlx_host.errors import MLXHostError, PluginError
from mlx_host.key_store import KeyStore, StoredKey, create_key, open_key_store
from mlx_host.keys import generate_key
from mlx_host.models.spec import WeightFormatSetting
from mlx_host.plugins import InstalledService, PluginManager
from mlx_host.runtime.blas import reference_blas_warning
from mlx_host.settings import Settings, get_settings

app = typer.Typer(help="Plugin-based, OpenAI-compatible inference server on MLX.")
models_app = typer.Typer(help="Model conversion and management.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(
    help="API keys in the key store (a file, or Redis with MLX_HOST_SESSION_BACKEND=redis): "
    "a running server accepts new ones and refuses revoked ones at once."
)
app.add_typer(keys_app, name="keys")
console = Console()


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line; the caller raises what this returns."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def _settings() -> Settings:
    """The settings, or one line per invalid one naming it and what it accepts."""
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "MLX_HOST_" + "_".join(str(p) for p in error["loc"][:1]).upper()
            console.print(
                f"[red]error:[/red] {name}={error.get('input')!r}: {error['msg']}",
                soft_wrap=True, highlight=False,
            )  # fmt: skip
        raise typer.Exit(2) from exc
    except SettingsError as exc:  # a JSON setting that is not JSON
        hint = 'JSON settings take an object, e.g. \'{"llm": "..."}\''
        raise _fail(f"{exc} ({hint})", 2) from exc


def _plugins(settings: Settings) -> tuple[PluginManager, list[InstalledService]]:
    """The loaded plugins and their services; a plugin or service that cannot load is one
    line naming it."""
    try:
        plugins = PluginManager(settings.disabled_plugins).load()
        return plugins, plugins.services()
    except PluginError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 9123).")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Start the server. With no MLX_HOST_API_KEYS, prints one new key per service, once (and,
    in development, an admin key when MLX_HOST_ADMIN_KEY is unset)."""
    import uvicorn

    from mlx_host.app import create_app

    settings = _settings()
    if settings.environment == "production" and not (
        settings.ssl_certfile or settings.allow_insecure
    ):
        raise _fail(
            "production needs TLS: set MLX_HOST_SSL_CERTFILE and MLX_HOST_SSL_KEYFILE, or "
            "MLX_HOST_ALLOW_INSECURE=true behind a TLS proxy",
            2,
        )
    if warning := reference_blas_warning(settings.blas):  # before any model is slow
        console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True, highlight=False)
    # uvicorn configures only its own loggers; ours say what loads, converts and evicts.
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s"
    )
    plugins, services = _plugins(settings)
    generated: list[tuple[str, str]] = []
    if not settings.api_keys:
        generated += [(s.spec.name, generate_key(s.spec.key_prefix)) for s in services]
        os.environ["MLX_HOST_API_KEYS"] = ",".join(key for _, key in generated)
    if settings.admin_key is None and settings.environment == "development":
        generated.append(("(admin)", "admin_" + generate_key("")))
        os.environ["MLX_HOST_ADMIN_KEY"] = generated[-1][1]
    if generated:
        # Handed to the app (and to --reload workers) through the environment, never logged.
        get_settings.cache_clear()
        settings = _settings()
        console.print(
            "[bold]Keys for this run[/bold] (shown once; set MLX_HOST_API_KEYS and "
            "MLX_HOST_ADMIN_KEY to keep them)"
        )
        for name, key in generated:
            # Plain print: a wrapped or truncated key cannot be copied.
            print(f"  {name:<12} {key}", flush=True)
    try:
        # Built here, not by uvicorn, so that a bad key or plugin is one line, not a traceback.
        app_or_factory = "mlx_host.app:create_app" if reload else create_app(settings, plugins)
    except PluginError as exc:
        raise _fail(str(exc)) from exc
    uvicorn.run(
        app_or_factory,
        factory=reload,
        host=host or settings.host,
        port=port or settings.port,
        reload=reload,
        log_level=settings.log_level,
        # mlx_host.access writes one line per request instead: uvicorn's would write query
        # strings, and a key sent as ?api_key= with them.
        access_log=False,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )


@app.command()
def plugins() -> None:
    """List installed services (key prefix, default model per capability, distribution) and
    engines (which model kinds they run; what an unavailable one needs)."""
    manager, services = _plugins(_settings())
    table = Table(title="Installed services")
    for column in ("service", "key prefix", "default models", "distribution", "version"):
        table.add_column(column, overflow="fold")
    for s in services:
        defaults = "\n".join(f"{c}: {m}" for c, m in s.spec.default_models.items())
        table.add_row(s.spec.name, s.spec.key_prefix, defaults, s.distribution, s.version)
    console.print(table)
    engines = Table(title="Engines")
    for column in ("engine", "kind", "available"):
        engines.add_column(column, overflow="fold")
    for e in manager.engines():
        missing = e.missing()
        engines.add_row(e.name, e.kind, f"no: {e.install_hint}" if missing else "yes")
    console.print(engines)


@app.command("env-example")
def env_example() -> None:
    """Print every setting as a commented .env line with its default (this is .env.example)."""
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
        WeightFormatSetting, typer.Option("--format", help="How to store the weights.")
    ] = "auto",
) -> None:
    """Convert a model into an MLX directory that mlx-host (and mlx-lm) can serve."""
    from mlx_host.engine.device import preferred_weight_format
    from mlx_host.models.sources import convert_into_cache

    if dst.exists():
        raise _fail(f"{dst} already exists", 2)
    fmt = preferred_weight_format(weight_format)
    try:
        with Progress(console=console) as progress:
            task = progress.add_task(f"converting {src.name} ({fmt})", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            convert_into_cache(src, dst, fmt, advance)
    except MLXHostError as exc:
        raise _fail(exc.message) from exc
    console.print(f"wrote {dst}")


ServerUrl = Annotated[
    str | None, typer.Option("--url", help="Server URL (default: from the host/port settings).")
]


def _admin_call(method: str, path: str, url: str | None) -> dict:
    """Call a running server's management API with MLX_HOST_ADMIN_KEY."""
    import httpx

    settings = _settings()
    if settings.admin_key is None:
        raise _fail(
            "MLX_HOST_ADMIN_KEY is not set here: set it to the admin key the server was "
            "started with (printed by `mlx-host serve` when it makes one)",
            2,
        )
    base = url or f"http://{settings.host}:{settings.port}"
    headers = {"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"}
    try:
        response = httpx.request(method, f"{base}/api/v1{path}", headers=headers, timeout=None)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the server at {base} (set --url or MLX_HOST_PORT)") from exc
    if response.status_code == 401:
        raise _fail(
            f"the server at {base} refused MLX_HOST_ADMIN_KEY: set it to the admin key the "
            "server was started with"
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise _fail(f"{base} answered {response.status_code} without JSON") from exc
    if response.status_code >= 400:
        message = body.get("error", {}).get("message", response.reason_phrase)
        raise _fail(f"{response.status_code}: {message}")
    return body


def _gib(value: int | None) -> str:
    return "" if value is None else f"{value / 1024**3:.2f} GiB"


def _keep(model: dict) -> str:
    """How hard a model is kept loaded: pinned, or its eviction priority."""
    return "pinned" if model.get("pinned") else str(model.get("priority", ""))


def _served_by(model: dict) -> str:
    """Blank when a model serves itself; else what serves it."""
    served_by = model.get("served_by")
    if served_by is None:
        return "(no weights here)"
    return f"stand-in {served_by}" if model.get("stand_in") else ""


@models_app.command("list")
def list_models(url: ServerUrl = None) -> None:
    """List a running server's models: kind, state, memory, format, how they are kept."""
    models = _admin_call("GET", "/models", url)["data"]
    usage = _admin_call("GET", "/models/memory/usage", url)
    table = Table(
        title=f"Models ({_gib(usage['used_bytes'])} used of {_gib(usage['budget_bytes'])})"
    )
    # Nothing is cut short: names fold onto more lines on a narrow terminal, and output for
    # a pipe or file is as wide as the table needs.
    for column in ("model", "kind", "state", "memory", "format", "kept", "served by"):
        table.add_column(column, overflow="fold")
    for m in models:
        table.add_row(
            m["id"], m.get("kind", ""), m.get("state", ""), _gib(m.get("memory_bytes")),
            m.get("weight_format", ""), _keep(m), _served_by(m),
        )  # fmt: skip
    if console.is_terminal:
        console.print(table)
    else:
        unbounded = console.options.update_width(10_000)
        Console(width=console.measure(table, options=unbounded).maximum).print(table)


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


def main() -> None:
    """The ``mlx-host`` command, with the subcommands installed plugins add."""
    try:
        manager = PluginManager(get_settings().disabled_plugins).load()
        manager.add_commands(app)
    except (ValidationError, SettingsError, PluginError):
        pass  # the command itself reports it in one line, if it needs the plugins
    app()


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """Seconds of ``30d``, ``12h``, ``90m`` or ``45s``."""
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) == 0:
        raise _fail(f"--expires {text!r}: give a number and s, m, h or d, e.g. 30d", 2)
    return int(number) * _DURATION_UNITS[unit]


def _key_store(settings: Settings) -> KeyStore:
    return open_key_store(settings.session_backend, settings.keys_file, settings.redis_url)


@keys_app.command("create")
def create_key_command(
    service: Annotated[str, typer.Option(help="The service the key belongs to.")],
    name: Annotated[str, typer.Option(help="What the key is for (shown by keys list).")] = "",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d, 12h; default: until revoked.")
    ] = None,
) -> None:
    """Create a key for SERVICE and print it, once: only its hash is stored."""
    settings = _settings()
    _, services = _plugins(settings)
    spec = next((s.spec for s in services if s.spec.name == service), None)
    if spec is None:
        known = ", ".join(sorted(s.spec.name for s in services))
        raise _fail(f"no service {service!r} is installed (installed: {known})", 2)
    lifetime = _duration(expires) if expires else None
    store = _key_store(settings)

    async def create() -> tuple[str, StoredKey]:
        try:
            return await create_key(store, spec.name, spec.key_prefix, name, lifetime)
        finally:
            await store.close()

    key, record = asyncio.run(create())
    console.print(f"Created {record.id} for {service} (shown once; store it now):")
    print(key, flush=True)  # plain: a wrapped key cannot be copied


@keys_app.command("list")
def list_keys() -> None:
    """List the stored keys: id, service, name, created, expires, last used, revoked (never
    the key)."""
    store = _key_store(_settings())

    async def read() -> list[StoredKey]:
        try:
            return await store.all()
        finally:
            await store.close()

    table = Table(title="API keys")
    for column in ("id", "service", "name", "key", "created", "expires", "last used", "revoked"):
        table.add_column(column, overflow="fold")
    for r in asyncio.run(read()):
        table.add_row(
            r.id, r.service, r.name, r.hint, _when(r.created_at), _when(r.expires_at),
            _when(r.last_used_at), _when(r.revoked_at),
        )  # fmt: skip
    console.print(table)


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The id keys list shows.")]) -> None:
    """Revoke a stored key: every server using this store refuses it from now on."""
    store = _key_store(_settings())

    async def revoke() -> StoredKey | None:
        try:
            return await store.revoke(key_id)
        finally:
            await store.close()

    record = asyncio.run(revoke())
    if record is None:
        raise _fail(f"no key {key_id!r} in the key store", 2)
    console.print(f"Revoked {record.id} ({record.service}, {record.name or 'no name'})")


def _when(moment: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment)) if moment else ""


if __name__ == "__main__":
    main()
