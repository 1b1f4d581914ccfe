"""Shared pytest fixtures."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub_server import LocalHub

HUB_URL = "https://huggingface.co"


class _LocalHubSession:
    """Wraps the client's HTTP session so that a URL hard-coded to the public Hub goes to the local one instead.

    `ModelCard.validate` (hence `ModelCard.push_to_hub`) in huggingface_hub 1.x posts to a hard-coded
    `https://huggingface.co/api/validate-yaml`; 2.x uses the configured endpoint and never needs the rewrite.
    """

    def __init__(self, get_session: Callable[[], Any], endpoint: str):
        self._get_session = get_session
        self._endpoint = endpoint

    def post(self, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith(HUB_URL + "/"):
            url = self._endpoint + url[len(HUB_URL) :]
        return self._get_session().post(url, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get_session(), name)


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A fresh in-memory Hub (tests/hub_server.py) that `huggingface_hub` and `transformers` talk to.

    Sets `HF_ENDPOINT`, a fresh `HF_HOME` under `tmp_path`, a dummy `HF_TOKEN`, and turns telemetry and Xet off.
    `huggingface_hub` reads its endpoint and cache paths into module constants at import time, its module-level
    `HfApi` (behind `huggingface_hub.create_repo`, `upload_file`, ...) keeps the endpoint it was built with, and
    `transformers` caches one `HfApi` of its own, so those are patched too (and `ModelCard.validate` of
    huggingface_hub 1.x, see `_LocalHubSession`); everything is restored on teardown.
    (`trust_remote_code` modules still go to `transformers`' import-time `HF_MODULES_CACHE`.)
    """
    from huggingface_hub import constants, hf_api, repocard
    from transformers.utils import hub as transformers_hub

    home = tmp_path / "hf_home"
    with LocalHub() as hub:
        environment = {
            "HF_ENDPOINT": hub.endpoint,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_TOKEN": "hf_local_hub_test_token",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        constant_values = {
            "ENDPOINT": hub.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_OFFLINE": False,
        }
        for name, value in constant_values.items():
            monkeypatch.setattr(constants, name, value)
        monkeypatch.setattr(hf_api.api, "endpoint", hub.endpoint)
        session = _LocalHubSession(repocard.get_session, hub.endpoint)
        monkeypatch.setattr(repocard, "get_session", lambda: session)
        monkeypatch.setattr(transformers_hub, "_hf_api", None, raising=False)
        yield hub
