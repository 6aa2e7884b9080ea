"""doubao-mcp: an MCP server for ByteDance Doubao Seedream images and Seedance videos.

It talks to the Volcengine Ark v3 API (or BytePlus ModelArk) and offers five tools:
generate_image, generate_video, query_video_task, list_video_tasks and cancel_video_task.

Environment:
    ARK_API_KEY          Ark API key (DOUBAO_API_KEY is accepted too). Without one the server
                         still starts and lists its tools; tool calls say what to set.
    ARK_BASE_URL         API root, default https://ark.cn-beijing.volces.com/api/v3
                         (BytePlus: https://ark.ap-southeast.bytepluses.com/api/v3).
    DOUBAO_IMAGE_MODEL   default image model or endpoint id (fallback DOUBAO_IMAGE_ENDPOINT_ID).
    DOUBAO_VIDEO_MODEL   default video model or endpoint id (fallback DOUBAO_VIDEO_ENDPOINT_ID).
    ARK_TIMEOUT          seconds to wait for an image generation answer, default 300.

Run it over stdio with `doubao-image-video-mcp` (alias `doubao-mcp`, or `python -m doubao_mcp`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import anyio.to_thread
import requests
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import ToolAnnotations
from pydantic import AfterValidator, Field
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from typing_extensions import NotRequired, TypedDict

__version__ = "0.1.0"

log = logging.getLogger("doubao_mcp")

# --- Constants and configuration -------------------------------------------------------------

DEFAULT_BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"
DEFAULT_IMAGE_MODEL = "doubao-seedream-4-5-251128"
DEFAULT_VIDEO_MODEL = "doubao-seedance-1-5-pro-251215"
DEFAULT_IMAGE_TIMEOUT = 300.0  # a set of 15 4K images can take minutes; Ark's SDKs wait 600 s
CONNECT_TIMEOUT = 10.0
TASK_TIMEOUT = 30.0  # task create/get/list/delete answer in well under a second when Ark is healthy
WORKER_THREADS = 40  # anyio's default thread limit: the connection pool is sized to match it
PROMPT_MAX_CHARS = 5000  # far above what Ark uses (~500 for video); stops pasted files going upstream

API_KEY_ENV = ("ARK_API_KEY", "DOUBAO_API_KEY")
IMAGE_MODEL_ENV = ("DOUBAO_IMAGE_MODEL", "DOUBAO_IMAGE_ENDPOINT_ID")
VIDEO_MODEL_ENV = ("DOUBAO_VIDEO_MODEL", "DOUBAO_VIDEO_ENDPOINT_ID")

TASKS_PATH = "/contents/generations/tasks"
IMAGES_PATH = "/images/generations"
URL_LIFETIME_NOTE = "Result URLs expire 24 hours after generation: download what you want to keep."

TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})
Resolution = Literal["480p", "720p", "1080p"]
Ratio = Literal["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]
ServiceTier = Literal["default", "flex"]

# What a user should do about an Ark error: the first table key found in the error code wins,
# else the HTTP status decides.
HINTS_BY_CODE = {
    "ModelNotOpen": "Activate the model in the Ark console or set {model_env}.",
    "InvalidEndpointOrModel": "Check the model id, activate it in the Ark console, or set {model_env} "
    "to a model or endpoint id (ep-...) your account has.",
    "AuthenticationError": "Check ARK_API_KEY: it must be an API key from the Ark console "
    "(API Key management) for this region's ARK_BASE_URL.",
    "InvalidAccountStatus": "Your Ark account is not in good standing: check it in the Ark console.",
    "Overdue": "Your Ark account is overdue: top it up in the Volcengine console.",
    "ServiceNotOpen": "Enable the Ark service for this account in the Ark console.",
    "QuotaExceeded": "Ark's quota is used up or too many tasks are queued (120 per account): wait for "
    "tasks to finish or cancel queued ones with cancel_video_task.",
    "SensitiveContentDetected": "Ark's moderation rejected the prompt, an input image or the result: "
    "rephrase the prompt or use another image.",
    "InvalidImageURL": "Ark could not fetch or read an input image: use a public https URL or a data URL.",
}
HINTS_BY_STATUS = {
    400: "Fix the argument Ark names and call again.",
    401: HINTS_BY_CODE["AuthenticationError"],
    403: "Ark refused access: enable the service or the model in the Ark console, or top up the account.",
    404: "Activate the model in the Ark console or set {model_env}.",
    429: "Ark is rate limiting this account: wait a minute before retrying.",
    500: "Ark failed on its side: retry in a minute.",
}
TASK_NOT_FOUND_HINT = "No task with this id: use the task_id generate_video returned (Ark keeps tasks 7 days)."
NEXT_STEP = {
    "queued": "Not started yet. Videos take 30 s to several minutes: call query_video_task with "
    "task_id {task_id!r} in about 30 s.",
    "running": "Generating. Call query_video_task with task_id {task_id!r} in about 20 s.",
    "succeeded": URL_LIFETIME_NOTE,
    "failed": "Generation failed; read error_message, adjust the request and call generate_video again.",
    "cancelled": "The task was cancelled before it started.",
    "expired": "The task waited too long in Ark's queue and expired; call generate_video again.",
}


@dataclass(frozen=True)
class Config:
    """Everything the server reads from its environment, read once in `from_env`."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    image_model: str = DEFAULT_IMAGE_MODEL
    video_model: str = DEFAULT_VIDEO_MODEL
    image_timeout: float = DEFAULT_IMAGE_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        def first(names: tuple[str, ...]) -> str | None:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), None)

        base_url = (first(("ARK_BASE_URL",)) or DEFAULT_BASE_URL).rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
            raise ValueError(f"ARK_BASE_URL must be an http(s) URL such as {DEFAULT_BASE_URL}, got {base_url!r}")
        timeout = first(("ARK_TIMEOUT",))
        try:
            image_timeout = float(timeout) if timeout else DEFAULT_IMAGE_TIMEOUT
        except ValueError:
            image_timeout = 0
        if not 0 < image_timeout <= 3600:
            raise ValueError(f"ARK_TIMEOUT must be a number of seconds between 1 and 3600, got {timeout!r}")
        return cls(
            api_key=first(API_KEY_ENV),
            base_url=base_url,
            image_model=first(IMAGE_MODEL_ENV) or DEFAULT_IMAGE_MODEL,
            video_model=first(VIDEO_MODEL_ENV) or DEFAULT_VIDEO_MODEL,
            image_timeout=image_timeout,
        )


