"""A small Python client for `lmtune serve` (any OpenAI-compatible client works too).

    from lmtune.serve.client import LmtuneClient

    with LmtuneClient("http://127.0.0.1:8000", api_key="secret") as client:
        print(client.complete("copy red 3", adapter="gen-lora", max_tokens=8))
        for piece in client.stream("copy red 3", adapter="gen-lora"):
            print(piece, end="", flush=True)
        print(client.classify(["great product", "broken"], adapter="sst2-lora"))
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Self

import httpx

from lmtune.errors import LmtuneError


class ServerError(LmtuneError):
    """The server refused or failed a request; the message is the server's."""

    def __init__(self, status: int, message: str, type: str | None = None, code: str | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.type, self.code, self.retry_after = status, message, type, code, retry_after


class LmtuneClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 300.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    # -- generation --
    def complete(self, prompt: str | list[int], adapter: str | None = None, **sampling) -> str:
        """The completion's text. `sampling`: max_tokens, temperature, top_p, seed, stop."""
        return self.completion(prompt, adapter, **sampling)["choices"][0]["text"]

    def completion(self, prompt: str | list[int], adapter: str | None = None, **sampling) -> dict:
        """The whole OpenAI-shaped response (with finish_reason and usage)."""
        return self._json("POST", "/v1/completions", {"prompt": prompt, **_model(adapter), **sampling})

    def stream(self, prompt: str | list[int], adapter: str | None = None, **sampling) -> Iterator[str]:
        """The completion's text piece by piece, as the server generates it."""
        body = {"prompt": prompt, **_model(adapter), **sampling, "stream": True}
        for chunk in self._events("/v1/completions", body):
            for choice in chunk.get("choices", []):
                if choice.get("text"):
                    yield choice["text"]

    def chat(self, messages: list[dict], adapter: str | None = None, **sampling) -> str:
        """The assistant's reply to `messages` ([{"role": "user", "content": "..."}, ...])."""
        body = {"messages": messages, **_model(adapter), **sampling}
        return self._json("POST", "/v1/chat/completions", body)["choices"][0]["message"]["content"]

    def stream_chat(self, messages: list[dict], adapter: str | None = None, **sampling) -> Iterator[str]:
        body = {"messages": messages, **_model(adapter), **sampling, "stream": True}
        for chunk in self._events("/v1/chat/completions", body):
            for choice in chunk.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    yield choice["delta"]["content"]

    # -- classification --
    def classify(self, texts: str | list[str], adapter: str) -> list[dict]:
        """One {"label", "probabilities"} per text."""
        data = self._json("POST", "/v1/classify", {"model": adapter, "input": texts})["data"]
        return [{"label": row["label"], "probabilities": row["probabilities"]} for row in data]

    # -- models and adapters --
    def models(self) -> list[dict]:
        """The base model and every adapter, with its kind and parent."""
        return self._json("GET", "/v1/models")["data"]

    def load_adapter(self, name: str, path: str) -> dict:
        """Serve the run at `path` (relative to the server's adapter root) as `name`."""
        return self._json("POST", "/v1/adapters", {"name": name, "path": path})

    def unload_adapter(self, name: str) -> None:
        self._json("DELETE", f"/v1/adapters/{name}")

    def health(self) -> dict:
        return self._json("GET", "/health")

    # -- plumbing --
    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise LmtuneError(f"cannot reach the server at {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    def _events(self, path: str, body: dict) -> Iterator[dict]:
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        err = chunk["error"]
                        raise ServerError(500, err.get("message", "error"), err.get("type"), err.get("code"))
                    yield chunk
        except httpx.HTTPError as exc:
            raise LmtuneError(f"cannot reach the server at {self._http.base_url}: {exc}") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _model(adapter: str | None) -> dict:
    return {"model": adapter} if adapter else {}


def _error(response: httpx.Response) -> ServerError:
    try:
        err = response.json().get("error", {})
        message, type_, code = err.get("message") or response.text, err.get("type"), err.get("code")
    except (ValueError, AttributeError):
        message, type_, code = response.text or response.reason_phrase, None, None
    retry = response.headers.get("retry-after")
    return ServerError(response.status_code, message, type_, code, float(retry) if retry else None)
