"""A Hugging Face model's config.json, fetched alone and briefly: the one file fleetcal reads of a model that is not on
this machine. No weights, no remote code, no prompt; a short timeout and no retries, so an unreachable hub is refused
in one line within seconds (``HF_ENDPOINT`` names another hub or mirror, ``HF_TOKEN`` reads a gated model,
``HF_HUB_OFFLINE=1`` refuses at once).
"""

from __future__ import annotations

import json
import os
from typing import Any

from core.errors import CatalogError

FETCH_TIMEOUT_S = 5.0  # seconds a fetch of one small JSON file may take before it is refused
DEFAULT_ENDPOINT = "https://huggingface.co"


def config_url(repo_id: str) -> str:
    """Where a repository's config.json is served (the hub's resolve URL of its main revision)."""
    return f"{os.environ.get('HF_ENDPOINT', DEFAULT_ENDPOINT).rstrip('/')}/{repo_id}/resolve/main/config.json"


def _why(exc: Exception) -> str:
    import urllib.error  # imported when a config is fetched: urllib.request costs a planner's every start 25 ms otherwise

    if isinstance(exc, urllib.error.HTTPError):
        return {401: "gated or private: set HF_TOKEN", 403: "gated: accept its license and set HF_TOKEN", 404: "no such model"}.get(
            exc.code, f"HTTP {exc.code}"
        )
    reason = getattr(exc, "reason", exc)
    return str(reason).splitlines()[0] if str(reason) else type(exc).__name__


def fetch_config(repo_id: str, timeout_s: float = FETCH_TIMEOUT_S) -> dict[str, Any]:
    """The parsed config.json of Hugging Face repository ``repo_id`` (org/name); one CatalogError line when it cannot be had."""
    import urllib.error
    import urllib.request

    hint = "give a directory holding its config.json instead"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise CatalogError(f"model {repo_id!r}: not on this machine and HF_HUB_OFFLINE is set; {hint}")
    request = urllib.request.Request(config_url(repo_id), headers={"User-Agent": "fleetcal"})
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(4 << 20)  # a config is a few kB; nothing larger is read
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CatalogError(f"model {repo_id!r}: its config.json could not be fetched within {timeout_s:g} s ({_why(exc)}); {hint}") from exc
    try:
        cfg = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"model {repo_id!r}: the fetched config.json is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise CatalogError(f"model {repo_id!r}: the fetched config.json is not a JSON object")
    return cfg