# --- Errors ----------------------------------------------------------------------------------


class DoubaoError(ToolError):
    """Every failure this server anticipates. The SDK turns it into an `isError` result with this text."""


class ArkAPIError(DoubaoError):
    """Ark (or a proxy in front of it) answered with a non-2xx status."""

    def __init__(self, status: int, code: str | None, message: str, param: str | None = None,
                 request_id: str | None = None, hint: str | None = None):
        self.status, self.code, self.message = status, code, message
        self.param, self.request_id, self.hint = param, request_id, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ", ".join(filter(None, [self.param and f"param {self.param}",
                                        self.request_id and f"request id {self.request_id}"]))
        text = f"Ark API error {self.status}{' ' + self.code if self.code else ''}: {self.message}"
        return text + (f" ({where})." if where else ".") + (f" {self.hint}" if self.hint else "")


class ArkConnectionError(DoubaoError):
    """No usable answer arrived: DNS, refused or dropped connection, timeout, or an unreadable 2xx body."""


# --- Validation, request builders and result shaping (pure functions) ------------------------


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain text")
    return value


def _model_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", value):
        raise ValueError("must be an Ark model id (e.g. doubao-seedream-4-5-251128) or endpoint id (ep-...)")
    return value


def _task_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", value) or ".." in value:
        raise ValueError("must be a task id returned by generate_video, e.g. cgt-20250331175019-6htr8")
    return value


