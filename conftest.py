"""The fakes and fixtures the tests share: a fake Ark on 127.0.0.1, hosts and terminals for spawned servers, and
the fixtures every test gets (a fake key, no developer settings leaking in, mocked Ark)."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import io
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from dataclasses import replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
import requests
import responses
import urllib3
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from doubao_mcp import (
    ArkClient,
    Config,
    Following,
    Record,
    Stopping,
    Studio,
    Watcher,
    build_server,
    no_price,
    priced,
)

KEY = "ark-test-0f3c9a7e-5b1d-4c2e-9f8a-6d7e8f9a0b1c"
BASE = "https://ark.test/api/v3"
TASKS = f"{BASE}/contents/generations/tasks"
SCRIPT = Path(sys.executable).with_name("doubao-image-video-mcp")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
SCRIPT_ENV = {"PATH": os.environ["PATH"], "DOUBAO_STATE_DIR": "off"}


def compile_output_schemas_once() -> None:
    """The SDK's client compiles each tool's output schema once per session, checking it against the metaschema
    first: 30 ms a schema on a slow machine, and the tests open hundreds of sessions on the same few schemas. Here
    each schema is compiled once per test process. The result is the same: every result is still validated, and a
    schema that fails the check is refused on every call, since a failed compile is never kept."""
    compile_for_session = ClientSession._output_schema_validator
    compiled: dict[str, Any] = {}

    def compiled_once(session: ClientSession, name: str, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in compiled:
            compiled[key] = compile_for_session(session, name, schema)
        return compiled[key]

    ClientSession._output_schema_validator = compiled_once  # type: ignore[method-assign]


compile_output_schemas_once()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def picture(width: int = 1024, height: int = 768, kind: str = "PNG") -> bytes:
    """A real image, with detail enough that its preview is not trivially small."""
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            (x * 255 // width, y * 255 // height, (x ^ y) & 255)
            for y in range(height)
            for x in range(width)
        ]
    )
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


PICTURE = picture()
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 400
SUCCEEDED_TASK = {
    "id": "cgt-20250331175019-6htr8",
    "model": "doubao-seedance-1-0-pro-250528",
    "status": "succeeded",
    "error": None,
    "created_at": 1743414619,
    "updated_at": 1743414673,
    "content": {
        "video_url": "https://cdn.test/v.mp4?sig=1",
        "last_frame_url": "https://cdn.test/last.png",
    },
    "seed": 10,
    "resolution": "720p",
    "ratio": "16:9",
    "duration": 5,
    "framespersecond": 24,
    "usage": {"completion_tokens": 108900, "total_tokens": 108900},
}
TASK_ID = SUCCEEDED_TASK["id"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """asyncio, for a whole module: a module-scoped async fixture (one server for many cases) shares its loop."""
    return "asyncio"


@pytest.fixture(autouse=True)
def ark_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake key, and none of the developer's own Ark settings leaking into a test."""
    for name in (
        "ARK_API_KEY",
        "DOUBAO_API_KEY",
        "ARK_BASE_URL",
        "DOUBAO_IMAGE_MODEL",
        "DOUBAO_VIDEO_MODEL",
        "DOUBAO_IMAGE_ENDPOINT_ID",
        "DOUBAO_VIDEO_ENDPOINT_ID",
        "ARK_TIMEOUT",
        # The asset library's keys and settings: a developer's own would list the asset tools everywhere.
        "VOLCENGINE_ACCESS_KEY",
        "VOLCENGINE_SECRET_KEY",
        "BYTEPLUS_ACCESS_KEY",
        "BYTEPLUS_SECRET_KEY",
        "VOLC_ACCESSKEY",
        "VOLC_SECRETKEY",
        "DOUBAO_ASSET_PROJECT",
        "DOUBAO_ASSET_API_URL",
        "DOUBAO_ASSET_REGION",
        "DOUBAO_ASSET_CREATES_PER_MINUTE",
        "DOUBAO_ASSET_ALLOW_REMOVE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARK_API_KEY", KEY)
    monkeypatch.setenv("ARK_BASE_URL", BASE)
    # A test of previews turns them on
    monkeypatch.setenv("DOUBAO_PREVIEWS", "0")
    # A test of the record gives it a folder
    monkeypatch.setenv("DOUBAO_STATE_DIR", "off")


