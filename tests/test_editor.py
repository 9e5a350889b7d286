"""The shipped schema in a real editor client: yaml-language-server (npm) over the language-server
protocol finds errors inside blocks at their line and completes layer names inside blocks.
Skips, saying why, where yaml-language-server is not installed (README: `npm install --prefix
tools yaml-language-server@1.25.0`; `.ci/run` does that)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT

SERVER = os.environ.get("YAML_LANGUAGE_SERVER") or shutil.which(
    "yaml-language-server", path=str(ROOT / "tools" / "node_modules" / ".bin")) or shutil.which("yaml-language-server")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SERVER, reason="yaml-language-server is not installed "
                                                   "(npm install --prefix tools yaml-language-server@1.25.0)")]
SCHEMA = (ROOT / "netspec" / "spec" / "schema.json").as_uri()


class Client:
    """A minimal language-server client: JSON-RPC with Content-Length headers over stdio."""

    def __init__(self):
        self.proc = subprocess.Popen([SERVER, "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.next_id, self.responses, self.notes = 0, {}, []
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            headers = {}
            while (line := out.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            if not headers:
                return
            message = json.loads(out.read(int(headers["content-length"])))
            if "method" in message and "id" in message:  # the server asks: settings, or registrations
                settings = [{"validate": True, "completion": True, "hover": True, "schemas": {}}]
                self._send({"jsonrpc": "2.0", "id": message["id"],
                            "result": settings * len(message.get("params", {}).get("items", [1]))
                            if message["method"] == "workspace/configuration" else None})
                continue
            with self.lock:
                if "id" in message:
                    self.responses[message["id"]] = message
                else:
                    self.notes.append(message)
                self.lock.notify_all()

    def request(self, method: str, params: dict, timeout: float = 30) -> dict:
        self.next_id += 1
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        with self.lock:
            assert self.lock.wait_for(lambda: self.next_id in self.responses, timeout), f"no answer to {method}"
            return self.responses.pop(self.next_id)

    def notify(self, method: str, params: dict) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def diagnostics(self, uri: str, timeout: float = 30) -> list:
        deadline = time.monotonic() + timeout
        with self.lock:
            while time.monotonic() < deadline:
                found = [n for n in self.notes if n["method"] == "textDocument/publishDiagnostics"
                         and n["params"]["uri"] == uri and n["params"]["diagnostics"]]
                if found:
                    return found[-1]["params"]["diagnostics"]
                self.lock.wait(0.5)
        return []

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def client(tmp_path):
    c = Client()
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {
        "workspace": {"configuration": True},
        "textDocument": {"completion": {"completionItem": {"snippetSupport": False}}}}})
    c.notify("initialized", {})
    c.notify("workspace/didChangeConfiguration", {"settings": {"yaml": {"validate": True, "completion": True}}})
    yield c
    c.close()


SPEC = f"""# yaml-language-server: $schema={SCHEMA}
name: t
model:
  layers:
    - Residual:
        layers:
          - Conv2d: {{out_channels: four, kernel_size: 3}}
          - Repeat:
              times: 2
              layers:
                - Linear: {{out_features: 10, bais: true}}
"""


def open_document(client, path: Path, text: str) -> str:
    path.write_text(text)
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}})
    return uri


def test_the_editor_finds_mistakes_inside_blocks_at_their_lines(client, tmp_path):
    uri = open_document(client, tmp_path / "spec.yaml", SPEC)
    found = client.diagnostics(uri)
    lines = {d["range"]["start"]["line"] + 1: d["message"] for d in found}  # LSP counts lines from 0
    assert 7 in lines and "integer" in lines[7].lower(), found  # out_channels: four, inside a Residual
    assert 11 in lines and "bais" in lines[11], found  # an unknown argument inside a Repeat inside a Residual


def test_the_editor_completes_layer_names_inside_blocks(client, tmp_path):
    text = SPEC.replace("          - Conv2d: {out_channels: four, kernel_size: 3}\n", "          - \n")
    uri = open_document(client, tmp_path / "spec.yaml", text)
    answer = client.request("textDocument/completion", {"textDocument": {"uri": uri},
                                                        "position": {"line": 6, "character": 12}})
    result = answer["result"]
    items = result["items"] if isinstance(result, dict) else result
    labels = {i["label"] for i in items}
    assert {"Conv2d", "Residual", "Concat", "Repeat", "AdaptiveAvgPool2d"} <= labels, sorted(labels)