def _image_size(value: str) -> str:
    if value in ("1K", "2K", "4K", "adaptive"):
        return value
    match = re.fullmatch(r"(\d{2,5})x(\d{2,5})", value)
    if not match:
        raise ValueError("must be 1K, 2K, 4K, adaptive, or WIDTHxHEIGHT such as 2048x2048")
    width, height = int(match[1]), int(match[2])
    if not 512 * 512 <= width * height <= 4096 * 4096 or not 1 / 16 <= width / height <= 16:
        raise ValueError("WIDTHxHEIGHT must have 512x512 to 4096x4096 pixels and an aspect ratio within 1:16..16:1")
    return value


def _duration(value: int) -> int:
    if value != -1 and not 2 <= value <= 12:
        raise ValueError("must be 2..12 seconds, or -1 to let Seedance 1.5 pro choose")
    return value


def _frames(value: int) -> int:
    if (value - 25) % 4:
        raise ValueError("must be of the form 25 + 4n (29, 33, ... 289)")
    return value


def _callback_url(value: str) -> str:
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ValueError("must be an http(s) URL")
    return value


def _optional(check: Any) -> AfterValidator:
    """Run `check` on a given value; None means the argument was left out."""
    return AfterValidator(lambda value: value if value is None else check(value))


Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS), AfterValidator(_nonblank)]
ModelId = Annotated[str | None, _optional(_model_id)]
TaskId = Annotated[str, Field(description="Task id from generate_video, e.g. cgt-2025..."), AfterValidator(_task_id)]


def image_ref(ref: str, argument: str) -> str:
    """Check one image argument: an http(s) URL or a data:image URL, passed to Ark as is."""
    ref = ref.strip()
    if urlsplit(ref).scheme in ("http", "https") and urlsplit(ref).netloc:
        return ref
    if re.match(r"data:image/[\w.+-]+;base64,", ref):
        return ref
    raise DoubaoError(f"{argument}: {ref[:80]!r} is not an http(s) URL or a data:image/...;base64, URL.")


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    """Ark treats an absent field as "use the model's default"; a null would be a 400."""
    return {k: v for k, v in mapping.items() if v is not None}


def image_request(prompt: str, model: str, images: list[str], size: str | None, max_images: int | None,
                  seed: int | None, guidance_scale: float | None, watermark: bool | None) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "size": size, "seed": seed,
            "guidance_scale": guidance_scale, "watermark": watermark}
    if images:
        # SeedEdit takes exactly one image as a string; Seedream 4.x takes a list.
        body["image"] = images[0] if len(images) == 1 else images
    if max_images and max_images > 1:
        body["sequential_image_generation"] = "auto"
        body["sequential_image_generation_options"] = {"max_images": max_images}
    return _compact(body)


def video_request(prompt: str, model: str, first_frame: str | None, last_frame: str | None,
                  reference_images: list[str], **parameters: Any) -> dict[str, Any]:
    """Build a task body: images as content items with roles, every parameter as a top-level field."""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    frames = [("first_frame", first_frame), ("last_frame", last_frame)]
    roles = [(role, url) for role, url in frames if url] + [("reference_image", url) for url in reference_images]
    content += [{"type": "image_url", "image_url": {"url": url}, "role": role} for role, url in roles]
    return {"model": model, "content": content, **_compact(parameters)}


def check_video_combination(first_frame: str | None, last_frame: str | None, reference_images: list[str],
                            duration: int | None, frames: int | None) -> None:
    """Refuse the combinations Ark would reject, before any request."""
    if last_frame and not first_frame:
        raise DoubaoError("last_frame needs first_frame: Seedance animates from a first frame to a last one.")
    if reference_images and (first_frame or last_frame):
        raise DoubaoError("Use either reference_images or first_frame/last_frame, not both.")
    if len(reference_images) > 4:
        raise DoubaoError(f"reference_images takes 1 to 4 images, got {len(reference_images)}.")
    if duration is not None and frames is not None:
        raise DoubaoError("Give duration or frames, not both (frames overrides duration at Ark).")


def list_query(status: str | None, model: str | None, task_ids: list[str], page_num: int | None,
               page_size: int | None) -> list[tuple[str, Any]]:
    """Query pairs, not a dict: Ark wants `filter.task_ids` repeated once per id."""
    pairs = [("page_num", page_num), ("page_size", page_size), ("filter.status", status), ("filter.model", model)]
    return [(k, v) for k, v in pairs if v is not None] + [("filter.task_ids", t) for t in task_ids]