@pytest.fixture
def ark() -> Any:
    """Mocked Ark: any request that was not registered fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def make_server(
    config: Config | None = None,
    *,
    sleeps: list[float] | None = None,
    client: ArkClient | None = None,
    record: Record | None = None,
    watcher: Watcher | None = None,
    stopping: Stopping | None = None,
    **changes: Any,
) -> Any:
    """The one way a test makes a server, in-process: the configuration (from the test's environment unless given),
    with `changes` to its fields; retry back-off recorded in `sleeps` instead of slept; a record, a watcher or a
    stopping signal where the test gives one."""
    config = replace(config or Config.from_env(), **changes)
    sleep = sleeps.append if sleeps is not None else (lambda seconds: None)
    client = client or ArkClient(
        config.base_url,
        config.image_timeout,
        secrets=[config.api_key or ""],
        sleep=sleep,
        limits=config.limits,
        media_domains=config.media_domains,
    )
    return build_server(config, client, stopping, record, watcher)


def make_studio(
    config: Config | None = None, *, record: Record | None = None, **changes: Any
) -> Studio:
    """The lifecycle without any server or client around it, for tests where no MCP behaviour is at stake."""
    config = replace(config or Config.from_env(), **changes)
    client = ArkClient(
        config.base_url,
        config.image_timeout,
        secrets=[config.api_key or ""],
        sleep=lambda s: None,
        limits=config.limits,
        media_domains=config.media_domains,
    )
    return Studio(config, client, record=record)


def plan_of(studio: Studio, choice: Any) -> Any:
    """A plan for a call made straight to the studio: its models, none of them priced."""
    return priced(
        studio.spend, choice, {}, lambda model: no_price(studio.spend.book, model)
    )


async def no_progress(*_: Any) -> None:
    """Where a lifecycle test's progress goes."""


def following(
    until: float = 0.0,
    save_to: Any = None,
    api_key: str = KEY,
    report: Any = no_progress,
) -> Following:
    """How a lifecycle test follows its task: until `until` (on time.monotonic; 0: no wait), saving into `save_to`."""
    return Following(until=until, save_to=save_to, api_key=api_key, report=report)


async def call(
    tool: str, arguments: dict[str, Any], config: Config | None = None, **kwargs: Any
) -> Any:
    async with Client(make_server(config)) as client:
        return await client.call_tool(tool, arguments, **kwargs)


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


# --- Configuration ----------------------------------------------------------------------------------------------------


URL = "https://media.test/"


# (id, seconds, resolutions, most reference images/videos/audios, most references in all)
def items(kind: str, role: str, urls: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": f"{kind}_url", f"{kind}_url": {"url": url}, "role": role}
        for url in urls
    ]


class FakeTime:
    """A clock that moves only when the code under test sleeps: schedules are checked without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def write(path: Path, data: bytes = b"hello", size: int | None = None) -> str:
    path.write_bytes(data)
    if size:
        with path.open("r+b") as file:
            # Sparse: a large file without writing it
            file.truncate(size)
    return str(path)


VIDEO_URL = SUCCEEDED_TASK["content"]["video_url"]
LAST_FRAME_URL = SUCCEEDED_TASK["content"]["last_frame_url"]


def finished_task_and_files(ark: Any, video: dict[str, Any] | None = None) -> None:
    ark.get(f"{TASKS}/{TASK_ID}", json=SUCCEEDED_TASK)
    ark.get(VIDEO_URL, **(video or {"body": VIDEO_BYTES, "content_type": "video/mp4"}))
    ark.get(LAST_FRAME_URL, body=PNG, content_type="image/png")


def refused() -> requests.ConnectionError:
    """What requests raises when nothing listens: the request never reached Ark."""
    reason = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] refused"
    )
    return requests.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, TASKS, reason)
    )


def answer(
    status: int,
    body: bytes | str = b"",
    content_type: str = "application/json",
    length: int | None = None,
    delay: float = 0.0,
    **headers: str,
) -> Any:
    """A raw response for FakeArk.faults: any status, headers and body, after `delay` seconds. A `length`
    larger than the body declares more than is sent, then drops the connection mid-body."""
    data = body.encode() if isinstance(body, str) else body

    def respond(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        handler.send_response(status)
        for name, value in {"Content-Type": content_type, **headers}.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header(
            "Content-Length", str(len(data) if length is None else length)
        )
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = length is not None

    return respond


class Hold:
    """A fault that holds each matching request until `release()`, then answers it with `then`; `arrived(n)`
    waits (on a worker thread: call it through anyio.to_thread) until n requests have come in."""

    def __init__(self, then: Any = None):
        self.then = then or answer(200, json.dumps({"data": []}))
        self.count = 0
        self.condition = threading.Condition()
        self.released = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        with self.condition:
            self.count += 1
            self.condition.notify_all()
        self.released.wait(60)
        self.then(handler)

    def arrived(self, count: int) -> None:
        with self.condition:
            assert self.condition.wait_for(lambda: self.count >= count, timeout=30), (
                f"{self.count} of {count} came"
            )

    def release(self) -> None:
        self.released.set()


class LoopbackServer(ThreadingHTTPServer):
    """Python's default listen backlog is 5: when 31 connections arrive at once, Linux resets some of them, which
    no real Ark does (its backlog is in the thousands) and which made a test fail one run in five."""

    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> LoopbackServer:
        """Serve on a thread of its own (polling every 10 ms, so that it stops at once)."""
        threading.Thread(target=self.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# Ark's output sizes (ARK_API.md, Billing), transcribed here on their own: the fake bills by them, and the server's
# estimates are checked against what it bills.
ARK_SIZES = {
    "480p": {
        "16:9": (864, 480),
        "4:3": (736, 544),
        "1:1": (640, 640),
        "3:4": (544, 736),
        "9:16": (480, 864),
        "21:9": (960, 416),
    },
    "720p": {
        "16:9": (1280, 720),
        "4:3": (1112, 834),
        "1:1": (960, 960),
        "3:4": (834, 1112),
        "9:16": (720, 1280),
        "21:9": (1470, 630),
    },
    "1080p": {
        "16:9": (1920, 1080),
        "4:3": (1664, 1248),
        "1:1": (1440, 1440),
        "3:4": (1248, 1664),
        "9:16": (1080, 1920),
        "21:9": (2206, 946),
    },
}
# The length Ark picks for duration -1 (the fake's choice).
AUTO_SECONDS = 8


def made_video(asked: dict[str, Any], draft: bool) -> dict[str, Any]:
    """What Ark reports of a finished video: what it made (a draft at 480p, an adaptive ratio as 16:9) and the tokens
    it billed, width x height x (24 x seconds + 1) / 1024."""
    resolution = "480p" if draft else asked.get("resolution", "720p")
    ratio = asked.get("ratio", "16:9")
    ratio = "16:9" if ratio == "adaptive" else ratio
    width, height = ARK_SIZES[resolution][ratio] if resolution != "4k" else (3840, 2160)
    seconds = asked.get("duration", 5)
    seconds = AUTO_SECONDS if seconds == -1 else seconds
    frames = asked.get("frames") or 24 * seconds + 1
    tokens = width * height * frames // 1024
    made = {
        "resolution": resolution,
        "ratio": ratio,
        "service_tier": asked.get("service_tier", "default"),
    }
    made.update({"frames": frames} if asked.get("frames") else {"duration": seconds})
    return {**made, "usage": {"completion_tokens": tokens, "total_tokens": tokens}}


class FakeArk:
    """A small Ark look-alike on 127.0.0.1: image generation, the video-task lifecycle, and the
    result files under /files/, over HTTP/1.1 keep-alive like the real thing.

    Lists page as Ark's do: 10 tasks unless page_size asks for more, at most `page_cap`, newest first.
    A task is queued when created and at its first GET, running after that, and succeeded from
    its `polls_to_finish`-th GET on, or, with `seconds_to_finish`, once that long has passed
    since it was created. Every request is recorded with the key it carried and the connection
    it came on. `faults[(method, path prefix)] = answer(...)` replaces the answer to matching requests;
    `unavailable[model id] = code` answers creations for that model as Ark does for a retired or unactivated one.
    """

    def __init__(
        self, polls_to_finish: int = 3, seconds_to_finish: float | None = None
    ):
        self.polls_to_finish = polls_to_finish
        self.seconds_to_finish = seconds_to_finish
        self.video_size: int | None = (
            # Serve a video of this many bytes, streamed, instead of VIDEO_BYTES
            None
        )
        # The most tasks a list answer holds, whatever page_size asks (Ark's: 500)
        self.page_cap = 500
        self.faults: dict[tuple[str, str], Any] = {}
        self.unavailable: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        # The bytes of each reference video fetched from its link, in order.
        self.fetched: list[bytes] = []
        self.lock = threading.Lock()
        self.arrival = threading.Condition()
        self.server = LoopbackServer(self._handler())
        # A client that hung up is not news here
        self.server.handle_error = lambda request, address: None
        self.root = self.server.url
        self.url = f"{self.root}/api/v3"

    def __enter__(self) -> FakeArk:
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()

    def requested(self, method: str, prefix: str, count: int = 1) -> None:
        """Wait (on a worker thread: through anyio.to_thread) until `count` such requests have come in."""

        def seen() -> int:
            return sum(
                r["method"] == method and r["path"].startswith(prefix)
                for r in self.requests
            )

        with self.arrival:
            assert self.arrival.wait_for(lambda: seen() >= count, timeout=30), (
                f"{seen()} {method} {prefix}"
            )

    def add_task(self, task_id: str, **fields: Any) -> None:
        self.tasks[task_id] = {
            "id": task_id,
            "model": "doubao-seedance-1-5-pro-251215",
            "status": "queued",
            "polls": 0,
            "born": time.monotonic(),
            "created_at": 1743414619,
            "updated_at": 1743414619,
            **fields,
        }

    def handle(
        self, method: str, path: str, query: list[tuple[str, str]], body: Any
    ) -> tuple[int, Any]:
        with self.lock:
            if method == "POST" and body.get("model") in self.unavailable:
                return 404, {
                    "error": {
                        "code": self.unavailable[body["model"]],
                        "message": "The model or endpoint "
                        f"{body['model']} does not exist or you do not have access to it.",
                    }
                }
            if method == "POST" and path == "/api/v3/images/generations":
                count = (body.get("sequential_image_generation_options") or {}).get(
                    "max_images", 1
                )
                return 200, {
                    "model": body["model"],
                    "created": 1757321139,
                    "data": [
                        {"url": f"{self.root}/files/image-{i}.png", "size": "1024x768"}
                        for i in range(count)
                    ],
                    "usage": {"generated_images": count},
                }
            if method == "POST" and path == "/api/v3/contents/generations/tasks":
                self._fetch_links(body.get("content"))
                problem = self._content_problem(body.get("content"))
                if problem:
                    return 400, {
                        "error": {
                            "code": "InvalidParameter",
                            "message": problem,
                            "param": "content",
                        }
                    }
                task_id = f"cgt-fake-{len(self.tasks) + 1}"
                draft = next(
                    (
                        item["draft_task"]["id"]
                        for item in body["content"]
                        if item["type"] == "draft_task"
                    ),
                    None,
                )
                self.add_task(
                    task_id,
                    model=body["model"],
                    draft=bool(body.get("draft")),
                    last_frame=bool(body.get("return_last_frame")),
                    asked={
                        key: body[key]
                        for key in (
                            "resolution",
                            "ratio",
                            "duration",
                            "frames",
                            "service_tier",
                        )
                        if key in body
                    },
                    **({"draft_task_id": draft} if draft else {}),
                )
                return 200, {"id": task_id}
            if method == "GET" and path == "/api/v3/contents/generations/tasks":
                wanted = {v for k, v in query if k == "filter.task_ids"}
                asked = dict(query)
                # Ark's default page is 10
                size = min(int(asked.get("page_size", 10)), self.page_cap)
                start = (int(asked.get("page_num", 1)) - 1) * size
                matching = [
                    t
                    for t in reversed(self.tasks.values())
                    if not wanted or t["id"] in wanted
                ]
                # Asked about by id: a poll, as a GET of it is
                for task in matching[start : start + size]:
                    if wanted:
                        self._advance(task)
                return 200, {
                    "total": len(matching),
                    "items": [self._view(t) for t in matching[start : start + size]],
                }
            task = self.tasks.get(path.rsplit("/", 1)[-1])
            if task is None:
                return 404, {
                    "error": {"code": "ResourceNotFound", "message": "task not found"}
                }
            if method == "GET":
                self._advance(task)
                return 200, self._view(task)
            if method == "DELETE":
                if task["status"] == "queued":
                    task["status"] = "cancelled"
                elif task["status"] in ("succeeded", "failed", "expired"):
                    del self.tasks[task["id"]]
                else:
                    return 400, {
                        "error": {
                            "code": "InvalidParameter",
                            "message": f"cannot delete a {task['status']} task",
                        }
                    }
                return 200, {}
        # No such route: a plain web server's page, not Ark's JSON
        return 404, None

    def _fetch_links(self, content: Any) -> None:
        """As Ark does: fetch each reference video from its link (those on loopback: the tests' own storage)."""
        for item in content if isinstance(content, list) else []:
            url = (
                (item.get("video_url") or {}).get("url", "")
                if isinstance(item, dict)
                else ""
            )
            if url.startswith("http://127.0.0.1"):
                with urllib.request.urlopen(url, timeout=10) as got:
                    self.fetched.append(got.read())

    def _advance(self, task: dict[str, Any]) -> None:
        """A poll of the task: queued at the first, running after, succeeded when its time or poll count is up."""
        task["polls"] += 1
        if task["status"] in ("queued", "running"):
            done = (
                time.monotonic() - task["born"] >= self.seconds_to_finish
                if self.seconds_to_finish
                else task["polls"] >= self.polls_to_finish
            )
            task["status"] = (
                "succeeded" if done else "running" if task["polls"] > 1 else "queued"
            )

    ROLES: ClassVar[dict[str, set[str | None]]] = {
        "image_url": {None, "first_frame", "last_frame", "reference_image"},
        "video_url": {"reference_video"},
        "audio_url": {"reference_audio"},
    }

    def _content_problem(self, content: Any) -> str | None:
        """What Ark's own content check would refuse: unknown item types or roles, a draft that is not one."""
        for item in content if isinstance(content, list) else [None]:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text" and isinstance(item.get("text"), str):
                continue
            if (
                kind in self.ROLES
                and isinstance(item.get(kind), dict)
                and item.get("role") in self.ROLES[kind]
            ):
                continue
            if kind == "draft_task":
                draft = self.tasks.get(item.get("draft_task", {}).get("id"))
                if draft and draft.get("draft") and draft["status"] == "succeeded":
                    continue
                return "draft_task must name a succeeded draft task"
            return f"content item {item!r} is not valid"
        return None

    def _view(self, task: dict[str, Any]) -> dict[str, Any]:
        view = {
            k: v
            for k, v in task.items()
            if k not in ("polls", "born", "last_frame", "asked")
        }
        if task["status"] == "succeeded":
            made = made_video(task.get("asked", {}), bool(task.get("draft")))
            view.update(
                content={
                    "video_url": f"{self.root}/files/{task['id']}.mp4?sig=x",
                    **(
                        {"last_frame_url": f"{self.root}/files/{task['id']}-last.png"}
                        if task.get("last_frame")
                        else {}
                    ),
                },
                framespersecond=24,
                **made,
            )
        return view

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Else headers and body in two writes wait on a delayed ACK (40 ms)
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                split = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                query = parse_qsl(split.query)
                with fake.arrival:
                    fake.requests.append(
                        {
                            "method": self.command,
                            "path": split.path,
                            "query": query,
                            "body": body,
                            "authorization": self.headers.get("Authorization"),
                            "connection": self.client_address,
                        }
                    )
                    fake.arrival.notify_all()
                fault = next(
                    (
                        f
                        for (method, prefix), f in list(fake.faults.items())
                        if method == self.command and split.path.startswith(prefix)
                    ),
                    None,
                )
                if fault:
                    return fault(self)
                if split.path.startswith("/files/"):
                    # A generated image or a last frame
                    if split.path.endswith(".png"):
                        return answer(200, PICTURE, "image/png")(self)
                    return self._send_video()
                status, reply = fake.handle(self.command, split.path, query, body)
                if reply is None:
                    return answer(
                        status, "<html><h1>404 Not Found</h1></html>", "text/html"
                    )(self)
                answer(status, json.dumps(reply))(self)

            def _send_video(self) -> None:
                if fake.video_size is None:
                    return answer(200, VIDEO_BYTES, "video/mp4")(self)
                answer(200, VIDEO_BYTES[:12], "video/mp4", length=fake.video_size)(self)
                chunk = bytes(2**20)
                for start in range(12, fake.video_size, len(chunk)):
                    self.wfile.write(chunk[: fake.video_size - start])
                self.close_connection = False

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def fake_ark() -> Any:
    with FakeArk() as fake:
        yield fake


def ark_error(status: int, code: str, message: str, **headers: str) -> Any:
    return answer(
        status, json.dumps({"error": {"code": code, "message": message}}), **headers
    )


TASKS_ROUTE = "/api/v3/contents/generations/tasks"


class HttpServer:
    """The console script serving streamable HTTP on a free port, stopped with SIGTERM; its output kept."""

    def __init__(self, fake: FakeArk, *args: str, **env: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process = subprocess.Popen(
            [
                str(SCRIPT),
                "--transport",
                "streamable-http",
                "--port",
                str(self.port),
                *args,
            ],
            env={
                **SCRIPT_ENV,
                "HOME": os.environ.get("HOME", "/"),
                "ARK_BASE_URL": fake.url,
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stdout = self.stderr = ""

    def __enter__(self) -> HttpServer:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        pytest.fail(f"the HTTP server did not start: {self.stderr}")

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        out, err = self.process.communicate(timeout=15)
        self.stdout, self.stderr = out.decode(), err.decode()

    def client(
        self, mode: Any = "auto", elicitation_callback: Any = None, **headers: str
    ) -> Client:
        """A client of this server: `mode` "legacy" speaks 2025-11-25 (stateless here: no channel for a question)."""
        return Client(
            streamable_http_client(
                self.url, http_client=httpx2.AsyncClient(headers=headers)
            ),
            mode=mode,
            elicitation_callback=elicitation_callback,
        )


def jpegs(result: Any) -> list[Any]:
    """The image content items of a result, opened with Pillow."""
    from PIL import Image

    items = [item for item in result.content if item.type == "image"]
    assert all(item.mime_type == "image/jpeg" for item in items)
    return [Image.open(io.BytesIO(base64.b64decode(item.data))) for item in items]


class Stderr:
    """A started server's stderr, read line by line as it comes: `seen(text)` waits (on a worker thread: call it
    through anyio.to_thread) until a line holds `text`."""

    def __init__(self) -> None:
        read, write = os.pipe()
        # The errlog given to stdio_client; the server's copy stays open
        self.file = os.fdopen(write, "w")
        self.lines: list[str] = []
        self.condition = threading.Condition()
        threading.Thread(
            target=self._read, args=(os.fdopen(read),), daemon=True
        ).start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            with self.condition:
                self.lines.append(line)
                self.condition.notify_all()

    def seen(self, text: str, count: int = 1) -> None:
        def found() -> int:
            return sum(text in line for line in self.lines)

        with self.condition:
            assert self.condition.wait_for(lambda: found() >= count, timeout=30), (
                "".join(self.lines)
            )


def rows(state: Path) -> dict[str, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(state / "tasks.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        return {row["task_id"]: dict(row) for row in db.execute("SELECT * FROM tasks")}


# Model ids the tests of the defaults use.
LITE, S45, PRO, FLASH, S55, S40 = (
    "doubao-seedream-5-0-260128",
    "doubao-seedream-4-5-251128",
    "doubao-seedream-5-0-pro-260628",
    "doubao-seedream-5-0-flash-260915",
    "doubao-seedream-5-5-261028",
    "doubao-seedream-4-0-250828",
)
DANCE_20, DANCE_25, DANCE_15 = (
    "doubao-seedance-2-0-260128",
    "doubao-seedance-2-5-260628",
    "doubao-seedance-1-5-pro-251215",
)
NOT_FOUND = "InvalidEndpointOrModel.NotFound"


def posted_models(fake: FakeArk) -> list[str]:
    return [r["body"]["model"] for r in fake.requests if r["method"] == "POST"]


class LockHolder:
    """Another process holding the record's write lock (BEGIN EXCLUSIVE) until `release()`."""

    def __init__(self, path: Path):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent("""
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1], isolation_level=None)
            db.execute("BEGIN EXCLUSIVE"); print("locked", flush=True); sys.stdin.read(); db.execute("COMMIT")
        """),
                str(path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout and self.process.stdout.readline() == "locked\n"

    def release(self) -> None:
        self.process.communicate("", timeout=10)


class SecretService:
    """Another service on this machine's loopback (a metadata endpoint, an admin page): it must never be fetched."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                answer(200, b"SECRET-TOKEN-42", "text/plain")(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = LoopbackServer(Handler).start()
        self.url = self.server.url

    def __enter__(self) -> SecretService:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()


@functools.cache
def bomb(side: int = 11580) -> bytes:
    """A 1-bit PNG of side x side pixels, all black: a few hundred KB that decode to side² bytes in Pillow."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big")
            + kind
            + data
            + zlib.crc32(kind + data).to_bytes(4, "big")
        )

    # Filter byte 0, then the row's bits
    row = bytes(1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the cores. Many tests wait on a spawned server or a socket, so a third worker
    on two cores keeps both busy."""
    return (os.cpu_count() or 1) + 1


# --- Object storage: a real S3 on loopback (moto's server), and videos with a real movie header ----------------------

UPLOAD_BUCKET = "doubao-test"
STORAGE_SECRET = "storage-secret-Zq3u8VwX1yB2cD4eF5gH6iJ7kL8mN9oP"


@pytest.fixture(scope="session")
def moto_server() -> Any:
    import botocore.loaders
    import botocore.session

    # Each boto3 session reads botocore's service and endpoint models (megabytes of JSON) anew: a person's server
    # makes one S3 client, the tests make dozens. One loader for the test process, its cache shared.
    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)  # type: ignore[assignment]
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def storage(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty bucket in moto, and the standard S3 settings that point boto3 at it (as a person sets them)."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL_S3": moto_server,
        "AWS_ACCESS_KEY_ID": "storage-key-AKIA0123456789",
        "AWS_SECRET_ACCESS_KEY": STORAGE_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "DOUBAO_UPLOADS": f"s3://{UPLOAD_BUCKET}/clips",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=UPLOAD_BUCKET)
    for found in s3.list_objects_v2(Bucket=UPLOAD_BUCKET).get("Contents", []):
        s3.delete_object(Bucket=UPLOAD_BUCKET, Key=found["Key"])
    s3.env = env
    return s3


def mp4(seconds: float, size: int = 4096, brand: bytes = b"isom") -> bytes:
    """A file that is an MP4 to its header: ftyp, a moov whose mvhd says `seconds` (timescale 1000), then mdat."""
    mvhd_body = (
        b"\x00" * 4
        + b"\x00" * 8
        + (1000).to_bytes(4, "big")
        + int(seconds * 1000).to_bytes(4, "big")
    )
    mvhd = (
        (8 + len(mvhd_body) + 80).to_bytes(4, "big")
        + b"mvhd"
        + mvhd_body
        + b"\x00" * 80
    )
    moov = (8 + len(mvhd)).to_bytes(4, "big") + b"moov" + mvhd
    ftyp = (16).to_bytes(4, "big") + b"ftyp" + brand + b"\x00\x00\x00\x00"
    head = ftyp + moov
    padding = max(size - len(head) - 8, 0)
    return head + (8 + padding).to_bytes(4, "big") + b"mdat" + bytes(padding)


# --- The asset library's signed OpenAPI ---------------------------------------------------------------------------

ASSET_ACCESS = "AKLTtestaccess0123456789abcdefABCDEF"
ASSET_SECRET = "asset-secret-TmV2ZXJTaG93TWVJbkFueVJlc3VsdA0123456789"
ASSET_PHOTO = "https://photos.test/mia.jpg"


def asset_error(
    code: str, message: str = "refused", status: int = 200
) -> tuple[int, dict[str, Any]]:
    """An answer the asset API gives for a refusal: inside ResponseMetadata, often with HTTP 200."""
    return status, {
        "ResponseMetadata": {
            "RequestId": "req-1",
            "Error": {"Code": code, "Message": message},
        }
    }


class FakeAssets:
    """A look-alike of Ark's signed OpenAPI for the asset library, on 127.0.0.1. Every request's V4 signature is
    checked with the vendor's own signer's parts (volcenginesdkcore): a bad one gets 401 SignatureDoesNotMatch.

    Groups and assets live in memory; an asset is Processing for its first `processing_polls` GetAssets, then Active
    (Failed when its URL says "fail"). A liveness check passes once `passed` names its token, and fails once
    `failed` does. List filters match names loosely, as the real one does, and page by MaxResults. `faults[action]`
    is a list of answers given, one each, before the real one: (status, body) instead of doing it, ("done", status,
    body) after doing it, "drop" (it is done, then the connection is closed unanswered), or a raw `answer(...)`."""

    def __init__(self, region: str = "ap-southeast-1", processing_polls: int = 2):
        self.region, self.processing_polls = region, processing_polls
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.rejected = 0
        self.groups: dict[str, dict[str, Any]] = {}
        self.assets: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, str | None] = {}
        self.passed: set[str] = set()
        # Tokens whose check failed on the phone (the link dies after one failure).
        self.failed: set[str] = set()
        self.faults: dict[str, list[Any]] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # As FakeArk's: headers and body written apart would wait out the client's delayed ACK (40 ms).
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                query = dict(parse_qsl(urlsplit(self.path).query))
                if not fake.signed(self, body, query):
                    fake.rejected += 1
                    status, reply = asset_error(
                        "SignatureDoesNotMatch", "the signature does not match", 401
                    )
                else:
                    action = query.get("Action", "")
                    asked = json.loads(body or b"{}")
                    with fake.lock:
                        fake.calls.append((action, asked))
                        faults = fake.faults.get(action) or []
                        fault = faults.pop(0) if faults else None
                        # A refusal does nothing; any other answer comes after the work is done.
                        if isinstance(fault, tuple) and fault[0] != "done":
                            status, reply = fault
                        else:
                            status, reply = fake.act(action, asked)
                            if isinstance(fault, tuple):
                                status, reply = fault[1:]
                    if callable(fault):
                        fault(self)
                        return
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                answer(status, json.dumps(reply))(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = LoopbackServer(Handler).start()
        self.url = self.server.url

    def signed(
        self, handler: BaseHTTPRequestHandler, body: bytes, query: dict[str, str]
    ) -> bool:
        """The request's signature, recomputed from what arrived with the vendor's canonical query and key chain."""
        from volcenginesdkcore.signv4 import SignerV4

        headers = {k.lower(): v for k, v in handler.headers.items()}
        found = re.fullmatch(
            r"HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/ark/request, SignedHeaders=([^,]+), "
            r"Signature=([0-9a-f]{64})",
            headers.get("authorization", ""),
        )
        stamp = headers.get("x-date", "")
        if (
            not found
            or found[1] != ASSET_ACCESS
            or found[3] != self.region
            or stamp[:8] != found[2]
        ):
            return False
        sent_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=timezone.utc
        )
        if abs((datetime.now(timezone.utc) - sent_at).total_seconds()) > 900:
            return False
        names = found[4].split(";")
        if not {"host", "x-date", "x-content-sha256"} <= set(names):
            return False
        if headers.get("x-content-sha256") != hashlib.sha256(body).hexdigest():
            return False
        canonical = "\n".join(
            [
                handler.command,
                urlsplit(handler.path).path,
                SignerV4.canonical_query(query),
                "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in names),
                found[4],
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{found[2]}/{self.region}/ark/request"
        to_sign = "\n".join(
            [
                "HMAC-SHA256",
                stamp,
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        key = SignerV4.get_signing_secret_key_v4(
            ASSET_SECRET, found[2], self.region, "ark"
        )
        return hmac.compare_digest(
            hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), found[5]
        )

    def act(self, action: str, asked: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        def ok(result: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return 200, {
                "ResponseMetadata": {"RequestId": "req-1", "Action": action},
                "Result": result,
            }

        if asked.get("ProjectName") != "default":
            return asset_error("MissingParameter.ProjectName", status=400)
        if action in ("ListAssetGroups", "ListAssets"):
            filters = asked.get("Filter")
            # Filter.GroupType is required (the tests hold ListAssets to it too: its shape is inferred).
            if not isinstance(filters, dict) or not filters.get("GroupType"):
                return asset_error("MissingParameter.Filter", "Filter is required", 400)
            pool = self.groups if action == "ListAssetGroups" else self.assets
            items = [
                item
                for item in pool.values()
                if filters.get("Name", "") in item["Name"]
                and item["GroupType"] == filters["GroupType"]
                and (
                    not filters.get("GroupIds")
                    or item.get("GroupId") in filters["GroupIds"]
                )
            ]
            start = int(asked.get("NextToken") or 0)
            size = int(asked.get("MaxResults", 10))
            page = [dict(item) for item in items[start : start + size]]
            more = start + size < len(items)
            return ok(
                {"Items": page, **({"NextToken": str(start + size)} if more else {})}
            )
        if action == "CreateAssetGroup":
            if asked.get("GroupType") != "AIGC":
                return asset_error("InvalidParameter.GroupType", status=400)
            group = f"group-{len(self.groups) + 1}"
            self.groups[group] = {
                "Id": group,
                "Name": asked["Name"],
                "GroupType": "AIGC",
            }
            return ok({"Id": group})
        if action == "CreateAsset":
            group = self.groups.get(asked.get("GroupId", ""))
            # https only, as the real one; and the tests' loopback storage (moto speaks http).
            fetchable = asked.get("URL", "").startswith(
                ("https://", "http://127.0.0.1:")
            )
            if group is None or not fetchable or not asked.get("Name"):
                return asset_error(
                    "InvalidParameter",
                    "GroupId, an https URL and a Name are required",
                    400,
                )
            if asked.get("AssetType") not in ("Image", "Video", "Audio"):
                return asset_error("InvalidParameter.AssetType", status=400)
            asset = f"asset-2026120{len(self.assets) + 1}-x"
            self.assets[asset] = {
                "Id": asset,
                "GroupId": group["Id"],
                "GroupType": group["GroupType"],
                "Name": asked["Name"],
                "AssetType": asked["AssetType"],
                "URL": asked["URL"],
                "Status": "Processing",
                "polls": 0,
            }
            return ok({"Id": asset})
        if action == "GetAsset":
            asset = self.assets.get(asked.get("Id", ""))
            if asset is None:
                return asset_error("NotFound.Asset", status=404)
            asset["polls"] += 1
            if asset["polls"] > self.processing_polls:
                asset["Status"] = "Failed" if "fail" in asset["URL"] else "Active"
            return ok({k: v for k, v in asset.items() if k != "polls"})
        if action == "DeleteAsset":
            if self.assets.pop(asked.get("Id", ""), None) is None:
                return asset_error("NotFound.Asset", status=404)
            return ok({})
        if action == "DeleteAssetGroup":
            if self.groups.pop(asked.get("Id", ""), None) is None:
                return asset_error("NotFound.AssetGroup", status=404)
            return ok({})
        if action == "CreateVisualValidateSession":
            token = f"tok-{len(self.sessions) + 1}"
            self.sessions[token] = None
            return ok(
                {
                    "BytedToken": token,
                    "H5Link": f"https://h5.test/liveness?token={token}",
                }
            )
        if action == "GetVisualValidateResult":
            token = asked.get("BytedToken", "")
            if token not in self.sessions:
                return asset_error("InvalidParameter.BytedToken", status=400)
            if token in self.passed and self.sessions[token] is None:
                group = f"face-{len(self.groups) + 1}"
                self.groups[group] = {
                    "Id": group,
                    "Name": f"liveness-{token}",
                    "GroupType": "LivenessFace",
                }
                self.sessions[token] = group
            # Not passed yet, or failed: undocumented shapes, as the real one may give.
            if self.sessions[token]:
                return ok({"GroupId": self.sessions[token]})
            return ok({"Status": "Failed" if token in self.failed else "Pending"})
        return asset_error("InvalidAction", f"no action {action}", 400)

    def sent(self, action: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == action]

    def env(self) -> dict[str, str]:
        """The settings a person gives to use this library."""
        return {
            "BYTEPLUS_ACCESS_KEY": ASSET_ACCESS,
            "BYTEPLUS_SECRET_KEY": ASSET_SECRET,
            "DOUBAO_ASSET_API_URL": self.url,
            "DOUBAO_ASSET_REGION": self.region,
        }

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def assets(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake asset library, and the settings that point the server at it."""
    fake = FakeAssets()
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield fake
    fake.close()
