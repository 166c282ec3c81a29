"""Settings: environment > config.yaml > defaults, validated once at start-up.

`config.yaml` values may reference environment variables as `${VAR}` or `${VAR:-default}`.
Every problem is reported as `<file>: <dotted.key>: <what is wrong>`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlparse

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _duration(value: Any) -> Any:
    """`30`, `30s`, `500ms`, `5m`, `2h`, `7d` -> seconds."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"expected a duration such as 30s, 5m or 7d, got {value!r}")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
SecondsOrOff = Annotated[float, BeforeValidator(_duration), Field(ge=0)]


def _secret(value: Any) -> Any:
    """A secret goes into a header or an AUTH as it is: surrounding whitespace (the newline `echo` or a
    file adds) or a control character would make it a different secret, or split a header."""
    if isinstance(value, str) and (value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise ValueError(
            "has leading or trailing whitespace or a control character (a newline from a file or `echo`?): "
            "remove it; the value is used exactly as written"
        )
    return value


Secret = Annotated[str, BeforeValidator(_secret)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSettings(_Strict):
    """How the bridge authenticates to Azure for one route."""

    type: Literal["api_key", "entra"] = "api_key"
    api_key: Secret | None = Field(default=None, repr=False)
    client_id: str | None = None
    """Entra only: the client id of a user-assigned managed identity."""
    scope: str | None = None
    """Entra only: overrides the scope the backend needs."""

    @model_validator(mode="after")
    def _check(self) -> AuthSettings:
        if self.type == "api_key" and not self.api_key:
            raise ValueError("auth.type api_key needs auth.api_key")
        return self


class AgentRef(_Strict):
    name: str = Field(min_length=1, max_length=256)
    version: str | None = None
    endpoint_scoped: bool = False
    """Call the agent's own published endpoint (`{project}/agents/{name}/endpoint/protocols/openai/responses`),
    which is stateless: the bridge keeps each conversation's history and sends it whole (docs/conversations.md)."""

    @model_validator(mode="after")
    def _check(self) -> AgentRef:
        if self.endpoint_scoped and self.version is not None:
            raise ValueError("an agent endpoint serves the version the agent publishes: leave agent.version out")
        return self


class MigrateFromSettings(_Strict):
    """The Assistants agent a Foundry v2 route served before: its conversations are carried to v2
    (`agent-bridge migrate`, or lazily at their next turn; docs/migration.md)."""

    assistant_id: str = Field(pattern=r"^asst_")
    endpoint: str | None = None
    """Default: the route's own project (its classic Agents paths); an `/openai` resource names its own."""
    api_version: str | None = None
    """Default: the route's own."""
    auth: AuthSettings | None = None
    """Default: the route's own."""
    keep_source: Seconds = 7 * 86400.0
    """How long a source thread is kept after its conversation was carried and verified; then the janitor deletes it."""


class RouteSettings(_Strict):
    """One model name a client can use, and the Azure agent behind it."""

    endpoint: str
    """Azure OpenAI resource (`https://<res>.openai.azure.com`) or Foundry project
    (`https://<res>.services.ai.azure.com/api/projects/<project>`)."""
    assistant_id: str | None = None
    agent: AgentRef | None = None
    api_version: str | None = None
    auth: AuthSettings
    upstream: Literal["stream", "poll"] = "stream"
    """How the bridge follows an Assistants run: streamed (default) or polled with adaptive backoff."""
    timeout: Seconds = 300.0
    """Deadline of one turn; past it the run is cancelled and the client gets 504."""
    mcp_approval: Literal["client", "approve", "deny"] | None = None
    """Who approves the agent's MCP tool calls: the client (chat: calls of the `mcp_approval` function),
    the bridge (`approve` / `deny` every one). Unset, chat turns that need an approval fail with 400
    and Responses clients answer `mcp_approval_request` items themselves: nothing is approved silently."""
    citation_markers: Literal["numbered", "keep", "strip"] = "numbered"
    """Citation markers such as `【4:0†source】` in answers: `[1]`-style references, kept, or removed."""
    background: bool = True
    """Foundry v2 only: create responses in background mode (`background: true`, streamed and stored),
    the only mode in which Azure lets a response be cancelled, so that a client's hang-up or the
    deadline stops the work upstream. `false`: foreground responses, which run on to their end
    upstream when the client goes away (Azure refuses to cancel them)."""
    description: str | None = None
    migrate_from: MigrateFromSettings | None = None
    """Foundry v2 only: the Assistants agent this route served before (its threads are carried to conversations)."""

    # Field validators run even when another field fails, so one run reports every problem.
    @field_validator("assistant_id")
    @classmethod
    def _check_assistant_id(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("asst_"):
            raise ValueError(f"assistant_id must start with 'asst_', got {value!r}")
        return value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"endpoint must be an http(s) URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> RouteSettings:
        if (self.assistant_id is None) == (self.agent is None):
            raise ValueError("a route needs exactly one of assistant_id (Assistants) or agent (Foundry v2)")
        if self.agent is not None and not self.is_project:
            raise ValueError("a Foundry v2 agent needs a project endpoint (.../api/projects/<project>)")
        if self.migrate_from is not None and self.agent is None:
            raise ValueError("migrate_from belongs on a Foundry v2 route (agent): the route its threads move to")
        return self

    def source_route(self) -> RouteSettings | None:
        """The Assistants route this route served before (`migrate_from`, defaults filled from this route)."""
        source = self.migrate_from
        if source is None:
            return None
        return RouteSettings(
            endpoint=source.endpoint or self.endpoint,
            assistant_id=source.assistant_id,
            api_version=source.api_version or self.api_version,
            auth=source.auth or self.auth,
            upstream=self.upstream,
            timeout=self.timeout,
            mcp_approval=self.mcp_approval,
            citation_markers=self.citation_markers,
        )

    @property
    def backend(self) -> Literal["assistants", "foundry", "endpoint"]:
        if self.assistant_id is not None:
            return "assistants"
        return "endpoint" if self.agent is not None and self.agent.endpoint_scoped else "foundry"

    @property
    def is_project(self) -> bool:
        return "/api/projects/" in urlparse(self.endpoint).path


PROJECT_KEY_WARNING = (
    "Agent Service takes Entra ID; a key works only through a gateway that takes it "
    "(set auth.type: entra unless such a gateway stands in front of this project)"
)


def config_warnings(settings: Settings) -> list[str]:
    """What is valid but probably wrong, as `<dotted.key>: <what>` lines.

    Start-up logs them and check-config prints them; neither refuses the config over them.
    """
    return [
        f"routes.{name}.auth: {PROJECT_KEY_WARNING}"
        for name, route in settings.routes.items()
        if route.is_project and route.auth.type == "api_key"
    ]


class KeyLimits(_Strict):
    """A key's limits (unset or null: no limit). Tokens are Azure's own figures, counted when a turn ends."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    turns_in_flight: int | None = Field(default=None, gt=0)


class KeySettings(_Strict):
    """A client key: its name is the owner of everything created with it."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    key: Secret | None = Field(default=None, min_length=16, repr=False)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """The key's SHA-256 (hex), so the key itself need not be in the config."""
    models: list[str] = Field(default_factory=lambda: ["*"])
    admin: bool = False
    limits: KeyLimits | None = None
    """Field by field over `limits.per_key` (a field set to null here lifts that default for this key)."""

    @model_validator(mode="after")
    def _check(self) -> KeySettings:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("a key needs exactly one of key or sha256")
        return self


class ThreadSettings(_Strict):
    ttl: Seconds = 7 * 86400.0
    """Threads idle longer than this are deleted on Azure, then forgotten."""
    sweep_interval: Seconds = 60.0
    """How often each replica's janitor looks for expired threads (replicas sweep disjoint buckets)."""
    janitor: bool = True
    janitor_concurrency: int = Field(default=16, gt=0, le=256)
    """Azure deletions one replica's janitor runs at once."""
    retry_base: Seconds = 30.0
    """A deletion that failed is tried again after this, doubling each time (up to an hour)."""


class RedisTLSSettings(_Strict):
    """TLS to Redis (a `rediss://` or `rediss+cluster://` URL)."""

    ca_file: str | None = None
    """PEM file of the CA(s) that signed the server's certificate; default: the system's CAs."""
    verify: bool = True
    """Check the server's certificate chain. Off only for a test server, never in production."""
    check_hostname: bool = True
    """Check that the certificate names the host in the URL."""
    cert_file: str | None = None
    """A client certificate (mutual TLS), with key_file."""
    key_file: str | None = None


class RedisAuthSettings(_Strict):
    """How the bridge authenticates to Redis."""

    type: Literal["access_key", "entra"] = "access_key"
    access_key: Secret | None = Field(default=None, repr=False)
    """The cache's access key (or a password); default: the password in the URL, if any."""
    username: str | None = None
    """access_key: an ACL user. entra: the object (principal) id of the identity, as the cache's
    access policy names it; default: the token's `oid` claim."""
    client_id: str | None = None
    """entra only: the client id of a user-assigned managed identity (else system-assigned)."""
    scope: str = "https://redis.azure.com/.default"
    refresh_margin: Seconds = 300.0
    """entra only: connections re-authenticate this long before the token expires (or at half its life)."""


class RedisSettings(_Strict):
    """The Redis connection (the URL itself is `REDIS_URL`)."""

    tls: RedisTLSSettings = RedisTLSSettings()
    auth: RedisAuthSettings = RedisAuthSettings()
    max_connections: int = Field(default=128, gt=0)
    """Per worker (per cluster node on a cluster). Budget: replicas x workers x this <= the cache's limit."""
    connect_timeout: Seconds = 2.0
    command_timeout: Seconds = 5.0
    require_noeviction: bool = False
    """An evicting `maxmemory-policy` is always reported (an error line, `/readyz`, a gauge); true also makes
    `/readyz` fail on it (docs/security.md says why the default only reports)."""


class ResponseSettings(_Strict):
    ttl: Seconds = 30 * 86400.0
    """How long a Responses-API response id (previous_response_id, GET /v1/responses/{id}) is kept."""
    background_ttl: Seconds = 86400.0
    """Assistants routes: how long a background response's state and stream events stay in Redis after
    their last write (resume and progress need them; its final Response is kept `ttl` like any other)."""
    background_max_events: int = Field(default=10_000, gt=0)
    """Assistants routes: the stream events kept per background response; past it only the end is kept."""


class LimitSettings(_Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_messages: int = Field(default=1000, gt=0)
    max_input_items: int = Field(default=1000, gt=0)
    """Input items per `/v1/responses` request (chat requests: `max_messages`)."""
    max_referenced_ids: int = Field(default=100, gt=0)
    """Ids one request may name (item references, input item ids, file ids): each is owner-checked."""
    max_id_length: int = Field(default=128, ge=16, le=1024)
    """The longest id a client may send (Azure's ids are well under 100 characters)."""
    lock_wait: Seconds = 5.0
    """How long a turn waits for a busy conversation before answering 409."""
    max_history_items: int = Field(default=500, gt=0)
    """Agent-endpoint routes: the items the bridge keeps per conversation (it sends them all each turn);
    a turn that would go past it is a 400 `conversation_too_long`."""
    lock_lease: Seconds = 10.0
    """A conversation's lock lives this long unrenewed; a turn renews it every third of it, so the
    lock of a replica that died is free again within this time."""
    per_key: KeyLimits = KeyLimits()
    """Every key's limits unless its own `keys[].limits` says otherwise (docs/usage-and-limits.md)."""
    on_store_error: Literal["open", "closed"] = "open"
    """Redis down while a limited key starts a turn: `open` lets it through, `closed` answers 503."""


Access = Literal["open", "key", "admin"]


class ServerSettings(_Strict):
    """What the bridge's own HTTP endpoints show, and to whom."""

    metrics_auth: Access = "open"
    """`/metrics`: open, any client `key`, or an `admin` key (`Authorization: Bearer <key>`)."""
    openapi_auth: Access = "open"
    """`/openapi.json`, the same choices."""
    docs: bool = False
    """Serve Swagger UI at `/docs` (it loads `/openapi.json` from the browser, without a key)."""
    keepalive_timeout: Seconds = 75.0
    """An idle client connection is closed after this long (uvicorn's `timeout_keep_alive`, 5 s by default).
    Longer than the idle time of the gateways and clients in front (nginx and cloud load balancers keep
    upstream connections 60 s or more; httpx's pool 5 s), so the bridge never closes a connection a
    client is about to reuse: the client closes first."""


class Settings(BaseSettings):
    """Everything the bridge is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    redis_prefix: str = Field(default="ab:", pattern=r"^[^{}]*$")
    redis: RedisSettings = RedisSettings()
    responses: ResponseSettings = ResponseSettings()
    routes: dict[str, RouteSettings] = Field(default_factory=dict)
    threads: ThreadSettings = ThreadSettings()
    limits: LimitSettings = LimitSettings()
    server: ServerSettings = ServerSettings()
    keys: list[KeySettings] = Field(default_factory=list)
    log_content: bool = False
    """Put the request's message text (first 1,000 characters) in the access log. Off by default."""
    shutdown_grace: Seconds = 30.0
    """On SIGTERM, in-flight turns get this long to finish; then each ends in OpenAI's format (503 with
    Retry-After, or an in-stream error then [DONE]) and its run is cancelled."""
    sse_keepalive: SecondsOrOff = 15.0
    """A stream that sent nothing for this long sends an SSE comment, so idle-timeout gateways keep
    it open while the agent works; 0 turns it off."""
    open_mode: bool = False
    """Without client keys the bridge refuses to start unless this is true (env AGENT_BRIDGE_OPEN_MODE):
    then every caller is the one owner `anonymous` and the admin API stays closed. No effect with keys."""
    config_path: str | None = None

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        names = [k.name for k in self.keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"key names must be unique (each is an owner): {duplicates}")
        for key in self.keys:
            unknown = sorted(set(key.models) - set(self.routes) - {"*"})
            if unknown:
                raise ValueError(f"key {key.name!r} allows unknown models {unknown}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    def route(self, model: str) -> RouteSettings | None:
        return self.routes.get(model)


_yaml_data: ContextVar[dict[str, Any] | None] = ContextVar("_yaml_data", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_yaml_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_data.get() or {})


def interpolate(node: Any, env: dict[str, str], path: str = "", unset: list[Unset] | None = None) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a parsed YAML tree.

    A variable that is not set raises ConfigError, unless `unset` is given: then each one is appended
    there and its reference is left as written, so validation can still report every other problem."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k), unset) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, f"{path}[{i}]", unset) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        found = Unset(path, name, m.group(0))
        if unset is None:
            raise ConfigError(found.message)
        unset.append(found)
        return m.group(0)

    return _ENV_REF.sub(replace, node)


@dataclass(frozen=True)
class Unset:
    """A `${VAR}` reference to a variable that is not set, at `path`."""

    path: str
    name: str
    reference: str

    @property
    def message(self) -> str:
        return (
            f"{self.path}: environment variable {self.name} is not set (write ${{{self.name}:-default}} for a default)"
        )

    def explains(self, key: str, message: str) -> bool:
        """Whether a validation error at `key` follows from this variable being unset."""
        return key == self.path or key.startswith(self.path + ".") or self.reference in message


def _unwrap(annotation: Any) -> Any:
    """The model inside `X | None`, `Annotated[X, ...]`, `dict[str, X]` and `list[X]`, else the type."""
    while True:
        args = [a for a in get_args(annotation) if a is not type(None)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        if get_origin(annotation) is dict and len(args) == 2:
            return ("each", args[1])
        if not args:
            return annotation
        annotation = args[0]


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys a config may have at `loc` (the location of an unknown key's parent)."""
    node: Any = Settings
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, tuple):  # a mapping: `part` is one of its keys
            node = node[1]
            continue
        if isinstance(part, int):
            continue  # a list index: `node` is already the item type
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return []
        node = node.model_fields[part].annotation
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [name for name in node.model_fields if name != "config_path"]
    return []


def _format_errors(source: str, exc: ValidationError, unset: Sequence[Unset] = ()) -> list[str]:
    lines = []
    for err in exc.errors():
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if any(u.explains(key, message) for u in unset):
            continue
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            nearest = get_close_matches(str(err["loc"][-1]), _keys_at(tuple(err["loc"][:-1])), n=1, cutoff=0.6)
            if nearest:
                message += f" (did you mean {nearest[0]!r}?)"
        lines.append(f"{source}: {key}: {message}")
    return lines


def env_keys(value: str) -> list[dict[str, Any]]:
    """`AGENT_BRIDGE_API_KEYS="team-a:<key>,team-b:<key>"`: extra keys for every model, not admin."""
    keys = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        name, sep, key = entry.partition(":")
        if not sep or not name or not key:
            raise ConfigError("AGENT_BRIDGE_API_KEYS: expected 'name:key' entries separated by commas")
        keys.append({"name": name.strip(), "key": key.strip()})
    return keys


def load_settings(
    path: str | Path | None, env: dict[str, str] | None = None, *, require_routes: bool = False, **overrides: Any
) -> Settings:
    """Read `config.yaml` (if given), interpolate env references, validate; raise ConfigError naming
    every problem found (one per line), not only the first. `require_routes`: a config without any
    route is one of them (a bridge that serves nothing; the CLI's serve and check-config ask this)."""
    environ = dict(os.environ if env is None else env)
    data: dict[str, Any] = {}
    source = str(path) if path is not None else "settings"
    unset: list[Unset] = []
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: file not found") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = interpolate(raw, environ, unset=unset)
        data["config_path"] = str(path)
    problems = [f"{source}: {u.message}" for u in unset]
    if environ.get("AGENT_BRIDGE_API_KEYS"):
        extra = env_keys(environ["AGENT_BRIDGE_API_KEYS"])
        target = overrides if "keys" in overrides else data
        target["keys"] = [*target.get("keys", []), *extra]
    token = _yaml_data.set(data)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += _format_errors(source, exc, unset)
        raise ConfigError("\n".join(problems)) from exc
    finally:
        _yaml_data.reset(token)
    if require_routes and not settings.routes:
        problems.append(f"{source}: routes: no route is configured (a route maps a model name to an Azure agent)")
    if problems:
        raise ConfigError("\n".join(problems))
    return settings