class ImageOut(TypedDict):
    index: int
    url: NotRequired[str]
    size: NotRequired[str]


class ImageError(TypedDict):
    index: int
    code: str
    message: str


class ImageResult(TypedDict):
    model: NotRequired[str]
    created_at: NotRequired[str]
    images: list[ImageOut]
    errors: list[ImageError]
    usage: NotRequired[dict[str, int]]
    note: str


class VideoTask(TypedDict):
    task_id: str
    status: str
    model: NotRequired[str]
    video_url: NotRequired[str]
    last_frame_url: NotRequired[str]
    error_code: NotRequired[str]
    error_message: NotRequired[str]
    created_at: NotRequired[str]
    updated_at: NotRequired[str]
    resolution: NotRequired[str]
    ratio: NotRequired[str]
    duration: NotRequired[int]
    frames: NotRequired[int]
    fps: NotRequired[int]
    seed: NotRequired[int]
    service_tier: NotRequired[str]
    usage: NotRequired[dict[str, int]]
    next_step: str


class TaskList(TypedDict):
    total: int
    tasks: list[VideoTask]


class CancelResult(TypedDict):
    task_id: str
    previous_status: str
    outcome: Literal["cancelled", "deleted"]
    message: str


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> str | None:
    """Ark sends Unix seconds; an ISO string is easier for a model and a person to read."""
    if _int(value) is not None and 0 <= value < 2**33:
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _text(value)


def _usage(value: Any) -> dict[str, int] | None:
    usage = {k: v for k, v in value.items() if _int(v) is not None} if isinstance(value, dict) else {}
    return usage or None


def _unreadable(what: str, body: Any) -> ArkConnectionError:
    return ArkConnectionError(f"Ark answered with {what} this server cannot read: {str(body)[:200]!r}.")


def shape_images(body: dict[str, Any]) -> ImageResult:
    """Keep every image and every per-image error; one moderated image does not fail the set."""
    data = body.get("data")
    if not isinstance(data, list):
        raise _unreadable("an image result without a data list", body)
    images: list[ImageOut] = []
    errors: list[ImageError] = []
    for index, item in enumerate(data):
        item = item if isinstance(item, dict) else {}
        error = item.get("error")
        if isinstance(error, dict) or not _text(item.get("url")):
            error = error if isinstance(error, dict) else {}
            errors.append(ImageError(index=index, code=_text(error.get("code")) or "NoImage",
                                     message=_text(error.get("message")) or "Ark returned no image here."))
        else:
            images.append(ImageOut(index=index, **_compact({"url": item["url"], "size": _text(item.get("size"))})))
    return ImageResult(images=images, errors=errors, note=URL_LIFETIME_NOTE, **_compact({
        "model": _text(body.get("model")),
        "created_at": _time(body.get("created", body.get("created_at"))),
        "usage": _usage(body.get("usage")),
    }))


def shape_task(item: Any) -> VideoTask:
    """Ark's task record, flattened to what a caller acts on. Accepts both documented error field names."""
    if not isinstance(item, dict) or not _text(item.get("id")) or not _text(item.get("status")):
        raise _unreadable("a task record without an id or status", item)
    content = item.get("content") if isinstance(item.get("content"), dict) else {}
    error = item.get("error") or item.get("failure_reason")
    error = error if isinstance(error, dict) else {"message": error}
    task_id, status = item["id"], item["status"]
    return VideoTask(task_id=task_id, status=status, **_compact({
        "model": _text(item.get("model")),
        "video_url": _text(content.get("video_url")),
        "last_frame_url": _text(content.get("last_frame_url")),
        "error_code": _text(error.get("code")),
        "error_message": _text(error.get("message")),
        "created_at": _time(item.get("created_at")),
        "updated_at": _time(item.get("updated_at")),
        "resolution": _text(item.get("resolution")),
        "ratio": _text(item.get("ratio")),
        "duration": _int(item.get("duration")),
        "frames": _int(item.get("frames")),
        "fps": _int(item.get("framespersecond", item.get("fps"))),
        "seed": _int(item.get("seed")),
        "service_tier": _text(item.get("service_tier")),
        "usage": _usage(item.get("usage")),
    }), next_step=NEXT_STEP.get(status, "Call query_video_task again later.").format(task_id=task_id))


def shape_task_list(body: dict[str, Any]) -> TaskList:
    items = body.get("items")
    if items is None and _int(body.get("total")) == 0:
        items = []
    if not isinstance(items, list):
        raise _unreadable("a task list without an items list", body)
    tasks = [shape_task(item) for item in items]
    return TaskList(total=_int(body.get("total")) or len(tasks), tasks=tasks)


# --- The Ark client --------------------------------------------------------------------------


class _BearerAuth(AuthBase):
    """Passed per request so the key never lives on the shared session, and ~/.netrc cannot replace it."""

    def __init__(self, api_key: str):
        self.api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.api_key}"
        return request


def _redact(text: str, api_key: str) -> str:
    """Proxies and gateways sometimes echo request headers in their error pages."""
    return text.replace(api_key, "***") if len(api_key) >= 8 else text


def _excerpt(response: requests.Response) -> str:
    """A short, single-line view of a body that is not Ark's JSON (a proxy's HTML page, say)."""
    text = re.sub(r"<[^>]*>", " ", response.content[:2000].decode("utf-8", "replace"))
    text = " ".join(text.split())
    kind = response.headers.get("Content-Type", "no content type").split(";")[0]
    return f"non-JSON response ({kind}): {text[:160]!r}" if text else f"empty response ({kind})"


def _hint(status: int, code: str | None, path: str) -> str | None:
    model_env = "DOUBAO_IMAGE_MODEL" if path.startswith(IMAGES_PATH) else "DOUBAO_VIDEO_MODEL"
    hint = next((h for key, h in HINTS_BY_CODE.items() if code and key in code), None)
    if hint is None and status == 404 and path.startswith(TASKS_PATH + "/"):
        hint = TASK_NOT_FOUND_HINT
    if hint is None:
        hint = HINTS_BY_STATUS.get(500 if status >= 500 else status)
    return hint and hint.format(model_env=model_env)


def _connection_failure(error: requests.RequestException, method: str, url: str, timeout: float) -> str:
    if isinstance(error, requests.ConnectTimeout):
        return f"Timed out connecting to {url}. Check your network, proxy and ARK_BASE_URL."
    if isinstance(error, requests.Timeout):
        return f"Ark did not answer {method} {url} within {timeout:g} s. Try again; if it keeps happening, Ark is slow."
    reason = re.findall(r"\[Errno -?\d+\] [^'\")]+|Connection aborted|Connection refused|"
                        r"RemoteDisconnected\([^)]*\)|IncompleteRead\([^)]*\)", str(error))
    detail = reason[-1] if reason else type(error).__name__
    return f"Connection to Ark failed for {method} {url}: {detail}. Check your network, proxy and ARK_BASE_URL."


def _parse_response(response: requests.Response, content: bytes, path: str, api_key: str,
                    sent_request_id: str) -> dict[str, Any]:
    """The one place that turns an HTTP answer into data or an error. Only non-2xx is an ArkAPIError."""
    try:
        body = response.json() if content.strip() else {}
    except ValueError:
        body = None
    if 200 <= response.status_code < 300:
        if not isinstance(body, dict):
            raise ArkConnectionError(_redact(
                f"Ark answered {response.status_code} with a body that is not a JSON object: {_excerpt(response)}.",
                api_key))
        return body
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = _text(error.get("message"))
    if message is None and 300 <= response.status_code < 400:
        message = f"redirect to {response.headers.get('Location', '?')}"
    elif message is None:
        message = f"{response.reason}; {_excerpt(response)}" if response.reason else _excerpt(response)
    # Ark appends "Request id: ..." to its messages; lift it out so the id is shown once.
    found = re.search(r"\s*Request id: ?(\S+?)\.?\s*$", message)
    if found:
        message = message[: found.start()]
    request_id = (found and found[1]) or response.headers.get("X-Request-Id") or \
        response.headers.get("X-Client-Request-Id") or sent_request_id
    code = _text(error.get("code"))
    raise ArkAPIError(response.status_code, code, _redact(message.rstrip(" ."), api_key),
                      _text(error.get("param")), request_id, _hint(response.status_code, code, path))


class ArkClient:
    """Synchronous client for the two Ark endpoints this server uses. Call it from worker threads."""

    def __init__(self, base_url: str, image_timeout: float = DEFAULT_IMAGE_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.image_timeout = image_timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=WORKER_THREADS)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = f"doubao-mcp/{__version__} {requests.utils.default_user_agent()}"

    def _request(self, method: str, path: str, api_key: str, *, json: Any = None,
                 params: list[tuple[str, Any]] | None = None, timeout: float = TASK_TIMEOUT) -> dict[str, Any]:
        """Every Ark call goes through here: one place for auth, timeouts and error mapping."""
        url = self.base_url + path
        request_id = uuid.uuid4().hex
        try:
            response = self.session.request(
                method, url, json=json, params=params, auth=_BearerAuth(api_key),
                headers={"X-Client-Request-Id": request_id}, timeout=(CONNECT_TIMEOUT, timeout),
                allow_redirects=False,  # an API that redirects is misconfigured; never resend the key elsewhere
            )
            content = response.content  # read the whole body here so a drop mid-body is a connection error
        except requests.RequestException as error:
            raise ArkConnectionError(_redact(_connection_failure(error, method, url, timeout), api_key)) from error
        return _parse_response(response, content, path, api_key, request_id)

    def generate_images(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        return self._request("POST", IMAGES_PATH, api_key, json=body, timeout=self.image_timeout)

    def create_task(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        return self._request("POST", TASKS_PATH, api_key, json=body)

    def get_task(self, task_id: str, api_key: str) -> dict[str, Any]:
        return self._request("GET", f"{TASKS_PATH}/{quote(task_id, safe='')}", api_key)

    def list_tasks(self, params: list[tuple[str, Any]], api_key: str) -> dict[str, Any]:
        return self._request("GET", TASKS_PATH, api_key, params=params)

    def delete_task(self, task_id: str, api_key: str) -> dict[str, Any]:
        return self._request("DELETE", f"{TASKS_PATH}/{quote(task_id, safe='')}", api_key)


# --- The MCP tools ---------------------------------------------------------------------------


def _require_key(config: Config) -> str:
    if not config.api_key:
        raise DoubaoError("No Ark API key: set ARK_API_KEY in this server's environment (the \"env\" block of "
                          "your MCP client config). Create a key in the Ark console under API Key management.")
    return config.api_key


def _lean_schema(node: Any) -> Any:
    """Drop pydantic's generated titles and the `anyOf: [T, null]` wrapper of optional arguments.

    Every conversation pays for tools/list in tokens; these parts make it a third longer and tell a
    model nothing that the property name and `required` do not.
    """
    if isinstance(node, list):
        return [_lean_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    lean = {key: ({name: _lean_schema(s) for name, s in value.items()} if key == "properties" else _lean_schema(value))
            for key, value in node.items() if key != "title"}
    variants = lean.get("anyOf", [])
    if len(variants) == 2 and {"type": "null"} in variants and "default" in lean and lean["default"] is None:
        del lean["anyOf"], lean["default"]
        lean.update(next(v for v in variants if v != {"type": "null"}))
    return lean


def build_server(config: Config, client: ArkClient | None = None) -> MCPServer:
    """The MCP server with its five tools, bound to one configuration and one Ark client."""
    client = client or ArkClient(config.base_url, config.image_timeout)
    tools: list[Tool] = []

    def tool(**hints: Any) -> Any:
        def register(fn: Any) -> Any:
            registered = Tool.from_function(fn, description=" ".join(fn.__doc__.split()),
                                            annotations=ToolAnnotations(open_world_hint=True, **hints))
            registered.parameters = _lean_schema(registered.parameters)
            registered.fn_metadata.output_schema = _lean_schema(registered.fn_metadata.output_schema)
            tools.append(registered)
            return fn
        return register

    async def call(method: Any, *args: Any) -> dict[str, Any]:
        """Run one blocking Ark call on a worker thread, never on the event loop."""
        return await anyio.to_thread.run_sync(partial(method, *args))

    @tool(title="Generate images", read_only_hint=False, destructive_hint=False)
    async def generate_image(
        prompt: Annotated[Prompt, Field(description="What to draw, or how to edit the reference images.")],
        model: Annotated[ModelId, Field(description="Model or endpoint id; default from DOUBAO_IMAGE_MODEL.")] = None,
        images: Annotated[list[str] | None, Field(max_length=14, description="Reference image URLs "
                          "(https or data:image) to edit or combine.")] = None,
        size: Annotated[str | None, _optional(_image_size),
                        Field(description="1K, 2K, 4K, adaptive, or WIDTHxHEIGHT like 2048x2048.")] = None,
        max_images: Annotated[int | None, Field(ge=1, le=15, description="Above 1: a set of up to this many "
                              "related images (Seedream 4.x).")] = None,
        seed: Annotated[int | None, Field(ge=-1, le=2147483647)] = None,
        guidance_scale: Annotated[float | None, Field(ge=1, le=10, description="Prompt adherence (Seedream 3.0 "
                                  "and SeedEdit only).")] = None,
        watermark: Annotated[bool | None, Field(description="Ark's default is true.")] = None,
    ) -> ImageResult:
        """Generate images with Doubao Seedream from a prompt, optionally editing or fusing reference images.
        Returns image URLs (valid 24 h) and any per-image errors."""
        refs = [image_ref(ref, "images") for ref in images or []]
        if max_images and max_images > 1 and len(refs) + max_images > 15:
            raise DoubaoError(f"images plus max_images may total 15 at most, got {len(refs)} + {max_images}.")
        body = image_request(prompt, model or config.image_model, refs, size, max_images, seed,
                             guidance_scale, watermark)
        return shape_images(await call(client.generate_images, body, _require_key(config)))

    @tool(title="Start a video task", read_only_hint=False, destructive_hint=False)
    async def generate_video(
        prompt: Annotated[Prompt, Field(description="The scene and motion to generate (best under 500 chars).")],
        model: Annotated[ModelId, Field(description="Model or endpoint id; default from DOUBAO_VIDEO_MODEL.")] = None,
        first_frame: Annotated[str | None, Field(description="Image URL to start from (image-to-video).")] = None,
        last_frame: Annotated[str | None, Field(description="Image URL to end on; needs first_frame.")] = None,
        reference_images: Annotated[list[str] | None, Field(description="1-4 reference image URLs; not with "
                                    "first/last frames.")] = None,
        resolution: Resolution | None = None,
        ratio: Ratio | None = None,
        duration: Annotated[int | None, _optional(_duration),
                            Field(description="Seconds: 2-12 (or -1: model decides).")] = None,
        frames: Annotated[int | None, Field(ge=29, le=289, description="Length in frames, 25+4n; instead of "
                          "duration."), _optional(_frames)] = None,
        seed: Annotated[int | None, Field(ge=-1, le=4294967295)] = None,
        camera_fixed: bool | None = None,
        watermark: bool | None = None,
        generate_audio: Annotated[bool | None, Field(description="Seedance 1.5 pro and later.")] = None,
        return_last_frame: Annotated[bool | None, Field(description="Also return the last frame as a PNG "
                                     "URL.")] = None,
        service_tier: Annotated[ServiceTier | None, Field(description="flex: cheaper, slower.")] = None,
        callback_url: Annotated[str | None, _optional(_callback_url),
                                Field(description="Ark POSTs task updates here.")] = None,
    ) -> VideoTask:
        """Start a Doubao Seedance video task: text-to-video, or image-to-video from a first frame, first and
        last frames, or reference images. Returns a task_id at once; check it with query_video_task."""
        first = first_frame and image_ref(first_frame, "first_frame")
        last = last_frame and image_ref(last_frame, "last_frame")
        refs = [image_ref(ref, "reference_images") for ref in reference_images or []]
        check_video_combination(first, last, refs, duration, frames)
        body = video_request(
            prompt, model or config.video_model, first, last, refs, resolution=resolution, ratio=ratio,
            duration=duration, frames=frames, seed=seed, camera_fixed=camera_fixed, watermark=watermark,
            generate_audio=generate_audio, return_last_frame=return_last_frame, service_tier=service_tier,
            callback_url=callback_url)
        created = await call(client.create_task, body, _require_key(config))
        return shape_task({"status": "queued", "model": body["model"], **created})

    @tool(title="Check a video task", read_only_hint=True, idempotent_hint=True)
    async def query_video_task(task_id: TaskId) -> VideoTask:
        """Get a video task's status and, once succeeded, its video URL (valid 24 h)."""
        return shape_task(await call(client.get_task, task_id, _require_key(config)))

    @tool(title="List video tasks", read_only_hint=True, idempotent_hint=True)
    async def list_video_tasks(
        status: TaskStatus | None = None,
        model: Annotated[ModelId, Field(description="Only tasks of this model or endpoint id.")] = None,
        task_ids: Annotated[list[Annotated[str, AfterValidator(_task_id)]] | None,
                            Field(max_length=500, description="Only these tasks.")] = None,
        page_num: Annotated[int | None, Field(ge=1, le=500)] = None,
        page_size: Annotated[int | None, Field(ge=1, le=500)] = None,
    ) -> TaskList:
        """List video tasks from the last 7 days, newest first, optionally filtered."""
        params = list_query(status, model, task_ids or [], page_num, page_size)
        return shape_task_list(await call(client.list_tasks, params, _require_key(config)))

    @tool(title="Cancel or delete a video task", read_only_hint=False, destructive_hint=True, idempotent_hint=False)
    async def cancel_video_task(task_id: TaskId) -> CancelResult:
        """Cancel a queued video task, or delete the record of a finished one. A running task cannot be
        cancelled."""
        api_key = _require_key(config)
        status = shape_task(await call(client.get_task, task_id, api_key))["status"]
        try:
            await call(client.delete_task, task_id, api_key)
        except ArkAPIError as error:
            if status in ("running", "cancelled") and 400 <= error.status < 500:
                error.hint = (f"The task is {status}: Ark cannot cancel or delete it now. "
                              + ("Wait until it finishes, then call cancel_video_task again to delete its record."
                                 if status == "running" else "Ark keeps cancelled tasks for 7 days."))
            raise
        outcome: Literal["cancelled", "deleted"] = "cancelled" if status == "queued" else "deleted"
        message = ("The task was cancelled before it started." if outcome == "cancelled"
                   else f"The {status} task's record was deleted; its URLs stop working.")
        return CancelResult(task_id=task_id, previous_status=status, outcome=outcome, message=message)

    return MCPServer(
        "doubao-mcp", version=__version__, tools=tools,
        instructions="Generate images (Seedream) and videos (Seedance) with ByteDance Doubao models on "
        "Volcengine Ark. Videos are asynchronous tasks: generate_video returns a task_id to check with "
        "query_video_task. Result URLs expire after 24 hours.",
    )


# --- Entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="doubao-image-video-mcp",
        description="MCP server for Doubao Seedream images and Seedance videos (Volcengine Ark). "
        "Serves MCP over stdio; configure it with ARK_API_KEY, ARK_BASE_URL, DOUBAO_IMAGE_MODEL, "
        "DOUBAO_VIDEO_MODEL and ARK_TIMEOUT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    # stdout is the protocol channel: every log line goes to stderr. Set before MCPServer() configures its own.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_env()
    except ValueError as error:
        sys.exit(f"doubao-mcp: {error}")  # SystemExit with a message writes it to stderr
    if not config.api_key:
        log.warning("ARK_API_KEY is not set: tools are listed, but calls will ask for a key.")
    try:
        build_server(config).run("stdio")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
