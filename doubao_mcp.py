"""doubao-mcp: an MCP server for ByteDance Doubao Seedream images and Seedance videos.

It talks to the Volcengine Ark v3 API (or BytePlus ModelArk) and offers five tools:
generate_image, generate_video, query_video_task, list_video_tasks and cancel_video_task.

Environment:
  ARK_API_KEY            Ark API key (DOUBAO_API_KEY is read too). Without one the server still starts
                         and lists its tools; tool calls say what to set.
  ARK_BASE_URL           API root, default https://ark.cn-beijing.volces.com/api/v3
                         (BytePlus: https://ark.ap-southeast.bytepluses.com/api/v3).
  DOUBAO_IMAGE_MODEL     the image model or endpoint id for calls that name none, never replaced
                         (DOUBAO_IMAGE_ENDPOINT_ID is read too); unset: the first default that fits.
  DOUBAO_VIDEO_MODEL     the same for videos (DOUBAO_VIDEO_ENDPOINT_ID is read too).
  ARK_TIMEOUT            seconds to wait for an image generation answer, default 300.
  DOUBAO_OUTPUT_DIR      folder to save results in when a call gives no save_dir (relative to home).
  DOUBAO_PREVIEWS        0 turns off the image previews in results.
  DOUBAO_MEDIA_DOMAINS   more origins results may be fetched and shown from, comma-separated
                         (https://media.example.com, https://*.example.com).
  DOUBAO_STATE_DIR       the task record's folder, or off (default: the platform's data folder on
                         stdio, off over HTTP).
  DOUBAO_ALLOWED_DIR     the only folder tools may read images from and save into; required for local
                         files over HTTP, where the server's disk is not the caller's.
  DOUBAO_MCP_TRANSPORT, DOUBAO_MCP_HOST, DOUBAO_MCP_PORT, DOUBAO_MCP_ALLOWED_HOSTS,
  DOUBAO_MCP_ALLOWED_ORIGINS, DOUBAO_MCP_LOG_LEVEL: defaults for the command-line options.

Run it over stdio with `doubao-image-video-mcp` (alias `doubao-mcp`, or `python3 -m doubao_mcp`), or
host it with `doubao-image-video-mcp --transport streamable-http --host 0.0.0.0 --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import difflib
import email.utils
import errno
import functools
import hashlib
import heapq
import html
import io
import ipaddress
import itertools
import json
import logging
import math
import os
import platform
import queue
import random
import re
import reprlib
import signal
import socket
import sqlite3
import stat
import statistics
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit
from urllib.request import url2pathname

try:
    import fcntl  # .part files are locked while written (POSIX)
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

import anyio
import anyio.to_thread
import requests
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.server.apps import Apps, ResourceCsp
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import AfterValidator, ConfigDict, Field, ValidationError, with_config
from pydantic.json_schema import SkipJsonSchema
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from typing_extensions import NotRequired, TypedDict


# --- Tables: every number, every model, every hint ----------------------------------------------------------------
# What the server knows, as data: the numbers that shape its behaviour (each with its unit), what each model
# family accepts and where Ark stands with it, and what a user should do about each Ark error.

__version__ = "0.1.0"

log = logging.getLogger("doubao_mcp")

T = TypeVar("T")

DEFAULT_BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"

DEFAULT_IMAGE_TIMEOUT_SECONDS = 300.0  # a set of 15 4K images can take minutes; Ark's SDKs wait 600 s

CONNECT_TIMEOUT_SECONDS = 10.0

TASK_READ_TIMEOUT_SECONDS = 15.0  # task create/get/list/delete answer in well under a second when Ark is healthy


PROMPT_MAX_CHARS = 5000  # far above what Ark uses (~500 for video); stops pasted files going upstream

MAX_ATTEMPTS = 4  # one call plus up to three retries of a transient failure
RETRY_FIRST_DELAY_SECONDS, RETRY_MAX_DELAY_SECONDS = 0.5, 8.0  # doubled each retry, as in the official SDKs
RETRY_JITTER = 0.25  # each delay grows by up to this fraction, so that retries of many callers spread out

MAX_RETRY_AFTER_SECONDS = 30.0  # a longer Retry-After is reported to the caller, not slept through

MIN_ATTEMPT_SECONDS = 1.0  # no retry starts unless its deadline leaves it at least this long

MAX_REDIRECTS = 5  # downloads only: API calls never follow a redirect

SHORT_SECRET_CHARS, LONG_SECRET_CHARS = 8, 20  # keys shorter are never redacted; longer ones wherever they stand
REDACT_RUN_CHARS = 12  # a run this long of a long key, or of one of its encodings, is redacted: a key cut short too
ANCHOR_CHARS = REDACT_RUN_CHARS // 2  # the blocks a run is first looked at in (see `_redact`)

MAX_WAIT_SECONDS = 600

START_WAIT_SECONDS = 55  # generate_video's wait: its reply, with the new task id, must beat a 60 s client timeout

POLL_INTERVALS_SECONDS = (1.5, 10.0)  # the densest polls (around and after a task's estimate), the sparsest (early)
RESOLUTION_COST = {"480p": 0.6, "720p": 1.0, "1080p": 1.8, "4k": 4.0}  # a prior's scale, by resolution
ESTIMATE_SAMPLES = 20  # an estimate is the median of this many recent tasks of the kind
ESTIMATE_MIN_SAMPLES = 3  # fewer than this: the kind is widened (family only), then the family's prior is used
ESTIMATE_HISTORY = 500  # the most recent task times kept per key, and read from the record at start
ESTIMATE_TASKS_KEPT = 5000  # task ids already learnt from, so that a list repeating a task counts it once

PROGRESS_EVERY_SECONDS = 3.0  # a wait reports progress at least this often, between its polls
POLL_BATCH_SECONDS = 0.1  # polls of one key within this of each other share one request
LIST_PAGE_TASKS = 100  # tasks asked about in one list request (Ark's pages hold up to 500)
POLL_GRID_SECONDS = 0.5  # polls fall on this grid of the clock, so that waits' polls meet
PRIOR_POLL_SECONDS = 4.0  # the sparsest poll of a wait timed by a prior, not by tasks seen: it may be far off
OVERRUN_POLL_SECONDS = 3.5  # the sparsest poll of a task past its estimate (until it has run twice as long)
MAX_TASK_RUN_SECONDS = 259_200  # Ark's longest execution_expires_after: no running task is older
HEARTBEAT_EVERY_SECONDS = 10.0  # progress while a long image generation runs, for clients that time out at 60 s

THREAD_IDLE_SECONDS = 30.0  # a worker thread with no work for this long ends

DEFAULT_MAX_DOWNLOAD_BYTES = 2 * 2**30

DOWNLOAD_SILENCE_SECONDS = 60.0  # longest silence tolerated mid-download

DOWNLOAD_DEADLINE_SECONDS = 600.0

STALE_PART_SECONDS = DOWNLOAD_DEADLINE_SECONDS + 60  # a .part file this old belongs to no live download

DOWNLOAD_CHUNK_BYTES = 64 * 2**10

LAST_FRAME_NAME = "-last-frame"  # a video's last frame is saved as <task id>-last-frame.png, and known by it

NAME_MAX_CHARS, MESSAGE_MAX_CHARS, URL_MAX_CHARS = 200, 1000, 4096  # longest ids and codes, messages, URLs put in a result

PREVIEW_SIDE_PIXELS, PREVIEW_MAX_BYTES = 512, 100 * 2**10  # an image preview in a result: its longest side, its size

PREVIEW_SOURCE_MAX_BYTES = 40 * 2**20  # the most of an image or frame read to make a preview

PREVIEW_DEADLINE_SECONDS = 15.0  # previews are made within this after the result is ready, or left out

PREVIEW_MAX_PIXELS = 18_000_000  # the largest Seedream image is 16.78 MP (4096x4096): a bigger one is not decoded

DECODING = threading.Semaphore(1)  # one preview decodes at a time: at most one image's pixels in memory

VIEWER_URI = "ui://doubao-mcp/viewer.html"

# Where Ark's result files live (Volcengine's and BytePlus's object storage): the viewer may load media from them.
MEDIA_DOMAINS = ("https://*.volces.com", "https://*.bytepluses.com")

# Control characters, zero-width characters and bidi overrides: never passed from upstream into a result.
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")

TRANSPORTS = ("stdio", "streamable-http", "http")  # http: the same as streamable-http

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# --- Models: what each family accepts, and where it stands --------------------------------------------------------
# The one place that knows a model's limits and lifecycle (sources: ../shared/ARK_API.md, the Ark docs and SDKs;
# see the model table in docs/models.md). A family is an id without its `doubao-` / `dreamina-` / `dola-` prefix and
# `-YYMMDD` date stamp, so the China and BytePlus ids of one model share a row. An id the table does not know (an
# `ep-...` endpoint, a model newer than this release) goes to Ark with only the universal checks, and Ark decides.
# A capability marked None is unclear: an explicit model is never refused for it, and a default never relies on it.

CHINA, BYTEPLUS = 0, 1  # regions: ids differ between Volcengine Ark and BytePlus ModelArk

# The defaults, best first, per region. A call that names no model (and no DOUBAO_*_MODEL is set) goes to the first
# that is known to take it, and on to the next while Ark answers that the account cannot use one. Current, widely
# served models first; a retired one last, since our dates can be wrong and trying it costs nothing.
DEFAULT_MODELS = {
    "image": (
        ("doubao-seedream-4-5-251128", "doubao-seedream-5-0-pro-260628", "doubao-seedream-5-0-flash-260915",
         "doubao-seedream-5-5-261028", "doubao-seedream-4-0-250828", "doubao-seedream-5-0-260128"),
        ("seedream-5-0-260128", "seedream-4-5-251128", "dola-seedream-5-0-pro-260628", "dola-seedream-5-5-261028",
         "seedream-4-0-250828"),
    ),
    "video": (
        ("doubao-seedance-2-0-260128", "doubao-seedance-2-5-260628", "doubao-seedance-2-0-fast-260128",
         "doubao-seedance-2-0-mini-260615", "doubao-seedance-1-5-pro-251215"),
        ("dreamina-seedance-2-0-260128", "dreamina-seedance-2-5-260628", "dreamina-seedance-2-0-fast-260128",
         "dreamina-seedance-2-5-premium-260915", "seedance-1-5-pro-251215"),
    ),
}


@dataclass(frozen=True)
class Lifecycle:
    """A family Ark has retired or is retiring. Never a reason to refuse a call (BytePlus may still serve an id
    China retired, and these dates come from notes that can be wrong): it explains Ark's refusal, names the
    successor, and adds a note to a result the model still made."""

    name: str
    status: str  # "being retired", "retired in China since 2026-11-24"
    successor: tuple[str, str]  # (China id, BytePlus id)
    caveat: str  # what the successor cannot do, or does otherwise
    retired: bool = True  # False: deprecated, still served
    regions: tuple[int, ...] = (CHINA, BYTEPLUS)  # where it holds

    def advice(self, region: int) -> str:
        return f"{self.name} is {self.status}: use {self.successor[region]} ({self.caveat})."

SEEDREAM_4_5 = ("doubao-seedream-4-5-251128", "seedream-4-5-251128")

SEEDANCE_2_0 = ("doubao-seedance-2-0-260128", "dreamina-seedance-2-0-260128")

SEEDANCE_2_5 = ("doubao-seedance-2-5-260628", "dreamina-seedance-2-5-260628")


@dataclass(frozen=True)
class VideoFamily:
    durations: tuple[int, int]  # seconds
    auto_duration: bool  # duration -1: the model chooses
    resolutions: tuple[str, ...]
    refs: tuple[int, int, int] = (0, 0, 0)  # most reference images, videos, audios
    total_refs: int | None = None
    audio_alone: bool = True  # reference audios without a reference image or video beside them
    text_only: bool = True  # text-to-video, with no image at all
    first_frame: bool = True
    last_frame: bool = True
    prompt_optional: bool = False  # the prompt may be left out when images, videos or audios are given
    frames: bool = False
    drafts: tuple[str, ...] = ()  # the resolutions a draft may have; (): no drafts, and no draft_task_id
    audio: bool = False  # generate_audio
    web_search: Literal["no", "text-to-video", "yes"] = "no"
    omni: bool = False  # Seedance 2.5: frames at ratio adaptive, extra.omni_reference_task_type, mov output
    lifecycle: Lifecycle | None = None
    seconds: float = 90.0  # how long a 5 s 720p video takes, before this server has seen any (the prior)


@dataclass(frozen=True)
class ImageFamily:
    sizes: tuple[str, ...]  # named sizes
    pixels: tuple[int, int] | None  # WIDTHxHEIGHT with this many pixels; None: named sizes only
    refs: tuple[int, int] = (0, 10)  # fewest and most reference images
    sets: bool | None = True  # max_images above 1
    web_search: bool | None = False
    background: bool | None = False  # background: transparent or opaque (Seedream 5.5)
    lifecycle: Lifecycle | None = None

_SEEDANCE_2 = {"prompt_optional": True, "audio": True, "web_search": "yes"}

_SEEDANCE_2_0 = {**_SEEDANCE_2, "web_search": "text-to-video", "total_refs": 12, "audio_alone": False}

_SEEDANCE_2_5 = {**_SEEDANCE_2, "drafts": ("480p",), "omni": True, "seconds": 120.0}

_480_1080 = ("480p", "720p", "1080p")

_RETIRED_1_0 = Lifecycle("Seedance 1.0", "retired since 2026-07-17", SEEDANCE_2_0, "or 2.0 fast; 4-15 s")

VIDEO_MODELS: dict[str, VideoFamily] = {
    # family: VideoFamily(seconds, -1 allowed, resolutions, most reference images/videos/audios, what else differs)
    "seedance-2-5": VideoFamily((4, 30), True, _480_1080, (30, 10, 10), **_SEEDANCE_2_5),
    "seedance-2-5-premium": VideoFamily((4, 30), True, (*_480_1080, "4k"), (30, 10, 10), **_SEEDANCE_2_5),
    "seedance-2-0": VideoFamily((4, 15), True, (*_480_1080, "4k"), (9, 3, 3), **_SEEDANCE_2_0),
    "seedance-2-0-fast": VideoFamily((4, 15), True, ("480p", "720p"), (9, 3, 3), **_SEEDANCE_2_0, seconds=45.0),
    "seedance-2-0-mini": VideoFamily((4, 15), True, ("480p", "720p"), (9, 3, 3), **_SEEDANCE_2_0, seconds=40.0),
    "seedance-1-5-pro": VideoFamily((4, 12), True, _480_1080, drafts=_480_1080, audio=True, lifecycle=Lifecycle(
        "Seedance 1.5 pro", "being retired", SEEDANCE_2_5, "it makes drafts too, at 480p", retired=False)),
    "seedance-1-0-pro": VideoFamily((2, 12), False, _480_1080, frames=True, lifecycle=_RETIRED_1_0),
    "seedance-1-0-pro-fast": VideoFamily((2, 12), False, _480_1080, frames=True, last_frame=False),
    "seedance-1-0-lite-i2v": VideoFamily((2, 12), False, _480_1080, (4, 0, 0), frames=True, text_only=False,
                                         lifecycle=replace(_RETIRED_1_0, name="Seedance 1.0 lite",
                                                           status="retired since 2026-05-13")),
    "seedance-1-0-lite-t2v": VideoFamily((2, 12), False, _480_1080, frames=True, first_frame=False, last_frame=False,
                                         lifecycle=replace(_RETIRED_1_0, name="Seedance 1.0 lite",
                                                           status="retired since 2026-05-13")),
}

ANY_PIXELS = (0, 2**31)  # the docs give no range: the universal side limits apply

_SEEDREAM_5_LITE = ImageFamily(("2K", "3K", "4K"), ANY_PIXELS, (0, 14), web_search=True, background=None, lifecycle=
                               Lifecycle("Seedream 5.0 lite", "retired in China since 2026-11-24", (
                                   "doubao-seedream-5-0-pro-260628", "dola-seedream-5-0-pro-260628"),
                                   "it makes no sets, no web search and no 3K or 4K", regions=(CHINA,)))

IMAGE_MODELS: dict[str, ImageFamily] = {
    # family: ImageFamily(named sizes, WIDTHxHEIGHT pixel range, fewest/most reference images, sets, ...)
    "seedream-5-5": ImageFamily(("1K", "1.5K", "2K"), ANY_PIXELS, sets=False, web_search=None, background=True),
    "seedream-5-0": _SEEDREAM_5_LITE,
    "seedream-5-0-lite": _SEEDREAM_5_LITE,
    "seedream-5-0-pro": ImageFamily(("1K", "1.5K", "2K", "auto"), (921_600, 4_194_304), sets=False, background=None),
    "seedream-5-0-flash": ImageFamily(("1K", "1.5K", "2K"), ANY_PIXELS, sets=None, web_search=True, background=None),
    "seedream-4-5": ImageFamily(("2K", "4K"), (3_686_400, 16_777_216), (0, 14)),
    "seedream-4-0": ImageFamily(("1K", "2K", "4K"), (921_600, 16_777_216)),
    "seedream-3-0-t2i": ImageFamily((), (262_144, 4_194_304), (0, 0), sets=False, lifecycle=Lifecycle(
        "Seedream 3.0", "retired since 2026-05-13", SEEDREAM_4_5, "sizes 2K, 4K or 3.69 MP and up")),
    "seededit-3-0-i2i": ImageFamily(("adaptive",), None, (1, 1), sets=False),
}

# Checks that hold for every model, known or not: they refuse only what no Seedance or Seedream model
# could take, so that a model released after this server works from its first day.
ANY_DURATION_SECONDS = (1, 600)  # or -1

MAX_FRAMES = 24 * ANY_DURATION_SECONDS[1] + 1  # the longest duration at 24 fps (of the form 25 + 4n)

MAX_REFERENCES_PER_LIST = 50  # per list; the table has each model's real limit

SIZE_SIDE_PIXELS = (64, 16384)  # WIDTHxHEIGHT, each side, and at most 16:1

MAX_SET_IMAGES = 15  # Ark's own limit for sequential_image_generation: reference images plus outputs

IMAGE_INPUT_MAX_BYTES = 10 * 2**20  # Ark's limit for image-generation inputs

VIDEO_FRAME_MAX_BYTES = 30 * 2**20  # video frames and reference images

AUDIO_INPUT_MAX_BYTES = 15 * 2**20

REQUEST_MAX_BYTES = 64 * 2**20  # Ark's whole request body, base64 inputs included

# (offset, magic bytes, MIME type, file extension): files are recognised by content, not by name.
FILE_SIGNATURES = (
    (0, b"\xff\xd8\xff", "image/jpeg", ".jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
    (8, b"WEBP", "image/webp", ".webp"),
    (0, b"GIF8", "image/gif", ".gif"),
    (0, b"BM", "image/bmp", ".bmp"),
    (0, b"II*\x00", "image/tiff", ".tiff"),
    (0, b"MM\x00*", "image/tiff", ".tiff"),
    (4, b"ftypqt", "video/quicktime", ".mov"),  # before mp4: QuickTime is an ftyp file with the brand "qt  "
    (4, b"ftyp", "video/mp4", ".mp4"),
    (8, b"WAVE", "audio/wav", ".wav"),
    (0, b"ID3", "audio/mpeg", ".mp3"),
    (0, b"\xff\xfb", "audio/mpeg", ".mp3"),
    (0, b"\xff\xf3", "audio/mpeg", ".mp3"),
    (0, b"\xff\xf2", "audio/mpeg", ".mp3"),
)

# generate_video's media arguments: (argument, MEDIA kind, content item type, Ark role).
VIDEO_INPUTS = (
    ("first_frame", "frame", "image", "first_frame"),
    ("last_frame", "frame", "image", "last_frame"),
    ("reference_images", "frame", "image", "reference_image"),
    ("reference_videos", "video", "video", "reference_video"),
    ("reference_audios", "audio", "audio", "reference_audio"),
)

# What each kind of media argument takes: the largest inline file, and how to name the files it reads.
MEDIA = {
    "image": (IMAGE_INPUT_MAX_BYTES, "a JPEG, PNG, WebP, BMP, TIFF or GIF image"),
    "frame": (VIDEO_FRAME_MAX_BYTES, "a JPEG, PNG, WebP, BMP, TIFF or GIF image"),
    "audio": (AUDIO_INPUT_MAX_BYTES, "a WAV or MP3 file"),
    "video": (0, "an MP4 or MOV video"),  # never inline: Ark fetches reference videos itself
}

API_KEY_ENV = ("ARK_API_KEY", "DOUBAO_API_KEY")

IMAGE_MODEL_ENV = ("DOUBAO_IMAGE_MODEL", "DOUBAO_IMAGE_ENDPOINT_ID")

VIDEO_MODEL_ENV = ("DOUBAO_VIDEO_MODEL", "DOUBAO_VIDEO_ENDPOINT_ID")

TASKS_PATH = "/contents/generations/tasks"

IMAGES_PATH = "/images/generations"

URL_LIFETIME_NOTE = "Result URLs expire 24 hours after generation: download what you want to keep."

TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})

Resolution = Literal["480p", "720p", "1080p", "4k"]

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
    "OutputAudioSensitiveContentDetected": "Ark's moderation blocked the generated audio, not the picture: call "
    "again with generate_audio: false.",
    "TaskTypeConstraint": "This kind of task does not take {param}: leave it out, or change the inputs, and call again.",
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

NOT_FINISHED = ("Not finished yet. Videos take 30 s to several minutes: call query_video_task with task_id "
                "{task_id!r} and wait_seconds=50 (again while it runs) rather than polling rapidly.")

NEXT_STEP = {
    "queued": NOT_FINISHED,
    "running": NOT_FINISHED,
    "succeeded": URL_LIFETIME_NOTE,
    "failed": "Generation failed; read error_message, adjust the request and call generate_video again.",
    "cancelled": "The task was cancelled before it started.",
    "expired": "The task waited too long in Ark's queue and expired; call generate_video again.",
}

# Top-level fields the tools build, and what to use instead of setting them through `extra`; the tools' own
# argument names are reserved the same way. None: a field this server cannot handle at all.
BUILT_FIELDS = {
    "model": "use the model argument", "prompt": "use the prompt argument", "image": "use the images argument",
    "content": "use prompt and the image, video and audio arguments", "tools": "use the web_search argument",
    "sequential_image_generation": "use max_images", "sequential_image_generation_options": "use max_images",
    "stream": None, "response_format": None,
}


# --- Errors: what a call can fail with ----------------------------------------------------------------------------


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


class ConfigError(ValueError):
    """A setting in the environment that cannot work: start-up stops with this one line on stderr."""


class ArkConnectionError(DoubaoError):
    """No usable answer arrived: DNS, refused or dropped connection, timeout, or an unreadable 2xx body."""


def code_hint(code: str | None, model_env: str = "DOUBAO_VIDEO_MODEL", param: str | None = None) -> str | None:
    """What to do about an Ark error code, in an error answer or a failed task alike."""
    hint = next((h for key, h in HINTS_BY_CODE.items() if code and key in code), None)
    return hint and hint.format(model_env=model_env, param=param or "one of the parameters given (Ark's message "
                                "names it)")


# --- Settings: Limits and Config, read once from the environment --------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """How much the server takes on at once, and how long and how large anything may be: one place (tests shrink it).

    Blocking work runs on two fixed sets of threads, so that quick calls stay quick whatever long generations
    do; their sum bounds the threads, and so the requests in flight upstream."""

    quick_threads: int = 8  # task queries, lists and cancels, folder checks
    slow_threads: int = 31  # image generations, task creation (uploads), downloads, reading input files
    # and one more: the watcher, which saves videos on its own
    slot_wait: float = 20.0  # longest wait for a free thread before a call is told the server is busy
    task_deadline: float = 30.0  # a task call, retries included
    download_deadline: float = DOWNLOAD_DEADLINE_SECONDS
    download_min_rate: float = 64 * 2**10  # bytes per second, over every rate_window of a download
    rate_window: float = 30.0
    max_answer_bytes: int = 8 * 2**20  # an API answer; Ark's are a few KB, a list of 500 tasks about 1 MB
    # Hosting over HTTP:
    max_body: int = 70 * 2**20  # a request: Ark's 64 MB of base64 inputs, and the JSON-RPC around them
    # All request bodies held at once, received and not yet answered: parsing and checking one takes about seven
    # times its size (the SDK's copies), so this bounds the server's memory, not only the sockets.
    max_bodies_in_flight: int = 100 * 2**20
    body_timeout: float = 120.0  # for a whole request body to arrive
    header_timeout: float = 10.0  # for a request's head to arrive
    keep_alive: float = 5.0  # an idle kept-alive connection is closed after this
    grace: float = 20.0  # at SIGTERM/SIGINT, for calls in flight to finish
    max_connections: int = 256  # more at once get 503

    @property
    def threads(self) -> int:
        return self.quick_threads + self.slow_threads + 1

KEY_CHARACTERS = re.compile(r"[\x20-\x7e\xa0-\xff]+")  # what an HTTP header value can carry


def usable_key(key: str | None, where: str) -> str | None:
    """A key as Ark takes it: a pasted "Bearer " prefix removed (else Ark would get "Bearer Bearer ..."), and one
    with a character HTTP cannot send refused here, by name, rather than failing inside a request with the key
    in the error."""
    key = re.sub(r"^bearer\s+", "", key.strip(), flags=re.IGNORECASE) if key else key
    if key and not KEY_CHARACTERS.fullmatch(key):
        raise DoubaoError(f"{where} contains a control character or a character outside Latin-1, which no HTTP "
                          "header can carry: copy the key again from the Ark console.")
    return key


@dataclass(frozen=True)
class Config:
    """Everything the server reads from its environment, read once in `from_env`."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    image_model: str | None = None  # DOUBAO_IMAGE_MODEL; None: the region's DEFAULT_MODELS
    video_model: str | None = None
    image_timeout: float = DEFAULT_IMAGE_TIMEOUT_SECONDS
    output_dir: str | None = None
    allowed_dir: Path | None = None
    serving_http: bool = False  # set by main(): over HTTP, callers bring keys and the disk is not theirs
    poll_intervals: tuple[float, float] = POLL_INTERVALS_SECONDS
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    limits: Limits = Limits()
    working_dir: Path = field(default_factory=Path.cwd)  # the client's folder, where it started the server
    previews: bool = True  # image previews in results; DOUBAO_PREVIEWS=0 for clients that pay per image token
    state_dir: Path | None = None  # the task record's folder; None: no record (DOUBAO_STATE_DIR=off)
    media_domains: tuple[str, ...] = MEDIA_DOMAINS  # hosts the viewer may load images and videos from

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        def first(names: tuple[str, ...]) -> str | None:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), None)

        base_url = (first(("ARK_BASE_URL",)) or DEFAULT_BASE_URL).rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
            raise ConfigError(f"ARK_BASE_URL must be an http(s) URL such as {DEFAULT_BASE_URL}, got {base_url!r}")
        timeout = first(("ARK_TIMEOUT",))
        try:
            image_timeout = float(timeout) if timeout else DEFAULT_IMAGE_TIMEOUT_SECONDS
        except ValueError:
            image_timeout = 0
        if not 0 < image_timeout <= 3600:
            raise ConfigError(f"ARK_TIMEOUT must be a number of seconds between 1 and 3600, got {timeout!r}")
        allowed_dir = first(("DOUBAO_ALLOWED_DIR",))
        if allowed_dir and not Path(allowed_dir).expanduser().is_dir():
            raise ConfigError(f"DOUBAO_ALLOWED_DIR must be an existing folder, got {allowed_dir!r}")
        for names in (IMAGE_MODEL_ENV, VIDEO_MODEL_ENV):
            if (model := first(names)) and not re.fullmatch(ID_PATTERN, model):
                raise ConfigError(f"{next(n for n in names if env.get(n, '').strip())} must be a model id such as "
                                 f"{SEEDANCE_2_0[0]} or an endpoint id (ep-...), got {model[:100]!r}")
        try:
            api_key = usable_key(first(API_KEY_ENV), "ARK_API_KEY")
        except DoubaoError as error:
            raise ConfigError(str(error)) from None
        extra_domains = tuple(d.strip().rstrip("/") for d in env.get("DOUBAO_MEDIA_DOMAINS", "").split(",") if d.strip())
        for domain in extra_domains:
            if not re.fullmatch(r"https?://(\*\.)?[\w.-]+(:\d+)?", domain):
                raise ConfigError(f"DOUBAO_MEDIA_DOMAINS entries are origins such as https://media.example.com or "
                                 f"https://*.example.com, got {domain!r}")
        state = first(("DOUBAO_STATE_DIR",))
        return cls(
            state_dir=None if (state or "").lower() == "off" else  # a relative one is under home, as DOUBAO_OUTPUT_DIR
            Path.home() / Path(state).expanduser() if state else default_state_dir(env),
            previews=env.get("DOUBAO_PREVIEWS", "1").strip().lower() not in ("0", "false", "no", "off"),
            media_domains=MEDIA_DOMAINS + extra_domains,
            api_key=api_key,
            base_url=base_url,
            image_model=first(IMAGE_MODEL_ENV),
            video_model=first(VIDEO_MODEL_ENV),
            image_timeout=image_timeout,
            output_dir=first(("DOUBAO_OUTPUT_DIR",)),
            allowed_dir=allowed_dir and Path(allowed_dir).expanduser().resolve(),
        )

    @property
    def region(self) -> int:
        """BYTEPLUS on a BytePlus ModelArk host (the same models under other ids), else CHINA."""
        return BYTEPLUS if (urlsplit(self.base_url).hostname or "").endswith(".bytepluses.com") else CHINA

    def models(self, kind: Literal["image", "video"]) -> tuple[str, ...]:
        """The models a call that names none may go to, in order: the DOUBAO_*_MODEL setting alone (never replaced),
        else the region's defaults."""
        setting = self.image_model if kind == "image" else self.video_model
        return (setting,) if setting else DEFAULT_MODELS[kind][self.region]

    def local_path(self, value: str, argument: str) -> Path:
        """A path a tool may read or write, as a person typed or pasted it (quotes and shell escapes removed).

        On stdio the disk is the user's own, so any path will do; a relative one starts where `relative_base`
        says. Over HTTP the disk is not the caller's: nothing, unless DOUBAO_ALLOWED_DIR names a folder. A set
        DOUBAO_ALLOWED_DIR confines every path: `..` is resolved here, and the path is then opened from that folder
        down without following links (see `open_beneath`), or, where that cannot be done, resolved and checked."""
        if self.serving_http and self.allowed_dir is None:
            raise DoubaoError(
                f"{argument}: saving is off because this server is used over HTTP and its disk is not yours; leave it "
                "out and download the result URLs yourself. The operator can allow a folder with DOUBAO_ALLOWED_DIR."
                if argument in ("save_dir", "DOUBAO_OUTPUT_DIR") else
                f"{argument}: local files are off because this server is used over HTTP and its disk is not yours; "
                "pass an https or data: URL. The operator can allow a folder with DOUBAO_ALLOWED_DIR.")
        value = value.strip()
        if "\x00" in value:  # no file system takes one, and Python's file calls raise ValueError on it
            raise DoubaoError(f"{argument}: the path contains a NUL character (\\x00), which no file name can hold: "
                              "give the path as the file manager or the shell shows it.")
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":  # "Copy as path" quotes
            value = value[1:-1].strip()
        if os.name != "nt" and re.match(r"[A-Za-z]:[\\/]|\\\\", value):
            raise DoubaoError(f"{argument}: {value[:200]!r} is a Windows path, but this server runs on "
                              f"{platform.system()}: give a path on this machine, or an https URL.")
        if os.sep == "/":
            value = re.sub(r"\\(.)", r"\1", value)  # a shell's escapes: My\ Pictures is My Pictures
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.relative_base(argument) / path
        path = Path(os.path.normpath(path)) if self.allowed_dir and WALK_BENEATH else path.resolve()
        if self.allowed_dir is not None and not path.is_relative_to(self.allowed_dir):
            raise DoubaoError(f"{argument}: {value[:200]!r} is outside the allowed folder {self.allowed_dir}.")
        return path

    def relative_base(self, argument: str) -> Path:
        """Where a relative path starts: the folder the client started the server in (Claude Code starts servers in
        the project, and its users mean project paths), or, where that is the filesystem root as with Claude
        Desktop, the home folder. DOUBAO_ALLOWED_DIR instead of home when set, and always over HTTP, where the
        server's folders mean nothing to the caller. DOUBAO_OUTPUT_DIR, a setting, is under home."""
        if self.serving_http and self.allowed_dir:
            return self.allowed_dir
        if argument == "DOUBAO_OUTPUT_DIR" or self.working_dir == Path(self.working_dir.anchor):
            return self.allowed_dir or Path.home()
        return self.working_dir

    @staticmethod
    def caller_key(headers: Mapping[str, str] | None) -> str:
        """The Ark key a caller sent with its HTTP request, or "". X-API-Key wins over Authorization: a gateway in
        front of the server may use Authorization for its own token."""
        headers = headers or {}
        bearer = headers.get("authorization", "")
        return headers.get("x-api-key", "").strip() or (bearer[7:].strip() if bearer[:7].lower() == "bearer " else "")

    def api_key_for(self, headers: Mapping[str, str] | None) -> str:
        """The caller's own Ark key from its HTTP request headers, else the server's."""
        key = self.caller_key(headers)
        if key or self.api_key:
            return usable_key(key, "Your API key header") or self.api_key
        raise DoubaoError(
            "No Ark API key: send yours with the request as 'Authorization: Bearer <Ark API key>' or "
            "'X-API-Key: <Ark API key>', or have the operator set ARK_API_KEY." if self.serving_http else
            "No Ark API key: set ARK_API_KEY in this server's environment (the \"env\" block of your MCP client "
            "config). Create a key in the Ark console under API Key management.")


# --- Argument types: what each tool argument takes, checked before anything is sent -------------------------------


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain text")
    return value

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"  # model, endpoint and task ids alike; never a path


def _model_id(value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value):
        raise ValueError("must be an Ark model id (e.g. doubao-seedream-4-5-251128) or endpoint id (ep-...)")
    return value


def _task_id(value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value) or ".." in value:
        raise ValueError("must be a task id returned by generate_video, e.g. cgt-20250331175019-6htr8")
    return value


def _image_size(value: str) -> str:
    """Any size some model could take, in Ark's spelling (2K, 1.5K, auto, 2048x2048); the table checks the model's."""
    value = value.strip()
    if re.fullmatch(r"\d(\.5)?[kK]", value):
        return value.upper()
    if value.lower() in ("auto", "adaptive"):
        return value.lower()
    match = re.fullmatch(r"(\d{1,5}) ?[xX×*] ?(\d{1,5})", value)
    if not match:
        raise ValueError("must be a named size such as 2K, 1.5K, auto or adaptive, or WIDTHxHEIGHT such as 2048x2048")
    width, height = int(match[1]), int(match[2])
    low, high = SIZE_SIDE_PIXELS
    if not (low <= width <= high and low <= height <= high) or max(width / height, height / width) > 16:
        raise ValueError(f"WIDTHxHEIGHT needs sides of {low} to {high} pixels and an aspect ratio within 16:1")
    return f"{width}x{height}"


def _duration(value: int) -> int:
    if value != -1 and not ANY_DURATION_SECONDS[0] <= value <= ANY_DURATION_SECONDS[1]:
        raise ValueError(f"must be seconds ({ANY_DURATION_SECONDS[0]}-{ANY_DURATION_SECONDS[1]}; each model takes its own range), "
                         "or -1 to let the model choose")
    return value


def _frames(value: int) -> int:
    if (value - 25) % 4 or not 29 <= value <= MAX_FRAMES:
        raise ValueError("must be of the form 25 + 4n: 29, 33, ... 289")
    return value


def _callback_url(value: str) -> str:
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ValueError("must be an http(s) URL")
    return value


def _at_most(most: int) -> Callable[[list[Any]], list[Any]]:
    """A sanity bound validated but not published: it tells a model nothing the tool description does not."""
    def check(values: list[Any]) -> list[Any]:
        if len(values) > most:
            raise ValueError(f"takes at most {most} items")
        return values
    return check


def _optional(check: Any) -> AfterValidator:
    """Run `check` on a given value; None means the argument was left out."""
    return AfterValidator(lambda value: value if value is None else check(value))

Prompt = Annotated[str, Field(max_length=PROMPT_MAX_CHARS), AfterValidator(_nonblank)]

ModelId = Annotated[str | None, _optional(_model_id)]

TaskId = Annotated[str, Field(description="Task id from generate_video."), AfterValidator(_task_id)]

MEDIA_FORMS = "https URL, data URL, asset:// id or file path"

MediaArg = Annotated[str | None, Field(description=MEDIA_FORMS + ".")]

MediaList = Annotated[list[str] | None, _optional(_at_most(MAX_REFERENCES_PER_LIST))]

SaveDir = Annotated[str | None, Field(description="Folder to save results in (default DOUBAO_OUTPUT_DIR).")]

WaitSeconds = Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for the video, "
                                     "with progress.")]

# A reply must arrive before the 60 s timeout of many clients, or the new task's id is never seen.
StartWait = Annotated[float, Field(ge=0, le=START_WAIT_SECONDS, description="Seconds to wait for the video, with "
                                   "progress; then query_video_task.")]


EXTRA = "Other Ark fields, sent as is, e.g. {examples}."
Extra = dict[str, Any] | None


# --- Rules and request bodies: which model a call goes to, what it may ask, what Ark is sent ----------------------


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:.0f} bytes"


def family_of(model: str, table: Mapping[str, T]) -> tuple[str, T | None]:
    """The model's name for messages (its id without the date stamp) and its row, or None for an id the
    table does not know: an endpoint id, or a model newer than this release."""
    return re.sub(r"-\d{6}$", "", model), table.get(family_key(model))


def family_key(model: str) -> str:
    """A model's family: its id without its `doubao-` / `dreamina-` / `dola-` prefix and `-YYMMDD` date stamp."""
    return re.sub(r"^(doubao|dreamina|dola)-", "", re.sub(r"-\d{6}$", "", model).lower())


@dataclass(frozen=True)
class VideoAsk:
    """What a generate_video call asks of a model, as the table's rules read it."""

    media: Mapping[str, int]  # how many items each media argument (first_frame, reference_images, ...) has
    prompt: bool = True
    draft_task_id: bool = False
    duration: int | None = None
    frames: int | None = None
    resolution: str | None = None
    ratio: str | None = None
    draft: bool = False
    generate_audio: bool = False
    web_search: bool = False
    task_type: str = ""  # extra.omni_reference_task_type
    output_format: str = ""  # extra.output_format


@dataclass(frozen=True)
class ImageAsk:
    """What a generate_image call asks of a model, as the table's rules read it."""

    images: int = 0
    size: str | None = None
    max_images: int | None = None
    web_search: bool = False
    background: str | None = None

# A rule of a family: (what another model would have to take for the call to work there, or None where no other
# model is the answer; whether this call breaks it; what to say).
Rule = tuple[str | None, Any, str]


def _over(argument: str, count: int, most: int, what: str, shown: str) -> Rule:
    return (f"{count} {argument}", count > most, f"{argument}: {shown} takes no {what}." if most == 0 else
            f"{argument}: {count} {what} is over {shown}'s {most}.")


def video_rules(ask: VideoAsk, family: VideoFamily, shown: str, sure: bool = False) -> list[Rule]:
    """Every rule of a VIDEO_MODELS row, for this call. (`sure` is for symmetry with `image_rules`: no video
    capability is unclear.)"""
    media = ask.media
    frames_given = media["first_frame"] + media["last_frame"]
    images, videos, audios = media["reference_images"], media["reference_videos"], media["reference_audios"]
    references = images + videos + audios
    (low, high), seconds = family.durations, ask.duration if ask.duration not in (None, -1) else None
    editing = ask.task_type.lower().startswith(("edit", "extend")) and family.omni
    not_adaptive = ask.ratio not in (None, "adaptive")
    draft = "draft" + (f" at {ask.resolution}" if ask.resolution else "")  # one label: "takes" means takes it all
    web_search = "web_search" + (" with references" if frames_given or references else "")
    return [
        ("duration -1", ask.duration == -1 and not family.auto_duration,
         f"duration -1 (the model chooses) is not something {shown} takes: give {low}-{high} s."),
        (f"duration {seconds}", seconds is not None and not low <= seconds <= high,
         f"duration {seconds} is {'over' if (seconds or 0) > high else 'under'} {shown}'s {low}-{high} s."),
        (f"resolution {ask.resolution}", ask.resolution and ask.resolution not in family.resolutions,
         f"resolution {ask.resolution} is not one {shown} makes: {', '.join(family.resolutions)}."),
        ("frames", ask.frames is not None and not family.frames, f"frames: {shown} takes duration, not frames."),
        (draft, ask.draft and not family.drafts, f"draft: {shown} makes no drafts."),
        ("draft_task_id", ask.draft_task_id and not family.drafts, f"draft_task_id: {shown} makes no drafts."),
        (draft, ask.draft and family.drafts and ask.resolution and
         ask.resolution not in family.drafts,
         f"draft: {shown} makes drafts at {', '.join(family.drafts)} only, not {ask.resolution}."),
        ("generate_audio", ask.generate_audio and not family.audio, f"generate_audio: {shown} makes silent videos."),
        (web_search, ask.web_search and family.web_search == "no", f"web_search: {shown} cannot search the web."),
        (web_search, ask.web_search and family.web_search == "text-to-video" and
         (frames_given or references),
         f"web_search: {shown} searches the web only for text-to-video, with no images, videos or audios."),
        ("first_frame", frames_given and not family.first_frame, f"first_frame: {shown} makes videos from text only."),
        ("last_frame", media["last_frame"] and family.first_frame and not family.last_frame,
         f"last_frame: {shown} takes a first frame but no last frame."),
        (None, not (frames_given or references or ask.draft_task_id or family.text_only),
         f"{shown} needs an image: give first_frame or reference_images."),
        _over("reference_images", images, family.refs[0], "images", shown),
        _over("reference_videos", videos, family.refs[1], "videos", shown),
        _over("reference_audios", audios, family.refs[2], "audios", shown),
        (f"{references} references", family.total_refs and references > family.total_refs,
         f"{references} references in all is over {shown}'s {family.total_refs}."),
        ("reference_audios alone", audios and not (images or videos) and not family.audio_alone,
         f"reference_audios: {shown} needs a reference image or video beside them."),
        (None, not ask.prompt and not ask.draft_task_id and not family.prompt_optional,
         f"prompt is required for {shown}."),
        (None, family.omni and frames_given and not_adaptive,
         f"ratio: {shown} animates first and last frames at ratio adaptive only: pass adaptive or leave ratio out."),
        (None, editing and not videos,
         f"extra.omni_reference_task_type {ask.task_type}: {shown} needs the video in reference_videos."),
        (None, editing and not_adaptive,
         f"ratio: {shown} edits and extends videos at ratio adaptive only: pass adaptive or leave ratio out."),
        (None, editing and ask.task_type.lower().startswith("edit") and seconds is not None,
         f"duration: an edit keeps its video's length on {shown}: give -1 or leave duration out."),
        ("output_format mov", ask.output_format.lower() == "mov" and not family.omni,
         f"output_format mov: {shown} makes mp4 only."),
    ]


def image_rules(ask: ImageAsk, family: ImageFamily, shown: str, sure: bool = False) -> list[Rule]:
    """Every rule of an IMAGE_MODELS row, for this call. `sure`: an unclear capability counts as missing (a default
    is chosen only where the table is sure; an explicit model is refused only where it is sure)."""
    size = ask.size
    named = size is not None and "x" not in size
    pixels = 0 if size is None or named else math.prod(map(int, size.split("x")))
    low, high = family.pixels or (0, 0)
    least, most = family.refs
    lacks = (lambda capability: capability is not True) if sure else (lambda capability: capability is False)
    return [
        (f"size {size}", size and (size not in family.sizes if named else family.pixels is None),
         f"size {size} is not one {shown} makes: {', '.join(family.sizes)}{' or WIDTHxHEIGHT' if family.pixels else ''}."),
        (f"size {size}", pixels and family.pixels and not low <= pixels <= high,
         f"size {size} has {pixels / 1e6:.2f} MP; {shown} makes {low / 1e6:.2f}-{high / 1e6:.2f} MP (e.g. 2048x2048)."),
        (None, ask.images < least, f"images: {shown} needs {'exactly' if least == most else 'at least'} {least} "
                                   f"reference image{'s' if least > 1 else ''}."),
        _over("images", ask.images, most, "reference images", shown),
        (f"max_images {ask.max_images}", ask.max_images and ask.max_images > 1 and lacks(family.sets),
         f"max_images: {shown} makes single images, not sets."),
        ("web_search", ask.web_search and lacks(family.web_search), f"web_search: {shown} cannot search the web."),
        (f"background {ask.background}", ask.background and lacks(family.background),
         f"background: {shown} takes no background setting."),
    ]

RULES = {"image": (IMAGE_MODELS, image_rules), "video": (VIDEO_MODELS, video_rules)}


def family_row(kind: Literal["image", "video"], model: str) -> Any:
    """The model's VideoFamily or ImageFamily, or None for an id the table does not know."""
    return family_of(model, RULES[kind][0])[1]


def lifecycle_of(kind: Literal["image", "video"], model: str, region: int) -> Lifecycle | None:
    lifecycle = getattr(family_row(kind, model), "lifecycle", None)
    return lifecycle if lifecycle and region in lifecycle.regions else None


def problems(kind: Literal["image", "video"], model: str, ask: Any, sure: bool = False) -> list[tuple[str | None, str]]:
    """The (label, message) of each table rule this call breaks on `model`; none for a model the table does not know."""
    table, rules = RULES[kind]
    shown, family = family_of(model, table)
    return [] if family is None else [(label, text) for label, broken, text in rules(ask, family, shown, sure) if broken]


def check_model(kind: Literal["image", "video"], model: str, ask: Any, region: int = CHINA) -> None:
    """Refuse a call its model's row rules out, naming for each broken rule a current model that takes it."""
    broken = problems(kind, model, ask)
    current = DEFAULT_MODELS[kind][region]
    if broken:
        raise DoubaoError(" ".join(_elsewhere(kind, model, ask, label, text, current, region) for label, text in broken))


def _elsewhere(kind: Literal["image", "video"], model: str, ask: Any, label: str | None, text: str,
               current: Iterable[str], region: int) -> str:
    """A refusal, with a known current model of another family that takes what this one does not: where a model
    looks when it has to change something."""
    own = family_row(kind, model)
    other = label and next((candidate for candidate in current if family_row(kind, candidate) not in (None, own)
                            and not lifecycle_of(kind, candidate, region)
                            and label not in {seen for seen, _ in problems(kind, candidate, ask, sure=True)}), None)
    return f"{text.rstrip('.')}; {other} takes {label}." if other else text


def check_any_video(ask: VideoAsk) -> None:
    """The rules every video model shares, known to the table or not."""
    media = ask.media
    frames_given = media["first_frame"] + media["last_frame"]
    references = media["reference_images"] + media["reference_videos"] + media["reference_audios"]
    if media["last_frame"] and not media["first_frame"]:
        raise DoubaoError("last_frame needs first_frame: Seedance animates from a first frame to a last one.")
    if frames_given and references:
        raise DoubaoError("Use either first_frame/last_frame or reference images, videos and audios, not both.")
    if ask.duration is not None and ask.frames is not None:
        raise DoubaoError("Give duration or frames, not both (frames overrides duration at Ark).")
    if ask.draft_task_id and (frames_given or references or ask.draft):
        raise DoubaoError("draft_task_id renders an existing draft: give no images, videos, audios or draft with it.")
    if not ask.prompt and not (ask.draft_task_id or frames_given or references):
        raise DoubaoError("prompt is required: describe the video, or give images, videos or a draft_task_id to "
                          "work from.")


def check_any_image(ask: ImageAsk) -> None:
    """The rules every image model shares, known to the table or not."""
    if ask.max_images and ask.max_images > 1 and ask.images + ask.max_images > MAX_SET_IMAGES:
        raise DoubaoError(f"images plus max_images may total {MAX_SET_IMAGES} at most, got {ask.images} + {ask.max_images}.")


class Choice(NamedTuple):
    """The models a call may go to, in order, and where they come from."""

    models: tuple[str, ...]
    source: Literal["argument", "setting", "default"]  # only defaults are ever replaced by the next one


def candidates(kind: Literal["image", "video"], ask: Any, config: Config, model: str | None) -> Choice:
    """The models this call may go to, after refusing what none of them could take. An explicit model or a
    DOUBAO_*_MODEL setting is the only one; else the region's defaults known to take the call, best first."""
    (check_any_image if kind == "image" else check_any_video)(ask)
    allowed = (model,) if model else config.models(kind)
    if len(allowed) == 1:
        check_model(kind, allowed[0], ask, config.region)
        return Choice(allowed, "argument" if model else "setting")
    fitting = tuple(m for m in allowed if not problems(kind, m, ask, sure=True))
    if not fitting:  # what the first default would say, with where to go instead
        check_model(kind, allowed[0], ask, config.region)
        raise DoubaoError(f"No default {kind} model is known to take this call: pass model, or set "
                          f"DOUBAO_{kind.upper()}_MODEL, to one that does.")
    return Choice(fitting, "default")


def model_unavailable(error: ArkAPIError) -> bool:
    """Ark's answer that this account cannot use the model: retired, or never activated. It bills nothing, so the next
    default may be tried. Any other answer, a timeout or a dropped connection may mean the work was done."""
    code = error.code or ""
    return 400 <= error.status < 500 and error.status != 429 and (
        "ModelNotOpen" in code or code.startswith("InvalidEndpointOrModel"))


class ModelMemory:
    """The default models Ark said each key cannot use, kept for the rest of the process, so that the next call goes
    straight to the one that worked. Only an order, never a refusal: when nothing else takes a call they are tried
    again, since the account may have activated them since. Bounded: over HTTP every caller brings a key."""

    def __init__(self, keys: int = 1024):
        self.keys = keys
        self.unusable: collections.OrderedDict[str | None, set[str]] = collections.OrderedDict()  # by fingerprint
        self.lock = threading.Lock()

    def order(self, api_key: str, models: Iterable[str]) -> list[str]:
        with self.lock:
            unusable = set(self.unusable.get(key_fingerprint(api_key), ()))
        return sorted(models, key=lambda model: model in unusable)  # stable: the table's order otherwise

    def learn(self, api_key: str, model: str, usable: bool) -> None:
        slot = key_fingerprint(api_key)  # no key is kept here
        with self.lock:
            unusable = self.unusable.setdefault(slot, set())
            self.unusable.move_to_end(slot)
            (unusable.discard if usable else unusable.add)(model)
            while len(self.unusable) > self.keys:
                self.unusable.popitem(last=False)


def unavailable(skipped: list[tuple[str, str]]) -> str:
    """"a and b are not available to this account (why)", one clause per reason, in the order tried."""
    reasons = dict.fromkeys(why for _, why in skipped)
    clauses = []
    for why in reasons:
        names = [model for model, reason in skipped if reason == why]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        clauses.append(f"{listed} {'are' if len(names) > 1 else 'is'} not available to this account ({why})")
    return "; ".join(clauses)


def first_usable(kind: Literal["image", "video"], choice: Choice, send: Callable[[str], T], memory: ModelMemory,
                 api_key: str, region: int) -> tuple[T, str, list[tuple[str, str]]]:
    """Send to the first model this account can use: (Ark's answer, the model, each (model, why) skipped before it).
    Falls through only among defaults, and only on Ark's "cannot use this model" answer, which bills nothing.
    Runs on a worker thread."""
    skipped: list[tuple[str, str]] = []
    for model in memory.order(api_key, choice.models) if choice.source == "default" else choice.models:
        try:
            answer = send(model)
        except ArkAPIError as error:
            lifecycle = lifecycle_of(kind, model, region)
            if choice.source != "default" or not model_unavailable(error):
                if choice.source != "default" and model_unavailable(error):
                    instead = "pass" if choice.source == "argument" else f"set DOUBAO_{kind.upper()}_MODEL to"
                    error.hint = (f"Activate {model} in the Ark console (Model activation), or {instead} a model or "
                                  "endpoint id your account has.")
                if lifecycle and 400 <= error.status < 500 and error.status not in (401, 429):
                    error.hint = " ".join(filter(None, [lifecycle.advice(region), error.hint]))
                raise
            memory.learn(api_key, model, usable=False)
            skipped.append((model, lifecycle.status if lifecycle and lifecycle.retired else f"Ark says {error.code}"))
            continue
        memory.learn(api_key, model, usable=True)
        return answer, model, skipped
    raise DoubaoError(f"No default {kind} model that takes this call is available: {unavailable(skipped)}. Activate "
                      f"one in the Ark console (Model activation), or pass model (or set DOUBAO_{kind.upper()}_MODEL) "
                      "to a model or endpoint id your account has.")


def model_note(kind: Literal["image", "video"], model: str, skipped: list[tuple[str, str]], region: int) -> str | None:
    """What a result says of its model: the defaults skipped on the way to it, and its lifecycle when Ark is
    retiring it."""
    lifecycle = lifecycle_of(kind, model, region)
    parts = [f"{unavailable(skipped)}: used {model}." if skipped else "", lifecycle.advice(region) if lifecycle else ""]
    return " ".join(filter(None, parts)) or None


def sniff(head: bytes) -> tuple[str, str] | None:
    """(MIME type, extension) of a file from its first bytes, or None if it is none we know."""
    return next(((mime, ext) for offset, magic, mime, ext in FILE_SIGNATURES
                 if head[offset:offset + len(magic)] == magic), None)


def load_media(ref: str, argument: str, kind: str, config: Config) -> str:
    """One image, video or audio argument as Ark takes it: URLs and asset ids pass through, a local file
    becomes a data URL. Runs on a worker thread: it reads files, where `config` allows."""
    max_bytes, what = MEDIA[kind]
    mime_kind = "image" if kind == "frame" else kind
    ref = ref.strip()
    parts = urlsplit(ref)
    if parts.scheme in ("http", "https") and parts.netloc:
        return ref
    if parts.scheme == "asset":
        if not re.fullmatch(r"asset://[\w.:-]{1,200}", ref):
            raise DoubaoError(f"{argument}: {ref[:80]!r} is not an asset id such as asset://asset-2026...")
        return ref
    if kind == "video":
        raise DoubaoError(f"{argument}: Ark takes reference videos only as https URLs or asset:// ids, not as files "
                          "or data URLs: upload the video somewhere Ark can fetch it.")
    if parts.scheme == "data":
        if not re.match(rf"data:{mime_kind}/[\w.+-]+;base64,", ref):
            raise DoubaoError(f"{argument}: a data URL must look like data:{mime_kind}/"
                              f"{'png' if mime_kind == 'image' else 'wav'};base64,....")
        if (len(ref) - ref.index(",") - 1) * 3 // 4 > max_bytes:
            raise DoubaoError(f"{argument}: the data URL's file is over Ark's {_size(max_bytes)} limit.")
        return ref
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DoubaoError(f"{argument}: {ref[:200]!r} points at another machine; use a local path.")
        ref = url2pathname(unquote(parts.path))
    elif len(parts.scheme) > 1:  # one letter is a Windows drive (C:\...), not a scheme
        raise DoubaoError(f"{argument}: {ref[:80]!r} is not an https URL, a data URL, an asset:// id or a file path.")
    path = config.local_path(ref, argument)
    data = read_input(path, config.allowed_dir, argument, max_bytes, what)
    mime = (sniff(data[:16]) or ("", ""))[0]
    if not mime.startswith(mime_kind + "/"):
        raise DoubaoError(f"{argument}: {path} is not {what}.")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def load_inputs(refs: Iterable[tuple[str, str, str | None]], config: Config) -> list[str | None]:
    """`load_media` for (argument, kind, value) triples, keeping None for absent ones, and refusing a set of
    inline files that would not fit in one Ark request."""
    loaded, inline = [], 0
    for argument, kind, ref in refs:
        loaded.append(ref and load_media(ref, argument, kind, config))
        inline += len(loaded[-1]) if loaded[-1] and loaded[-1].startswith("data:") else 0
        if inline > REQUEST_MAX_BYTES:
            raise DoubaoError(f"The inline files add up to over {_size(REQUEST_MAX_BYTES)} of base64, Ark's limit for "
                              "a whole request: pass some as https URLs or asset:// ids.")
    return loaded


def output_dir(save_dir: str | None, config: Config) -> Folder | None:
    """The folder to save results in (the argument, else DOUBAO_OUTPUT_DIR), made when missing, checked and held
    open before anything is generated. Errors name where the folder came from."""
    argument = "save_dir" if save_dir else "DOUBAO_OUTPUT_DIR"
    save_dir = save_dir or config.output_dir
    return open_folder(config.local_path(save_dir, argument), config.allowed_dir, argument) if save_dir else None


def _with(task: Mapping[str, Any], **fields: Any) -> Any:
    """The task with these fields set, next_step kept last: it is what to read after the rest."""
    rest = {key: value for key, value in task.items() if key not in fields and key != "next_step"}
    step = {"next_step": task["next_step"]} if "next_step" in task and "next_step" not in fields else {}
    return {**rest, **fields, **step}


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    """Ark treats an absent field as "use the model's default"; a null would be a 400."""
    return {k: v for k, v in mapping.items() if v is not None}


def check_extra(extra: dict[str, Any] | None, arguments: Iterable[str]) -> dict[str, Any]:
    """Other official Ark fields, sent as given; never one that would override what the tool builds."""
    extra = extra or {}
    reserved = {**BUILT_FIELDS, **{name: f"use the {name} argument" for name in arguments}}
    clashes = [f"{key!r} is built by this tool: {reserved[key]}" if reserved[key] else
               f"{key!r} is not supported: this server reads Ark's whole answer, with URLs"
               for key in extra if key in reserved]
    if clashes:
        raise DoubaoError(f"extra: {'; '.join(clashes)}.")
    return extra


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def image_request(prompt: str, model: str, images: list[str], size: str | None, max_images: int | None,
                  web_search: bool | None, extra: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "size": size, **parameters}
    if images:
        # SeedEdit takes exactly one image as a string; Seedream 4.x and later take a list.
        body["image"] = images[0] if len(images) == 1 else images
    if max_images and max_images > 1:
        body["sequential_image_generation"] = "auto"
        body["sequential_image_generation_options"] = {"max_images": max_images}
    if web_search:
        body["tools"] = [{"type": "web_search"}]
    return {**_compact(body), **extra}


def video_request(model: str, prompt: str | None, media: Iterable[tuple[str, str, str]], draft_task_id: str | None,
                  web_search: bool | None, extra: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    """A task body: the prompt, each (kind, role, url) medium and a draft as content items, every parameter as a
    top-level field (Ark validates those strictly, unlike the old `--rs 720p` prompt flags)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}] if prompt else []
    content += [{"type": f"{kind}_url", f"{kind}_url": {"url": url}, "role": role} for kind, role, url in media]
    if draft_task_id:
        content.append({"type": "draft_task", "draft_task": {"id": draft_task_id}})
    tools = {"tools": [{"type": "web_search"}]} if web_search else {}
    return {"model": model, "content": content, **_compact(parameters), **tools, **extra}


class Filters(NamedTuple):
    """What a task list is filtered by, besides task ids."""

    status: str | None
    model: str | None
    service_tier: str | None


NO_FILTERS = Filters(None, None, None)


def list_query(status: str | None, model: str | None, service_tier: str | None, task_ids: list[str],
               page_num: int | None, page_size: int | None) -> list[tuple[str, Any]]:
    """Query pairs, not a dict: Ark wants `filter.task_ids` repeated once per id."""
    pairs = [("page_num", page_num), ("page_size", page_size), ("filter.status", status), ("filter.model", model),
             ("filter.service_tier", service_tier)]
    return [(k, v) for k, v in pairs if v is not None] + [("filter.task_ids", t) for t in task_ids]


# --- Result shaping: what a caller gets back, every upstream string cleaned and bounded ---------------------------

# Output types. Fields marked Unlisted are validated like the rest but left out of the published output
# schema: Ark's echo of a request (resolution, seed, ...) costs every conversation tokens in tools/list and tells a
# caller nothing it acts on. `additionalProperties` says they may appear; docs/tools.md lists them.
Unlisted = SkipJsonSchema

OPEN = ConfigDict(json_schema_extra={"additionalProperties": True})


class SavedFile(TypedDict):
    path: str
    bytes: int
    missing: NotRequired[Unlisted[bool]]  # the record knew this file, and it is no longer there
    sha256: NotRequired[Unlisted[str]]
    kind: NotRequired[Unlisted[str]]  # video, last_frame or image: what it is, never read from its name
    index: NotRequired[Unlisted[int]]  # an image's place in its result


class SaveError(TypedDict):
    source: str
    error: str


@with_config(OPEN)
class ImageOut(TypedDict):
    index: int
    url: NotRequired[str]
    size: NotRequired[str]
    name: NotRequired[Unlisted[str]]  # name, description, z_index, bounding_box: a layer of a layer decomposition
    description: NotRequired[Unlisted[str]]
    z_index: NotRequired[Unlisted[int]]
    bounding_box: NotRequired[Unlisted[dict[str, Any]]]


class ImageError(TypedDict):
    index: int
    code: str
    message: str


@with_config(OPEN)
class ImageResult(TypedDict):
    model: NotRequired[str]
    created_at: NotRequired[Unlisted[str]]
    images: list[ImageOut]
    errors: list[ImageError]
    usage: NotRequired[dict[str, Any]]
    saved_files: NotRequired[list[SavedFile]]
    save_errors: NotRequired[list[SaveError]]
    note: str


@with_config(OPEN)
class ListedTask(TypedDict):
    task_id: str
    status: str
    model: NotRequired[str]
    video_url: NotRequired[str]
    last_frame_url: NotRequired[str]
    error_code: NotRequired[str]
    error_message: NotRequired[str]
    created_at: NotRequired[Unlisted[str]]
    updated_at: NotRequired[Unlisted[str]]
    resolution: NotRequired[Unlisted[str]]
    ratio: NotRequired[Unlisted[str]]
    duration: NotRequired[Unlisted[int]]
    frames: NotRequired[Unlisted[int]]
    fps: NotRequired[Unlisted[int]]
    seed: NotRequired[Unlisted[int]]
    service_tier: NotRequired[Unlisted[str]]
    revised_prompt: NotRequired[Unlisted[str]]
    draft: NotRequired[Unlisted[bool]]
    draft_task_id: NotRequired[Unlisted[str]]
    generate_audio: NotRequired[Unlisted[bool]]
    output_format: NotRequired[Unlisted[str]]
    execution_expires_after: NotRequired[Unlisted[int]]
    usage: NotRequired[dict[str, Any]]
    saved_files: NotRequired[list[SavedFile]]
    save_errors: NotRequired[list[SaveError]]


@with_config(OPEN)
class VideoTask(ListedTask):
    note: NotRequired[Unlisted[str]]  # the model: defaults skipped on the way to it, or its retirement
    estimate_seconds: NotRequired[Unlisted[int]]  # an unfinished task: about how long it takes, from its creation
    next_step: str  # what to do now; a listing leaves it out, as it would say the same for every task


class TaskList(TypedDict):
    total: int
    tasks: list[ListedTask]


class CancelResult(TypedDict):
    task_id: str
    previous_status: str
    outcome: Literal["cancelled", "deleted"]
    message: str


def _text(value: Any, limit: int = NAME_MAX_CHARS) -> str | None:
    """A string from upstream as it may go into a result: control characters, zero-width characters and bidi
    overrides replaced, whitespace collapsed, and at most `limit` characters."""
    if not isinstance(value, str):
        return None
    text = " ".join(UNSAFE_CHARACTERS.sub(" ", value[: 2 * limit]).split())  # cleaning may shorten it: cap after
    return (text[: limit - 1] + "…" if len(text) > limit else text) or None


def _url(value: Any) -> str | None:
    """Only an http(s) URL a client can open goes into a result."""
    if not isinstance(value, str) or len(value) > URL_MAX_CHARS or UNSAFE_CHARACTERS.search(value) or " " in value:
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63 else None


def _number(value: Any) -> int | float | None:
    return _int(value) if isinstance(value, int) else value if isinstance(value, float) and math.isfinite(value) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _time(value: Any) -> str | None:
    """Ark sends Unix seconds; an ISO string is easier for a model and a person to read."""
    if _int(value) is not None and 0 <= value < 2**33:
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _text(value)


def _numbers(value: Any, nested: bool = True) -> dict[str, Any] | None:
    """A small object of numbers, as Ark's usage and bounding boxes are: at most 32 keys, one level of nesting
    (`tool_usage: {"web_search": 1}`) and lists of up to 8 numbers; anything else is dropped."""
    if not isinstance(value, dict):
        return None
    kept: dict[str, Any] = {}
    for key, item in itertools.islice(value.items(), 32):
        if isinstance(item, dict):
            item = _numbers(item, False) if nested else None
        elif isinstance(item, list):
            item = item if len(item) <= 8 and all(_number(n) is not None for n in item) else None
        else:
            item = _number(item)
        if item is not None:
            kept[_text(key) or "?"] = item
    return kept or None


def _unreadable(what: str, body: Any) -> ArkConnectionError:
    excerpt = reprlib.Repr()  # bounded, however deep or large the body
    excerpt.maxlevel, excerpt.maxstring, excerpt.maxother, excerpt.maxdict, excerpt.maxlist = 3, 80, 80, 6, 6
    return ArkConnectionError(f"Ark answered with {what} this server cannot read: {_text(excerpt.repr(body))!r}.")


def _task_id_of(item: dict[str, Any]) -> str | None:
    """A task id a caller can pass back: Ark's own form, never a path or a 1 MB string."""
    task_id = item.get("id")
    return task_id if isinstance(task_id, str) and re.fullmatch(ID_PATTERN, task_id) and ".." not in task_id else None


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
        if isinstance(error, dict) or not (_url(item.get("url")) or isinstance(item.get("b64_json"), str)):
            error = error if isinstance(error, dict) else {}
            errors.append(ImageError(index=index, code=_text(error.get("code")) or "NoImage",
                                     message=_text(error.get("message"), MESSAGE_MAX_CHARS) or "Ark returned no image "
                                     "here (or one at an address that is not http(s))."))
        else:  # an inline b64_json image is never put in the result: it would flood the model's context
            images.append(ImageOut(index=index, **_compact({
                "url": _url(item.get("url")), "size": _text(item.get("size")), "name": _text(item.get("name")),
                "description": _text(item.get("description"), MESSAGE_MAX_CHARS), "z_index": _int(item.get("z_index")),
                "bounding_box": _numbers(item.get("bounding_box"))})))
    return ImageResult(**_compact({  # in the order a reader wants them: what made it, what came, what to do
        "model": _text(body.get("model")), "created_at": _time(body.get("created", body.get("created_at"))),
        "images": images, "errors": errors, "usage": _numbers(body.get("usage")), "note": URL_LIFETIME_NOTE}))


def _failed_step(code: Any) -> str | None:
    """A failed task's advice reads Ark's error code as an error answer's does."""
    hint = code_hint(_text(code))
    return hint and f"Generation failed: {hint}"


def shape_task(item: Any, asked_for: str | None = None) -> VideoTask:
    """Ark's task record, flattened to what a caller acts on, every field cleaned and bounded. Accepts both
    documented error field names. A record for another task than the one `asked_for` is never passed on."""
    if not isinstance(item, dict) or not _task_id_of(item) or not _text(item.get("status")):
        raise _unreadable("a task record without a task id or status", item)
    task_id, status = item["id"], _text(item["status"])
    if asked_for and task_id != asked_for:
        raise ArkConnectionError(f"Ark answered with the record of task {task_id!r} when asked for {asked_for!r}: "
                                 "not passed on. Try again; if it persists, ARK_BASE_URL is not Ark.")
    content = item.get("content") if isinstance(item.get("content"), dict) else {}
    error = item.get("error") or item.get("failure_reason")
    error = error if isinstance(error, dict) else {"message": error}
    return VideoTask(task_id=task_id, status=status, **_compact({
        "model": _text(item.get("model")),
        "video_url": _url(content.get("video_url")),
        "last_frame_url": _url(content.get("last_frame_url")),
        "error_code": _text(error.get("code")),
        "error_message": _text(error.get("message"), MESSAGE_MAX_CHARS),
        "created_at": _time(item.get("created_at")),
        "updated_at": _time(item.get("updated_at")),
        "resolution": _text(item.get("resolution")),
        "ratio": _text(item.get("ratio")),
        "duration": _int(item.get("duration")),
        "frames": _int(item.get("frames")),
        "fps": _int(item.get("framespersecond", item.get("fps"))),
        "seed": _int(item.get("seed")),
        "service_tier": _text(item.get("service_tier")),
        "revised_prompt": _text(item.get("revised_prompt"), MESSAGE_MAX_CHARS),
        "draft": _bool(item.get("draft")),
        "draft_task_id": _text(item.get("draft_task_id")),
        "generate_audio": _bool(item.get("generate_audio")),
        "output_format": _text(item.get("output_format")),
        "execution_expires_after": _int(item.get("execution_expires_after")),
        "usage": _numbers(item.get("usage")),
    }), next_step=(status == "failed" and _failed_step(error.get("code"))
                   or NEXT_STEP.get(status, "Call query_video_task again later.").format(task_id=task_id)))


def shape_items(items: Any) -> list[VideoTask]:
    """The tasks of a list answer that can be read: one malformed item does not hide the others."""
    shaped = []
    for item in items if isinstance(items, list) else []:
        try:
            shaped.append(shape_task(item))
        except DoubaoError as error:
            log.warning("Left out an item of Ark's task list: %s", error)
    return shaped


def shape_task_list(body: dict[str, Any], asked_for: Iterable[str] = ()) -> TaskList:
    """Ark's list, each task shaped; when particular tasks were asked for, no other is passed on."""
    items = body.get("items")
    if items is None and _int(body.get("total")) == 0:
        items = []
    if not isinstance(items, list):
        raise _unreadable("a task list without an items list", body)
    wanted = set(asked_for)
    shaped = shape_items(items)
    tasks = [ListedTask(**{k: v for k, v in task.items() if k != "next_step"})  # type: ignore[typeddict-item]
             for task in shaped if not wanted or task["task_id"] in wanted]
    return TaskList(total=len(tasks) if wanted else _int(body.get("total")) or len(tasks), tasks=tasks)


def with_record(task: Any, known: TaskFiles) -> Any:
    """A task with what the record holds of its saving: its files, and a background save that failed."""
    fields: dict[str, Any] = {"saved_files": known.files} if known.files else {}
    if known.error and not known.complete and task["status"] == "succeeded":
        fields["save_errors"] = [SaveError(source="saving in the background", error=known.error)]
        if "next_step" in task:
            fields["next_step"] = (f"Saving it in the background failed: {known.error[:300]} Call query_video_task "
                                   "with save_dir to try again.")
    return _with(task, **fields)


def make_preview(data: bytes) -> bytes:
    """A JPEG preview of an image: at most PREVIEW_SIDE_PIXELS pixels on its longest side and about PREVIEW_MAX_BYTES.
    Its size is read from its header and checked before anything is decoded (Pillow's own bomb check only warns up
    to twice its limit), and one image is decoded at a time, so that an answer of bombs costs no memory at all."""
    from PIL import Image  # only previews need Pillow: stdio start-up does not pay for its import

    Image.MAX_IMAGE_PIXELS = None  # checked here, before decoding, as an error and not a warning
    with Image.open(io.BytesIO(data)) as opened:  # reads the header only
        width, height = opened.size
        if width * height > PREVIEW_MAX_PIXELS:
            raise DoubaoError(f"the image is {width}x{height} pixels, more than any Seedream image: not decoded")
        with DECODING:
            opened.draft("RGB", (PREVIEW_SIDE_PIXELS, PREVIEW_SIDE_PIXELS))  # JPEG decodes at a fraction of its size: faster
            opened.thumbnail((PREVIEW_SIDE_PIXELS, PREVIEW_SIDE_PIXELS))
            image = opened.convert("RGB")
    for side, quality in ((PREVIEW_SIDE_PIXELS, 80), (PREVIEW_SIDE_PIXELS, 60), (PREVIEW_SIDE_PIXELS * 3 // 4, 60), (256, 50)):
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= PREVIEW_MAX_BYTES:
            break
    return out.getvalue()


# --- The tools: module-level functions, and the state they reach -----------------------------------------------
# Each tool validates its arguments, builds a request, runs the blocking part in a worker lane, and shapes the
# result. They reach the configuration, the Ark client, the lanes, the record and the watcher through the App
# their server was built with, which the SDK hands them as the lifespan context.


@dataclass
class App:
    """One server's state: what its tools and their helpers reach, through `app_of(ctx)`."""

    config: Config
    client: ArkClient
    stopping: Stopping
    lanes: Mapping[str, Lane]
    record: Record | None = None
    watcher: Watcher | None = None
    memory: ModelMemory = field(default_factory=ModelMemory)  # the default models each key cannot use
    estimates: Estimates = field(default_factory=lambda: Estimates(None))  # how long videos take
    batchers: dict[str, PollBatcher] = field(default_factory=dict)  # one per API key: keys never share a request

    def poller(self, api_key: str) -> PollBatcher:
        """The batcher of this key's polls (a bounded few: over HTTP every caller brings a key)."""
        slot = key_fingerprint(api_key) or ""
        if slot not in self.batchers:
            if len(self.batchers) >= 256:
                self.batchers.pop(next(iter(self.batchers)))
            self.batchers[slot] = PollBatcher(self, api_key)
        return self.batchers[slot]

    async def run(self, lane: str, function: Callable[..., T], *args: Any) -> T:
        """Run blocking work (HTTP, files) in its lane's threads, never on the event loop. A cancelled call returns
        at once; its job ends on its own, within its deadline, and only then frees its thread."""
        return await self.lanes[lane].run(partial(function, *args))


def app_of(ctx: Context) -> App:
    return ctx.request_context.lifespan_context


TOOL_SPECS: list[tuple[Callable[..., Awaitable[Any]], bool, bool, str, dict[str, Any]]] = []


def tool(viewer: bool = False, new_work: bool = False, spent: str = "", **hints: Any) -> Callable[[T], T]:
    """Publish a tool: `viewer` links the MCP Apps viewer to its results; `new_work` refuses it while the server
    stops; `spent` is what an unexpected failure may have cost at Ark, and where to look; `hints` are its
    annotations, all four always stated (some clients read a missing one as unknown)."""
    def register(fn: T) -> T:
        TOOL_SPECS.append((fn, viewer, new_work, spent, hints))  # type: ignore[arg-type]
        return fn
    return register


def tool_arguments(name: str) -> frozenset[str]:
    """A tool's argument names, which `extra` may not override."""
    return frozenset(next(t for t in published_tools() if t.name == name).parameters["properties"])


def remembered(app: App, tasks: list[Any], api_key: str) -> list[Any]:
    """Tasks as Ark described them to this key, written to the record where that changed, with the files saved for
    them and a background save that failed."""
    app.estimates.learn(api_key, tasks)
    if app.record is None:
        return tasks
    app.record.observed(tasks)
    known = app.record.files_of(task["task_id"] for task in tasks)
    return [with_record(task, known[task["task_id"]]) if task["task_id"] in known else task for task in tasks]


def fetch_task(app: App, task_id: str, api_key: str, retry: bool = True) -> VideoTask:
    """GET one task from Ark, shaped, written to the record, with what the record holds of its files."""
    return remembered(app, [shape_task(app.client.get_task(task_id, api_key, retry=retry), task_id)], api_key)[0]


def save_once(app: App, task: VideoTask, folder: Folder) -> VideoTask:
    """Save what of a succeeded task is not saved yet (see `save_missing`)."""
    known = app.record.files_of([task["task_id"]]).get(task["task_id"]) if app.record else None
    saved = save_missing(app.client, app.record, task, folder, app.config.max_download_bytes, known)
    if saved is None:
        return _with(task, next_step="It is being saved right now, by this server's watcher or another server "
                     "process: ask again in a moment to see its saved_files.")
    return saved


async def finish_task(app: App, ctx: Context, task: VideoTask | None, task_id: str, wait_until: float,
                      save_to: Folder | None, api_key: str, kind: tuple[str | None, int | None] | None = None
                      ) -> VideoTask:
    """Shared by generate_video and query_video_task: wait until `wait_until` (on time.monotonic: the call's own
    time counts, its task's creation too), then save if it succeeded, or have the watcher save it when it does.
    `kind`: the (resolution, duration) asked for, where Ark's answer does not say yet."""
    async def report(age: float, total: float, message: str) -> None:
        await ctx.report_progress(round(age, 1), round(total, 1), message)

    task = task or await app.run("quick", fetch_task, app, task_id, api_key)
    if task["status"] not in FINAL_STATUSES:
        task, estimate = await wait_timed(app, task, time_left(wait_until), report, api_key, kind)
        if task["status"] not in FINAL_STATUSES:  # for the viewer, which shows progress the same way
            task = _with(task, estimate_seconds=round(grown(estimate.seconds, age_of(task))))
    if save_to and task["status"] == "succeeded":
        return await saved_unless_stopping(app, task, save_to)
    if save_to and task["status"] in ("queued", "running"):
        if app.watcher and api_key == app.config.api_key:  # the watcher polls with the server's own key only
            folder = app.watcher.watch(task_id, save_to.path)
            return _with(task, next_step=task["next_step"] + f" It is saved into {folder} when it finishes, even if "
                         "nobody asks again (at the next start, if this server stops first).")
        return _with(task, next_step=task["next_step"] + " Pass save_dir again to save it.")
    return task


def time_left(until: float) -> float:
    """Seconds from now until `until` (time.monotonic), or 0."""
    return max(0.0, until - time.monotonic())


async def with_heartbeat(ctx: Context, what: str, work: Awaitable[T]) -> T:
    """Send progress every few seconds while `work` runs, so clients that reset their timeout on progress keep
    waiting for a long synchronous generation."""
    async def beat() -> None:
        start = time.monotonic()
        while True:
            await anyio.sleep(HEARTBEAT_EVERY_SECONDS)
            elapsed = time.monotonic() - start
            await ctx.report_progress(round(elapsed, 1), None, f"{what}, {elapsed:.0f} s elapsed")

    failure: Exception | None = None
    async with anyio.create_task_group() as beats:
        beats.start_soon(beat)
        try:
            result = await work
        except Exception as error:  # raised below, outside the group, so it is not wrapped in a group
            failure = error
        beats.cancel_scope.cancel()
    if failure:
        raise failure
    return result


async def previews(app: App, result: Mapping[str, Any]) -> list[bytes]:
    """JPEG previews of what a result shows (its images, or a finished video's last frame), from the saved file when
    there is one, else fetched like a download. Made at once, within PREVIEW_DEADLINE_SECONDS; one that fails or comes late is
    left out, with a log line. None with DOUBAO_PREVIEWS=0."""
    if not app.config.previews:
        return []
    saved = [f for f in result.get("saved_files", []) if not f.get("missing")]
    if isinstance(result.get("images"), list):  # each image by its index, never by a file name
        sources = [(image.get("url"), next((f["path"] for f in saved if f.get("index") == image["index"]), None))
                   for image in result["images"]]
    elif result.get("status") == "succeeded" and result.get("last_frame_url"):
        sources = [(result["last_frame_url"], next((f["path"] for f in saved if f.get("kind") == "last_frame"), None))]
    else:
        return []
    made: dict[int, bytes] = {}

    async def one(index: int, url: str | None, path: str | None) -> None:
        try:
            made[index] = await app.run("slow", preview_of, app, url, path)
        except Exception as error:
            log.warning("No preview of %s: %s", _text(path or url, 100), error)

    with anyio.move_on_after(PREVIEW_DEADLINE_SECONDS):
        async with anyio.create_task_group() as group:
            for index, (url, path) in enumerate(sources):
                group.start_soon(one, index, url, path)
    return [made[index] for index in sorted(made)]


def preview_of(app: App, url: str | None, path: str | None) -> bytes:
    """A preview from the saved file (no second download), else from the URL."""
    if path:
        data = read_input(Path(path), app.config.allowed_dir, "preview", PREVIEW_SOURCE_MAX_BYTES, "an image")
    elif url:
        data = app.client.fetch(url, "image", PREVIEW_DEADLINE_SECONDS)
    else:
        raise DoubaoError("an inline image that was not saved")
    return make_preview(data)


def advice(error: ArkAPIError, caller_key: bool) -> str | None:
    """What to do about an Ark error, where the call says more than the error: a key the caller sent, not
    ARK_API_KEY. (Advice about the model is `first_usable`'s.)"""
    if error.status == 401 and caller_key:
        return ("Ark refused the key this request sent (X-API-Key or Authorization: Bearer): check it in the Ark "
                "console (API Key management), for the region this server uses.")
    return None


@tool(viewer=True, new_work=True, spent=" Ark may have made (and billed) the images.", title="Generate images",
      read_only_hint=False, destructive_hint=False, idempotent_hint=False)
async def generate_image(
    ctx: Context,
    prompt: Annotated[Prompt, Field(description="What to draw, or how to edit the reference images.")],
    model: Annotated[ModelId, Field(description="Model or endpoint id (default DOUBAO_IMAGE_MODEL, or best fit).")] = None,
    images: Annotated[MediaList, Field(description=f"Images to edit or combine: {MEDIA_FORMS}.")] = None,
    size: Annotated[str | None, _optional(_image_size),
                    Field(description="Per model: 1K, 1.5K, 2K, 3K, 4K, auto, adaptive or WIDTHxHEIGHT.")] = None,
    max_images: Annotated[int | None, Field(ge=1, le=MAX_SET_IMAGES, description="Above 1: a set of up to this many "
                          "related images.")] = None,
    seed: Annotated[int | None, Field(ge=-1, le=2147483647)] = None,
    guidance_scale: Annotated[float | None, Field(ge=1, le=10, description="Seedream 3.0, SeedEdit.")] = None,
    watermark: bool | None = None,
    output_format: Literal["jpeg", "png"] | None = None,
    web_search: Annotated[bool | None, Field(description="Let the model search the web (Seedream 5.0).")] = None,
    background: Annotated[Literal["auto", "transparent", "opaque"] | None, Field(description="Seedream 5.5.")] = None,
    extra: Annotated[Extra, Field(description=EXTRA.format(examples="optimize_prompt_options, layer_decomposition"))
                     ] = None,
    save_dir: SaveDir = None,
) -> ImageResult:
    """Generate images with Doubao Seedream from a prompt, optionally editing or combining reference images.
    Returns image URLs (valid 24 h), per-image errors, and saved file paths with save_dir. Relative paths: the
    server's folder."""
    app, config = app_of(ctx), app_of(ctx).config
    choice = candidates("image", ImageAsk(len(images or []), size, max_images, bool(web_search), background), config,
                        model)
    extra = check_extra(extra, tool_arguments("generate_image"))
    api_key = config.api_key_for(ctx.headers)
    save_to = await app.run("quick", output_dir, save_dir, config)
    refs = await app.run("slow", load_inputs, [("images", "image", ref) for ref in images or []], config)
    body = image_request(prompt, choice.models[0], refs, size, max_images, web_search, extra, seed=seed,
                         guidance_scale=guidance_scale, watermark=watermark, output_format=output_format,
                         background=background)
    data, used, skipped = await with_heartbeat(ctx, "generating images", app.run(
        "slow", first_usable, "image", choice, lambda chosen: app.client.generate_images({**body, "model": chosen},
                                                                                      api_key),
        app.memory, api_key, config.region))
    result = shape_images(data)
    if note := model_note("image", used, skipped, config.region):
        result = ImageResult(**{**result, "note": f"{note} {result['note']}"})  # type: ignore[typeddict-item]
    if save_to:
        result = await app.run("slow", save_images, app.client, data["data"], result, save_to,
                               config.max_download_bytes)
    return result


@tool(viewer=True, new_work=True, spent=" A video task may have been created: see list_video_tasks.",
      title="Generate a video", read_only_hint=False, destructive_hint=False, idempotent_hint=False)
async def generate_video(
    ctx: Context,
    prompt: Annotated[Prompt | None, Field(description="Scene and motion, best under 500 chars; cite references as "
                      "@Image1, @Video1, @Audio1.")] = None,
    model: Annotated[ModelId, Field(description="Model or endpoint id (default DOUBAO_VIDEO_MODEL, or best fit).")] = None,
    first_frame: MediaArg = None,
    last_frame: Annotated[MediaArg, Field(description="Image to end on; needs first_frame.")] = None,
    reference_images: Annotated[MediaList, Field(description="Images to draw on; not with first/last frames.")] = None,
    reference_videos: Annotated[MediaList, Field(description="Videos to follow, edit or extend (URL, asset://).")
                                ] = None,
    reference_audios: Annotated[MediaList, Field(description="WAV/MP3 audio (Seedance 2.x).")] = None,
    draft_task_id: Annotated[str | None, _optional(_task_id),
                             Field(description="Render the final video of this draft task.")] = None,
    resolution: Resolution | None = None,
    ratio: Ratio | None = None,
    duration: Annotated[int | None, _optional(_duration),
                        Field(description="Seconds (2-30 by model), or -1: model decides.")] = None,
    frames: Annotated[int | None, Field(description="25+4n frames, instead of duration (Seedance 1.0)."),
                      _optional(_frames)] = None,
    seed: Annotated[int | None, Field(ge=-1, le=4294967295)] = None,
    camera_fixed: bool | None = None,
    watermark: bool | None = None,
    generate_audio: bool | None = None,
    return_last_frame: bool | None = None,
    draft: Annotated[bool | None, Field(description="480p preview to render later with draft_task_id (2.5).")] = None,
    web_search: Annotated[bool | None, Field(description="Let the model search the web.")] = None,
    service_tier: Annotated[ServiceTier | None, Field(description="flex: cheaper, slower.")] = None,
    callback_url: Annotated[str | None, _optional(_callback_url),
                            Field(description="Ark POSTs task updates here.")] = None,
    extra: Annotated[Extra, Field(description=EXTRA.format(
        examples="output_format, omni_reference_task_type, priority"))] = None,
    wait_seconds: StartWait = 0,
    save_dir: SaveDir = None,
) -> VideoTask:
    """Start a Doubao Seedance video task from text, frames, reference images, videos and audios, or a
    draft. Returns a task_id; with wait_seconds, waits for the video. If the call times out, find
    the task with list_video_tasks. Relative paths: the server's folder."""
    wait_until = time.monotonic() + wait_seconds
    app, config = app_of(ctx), app_of(ctx).config
    given = {"first_frame": [first_frame] if first_frame else [], "last_frame": [last_frame] if last_frame else [],
             "reference_images": reference_images or [], "reference_videos": reference_videos or [],
             "reference_audios": reference_audios or []}
    extra = check_extra(extra, tool_arguments("generate_video"))
    choice = candidates("video", VideoAsk(
        {argument: len(values) for argument, values in given.items()}, bool(prompt), bool(draft_task_id), duration,
        frames, resolution, ratio, bool(draft), bool(generate_audio), bool(web_search),
        _string(extra.get("omni_reference_task_type")), _string(extra.get("output_format"))), config, model)
    api_key = config.api_key_for(ctx.headers)
    save_to = await app.run("quick", output_dir, save_dir, config)
    inputs = [(argument, kind, item, role, ref) for argument, kind, item, role in VIDEO_INPUTS for ref in given[argument]]
    loaded = await app.run("slow", load_inputs, [(argument, kind, ref) for argument, kind, _, _, ref in inputs], config)
    body = video_request(
        choice.models[0], prompt, [(item, role, url) for (_, _, item, role, _), url in zip(inputs, loaded)],
        draft_task_id, web_search, extra, resolution=resolution, ratio=ratio, duration=duration, frames=frames,
        seed=seed, camera_fixed=camera_fixed, watermark=watermark, generate_audio=generate_audio,
        return_last_frame=return_last_frame, draft=draft, service_tier=service_tier, callback_url=callback_url)
    created, note = await app.run("slow", create_task, app, choice, body, api_key, save_to)
    try:
        task = await finish_task(app, ctx, created, created["task_id"], wait_until, save_to, api_key,
                                 (resolution, duration))
    except Exception as error:  # the task exists and is billed: whatever fails after its creation, its id comes back
        log.exception("Following %s after its creation failed", created["task_id"])
        reason = str(error) if isinstance(error, DoubaoError) else f"unexpected {type(error).__name__}"
        task = _with(created, next_step=f"The task was created, but following it failed ({reason}). Call "
                     f"query_video_task with task_id {created['task_id']!r} and wait_seconds=50.")
    return _with(task, note=note) if note else task


def create_task(app: App, choice: Choice, body: dict[str, Any], api_key: str,
                save_to: Folder | None) -> tuple[VideoTask, str | None]:
    """POST the task to the first usable model of `choice`, and write its row in the record on the same thread (the
    record costs the call no extra hop): the new task, and the note on its model."""
    answer, used, skipped = first_usable("video", choice, lambda chosen: app.client.create_task(
        {**body, "model": chosen}, api_key), app.memory, api_key, app.config.region)
    if not _task_id_of(answer):
        raise _unreadable("a new task without a usable task id (the task may exist: see list_video_tasks)", answer)
    created = VideoTask(task_id=answer["id"], status="queued", model=used,
                        next_step=NOT_FINISHED.format(task_id=answer["id"]))
    try:
        created = shape_task({"status": "queued", "model": used, **answer})
        if app.record:
            own = api_key == app.config.api_key
            app.record.created(created, {**body, "model": used}, save_to and save_to.path,
                               key_fingerprint(api_key) if own else None, watched=bool(app.watcher and own and save_to))
    except Exception:  # the record (or a strange answer) never costs the caller the new task's id
        log.exception("Recording the new task %s failed", answer["id"])
    return created, model_note("video", used, skipped, app.config.region)


@tool(viewer=True, title="Check a video task", read_only_hint=True, destructive_hint=False, idempotent_hint=True)
async def query_video_task(task_id: TaskId, ctx: Context, wait_seconds: WaitSeconds = 0,
                           save_dir: SaveDir = None) -> VideoTask:
    """Get a video task's status and, once done, its video URL (valid 24 h). With wait_seconds, waits for it;
    with save_dir, saves the video. Relative paths: the server's folder."""
    wait_until = time.monotonic() + wait_seconds
    app = app_of(ctx)
    api_key = app.config.api_key_for(ctx.headers)
    save_to = await app.run("quick", output_dir, save_dir, app.config)
    return await finish_task(app, ctx, None, task_id, wait_until, save_to, api_key)


@tool(title="List video tasks", read_only_hint=True, destructive_hint=False, idempotent_hint=True)
async def list_video_tasks(
    ctx: Context,
    status: TaskStatus | None = None,
    model: Annotated[ModelId, Field(description="Only this model or endpoint id.")] = None,
    service_tier: ServiceTier | None = None,
    task_ids: Annotated[list[Annotated[str, AfterValidator(_task_id)]] | None,
                        Field(max_length=500, description="Only these tasks.")] = None,
    page_num: Annotated[int | None, Field(ge=1, le=500)] = None,
    page_size: Annotated[int | None, Field(ge=1, le=500)] = None,
    wait_seconds: Annotated[float, Field(ge=0, le=START_WAIT_SECONDS, description="With task_ids: wait for all, "
                            "with progress.")] = 0,
    save_dir: SaveDir = None,
) -> TaskList:
    """List video tasks of the last 7 days, newest first. With task_ids, can wait for them and save each finished
    video."""
    wait_until = time.monotonic() + wait_seconds
    app = app_of(ctx)
    if (wait_seconds or save_dir) and not task_ids:
        raise DoubaoError("wait_seconds and save_dir need task_ids: the tasks to wait for and save.")
    if task_ids and (page_num or page_size):
        raise DoubaoError("page_num and page_size page through all tasks; with task_ids every task asked for comes "
                          "back, however many: leave them out.")
    api_key = app.config.api_key_for(ctx.headers)
    if not task_ids:
        params = list_query(status, model, service_tier, [], page_num, page_size)

        def listing() -> TaskList:
            listed = shape_task_list(app.client.list_tasks(params, api_key))
            return TaskList(total=listed["total"], tasks=remembered(app, listed["tasks"], api_key))
        return await app.run("quick", listing)
    save_to = await app.run("quick", output_dir, save_dir, app.config)
    tasks = await tasks_asked_for(app, list(dict.fromkeys(task_ids)), api_key, status, model, service_tier)
    if not (wait_seconds or save_to):
        return TaskList(total=len(tasks), tasks=[_listed(task, keep_step=task["status"] == "unknown") for task in tasks])
    tasks = await wait_for_all(app, ctx, tasks, time_left(wait_until), api_key)
    if save_to:
        tasks = await save_all(app, tasks, save_to)
    # After a wait, a task keeps its next_step where there is something to do: unfinished, failed, checking it
    # failed, or saving it did. A finished video needs no word.
    return TaskList(total=len(tasks), tasks=[_listed(task, keep_step=task["status"] != "succeeded" or bool(
        task.get("save_errors")) or task.get("next_step") != URL_LIFETIME_NOTE) for task in tasks])


def _listed(task: Any, keep_step: bool = False) -> ListedTask:
    """A task as a listing shows it: without the next_step it would repeat for every task, unless it says more."""
    return ListedTask(**{k: v for k, v in task.items() if keep_step or k != "next_step"})  # type: ignore[typeddict-item]


async def tasks_asked_for(app: App, task_ids: list[str], api_key: str, status: str | None, model: str | None,
                          service_tier: str | None) -> list[Any]:
    """Every task of `task_ids`, in that order, one entry each: from list requests with the filters given, and a GET
    for each a list left out (then kept only where it passes the filters). One that cannot be found or checked is
    an entry with status "unknown", its error and what to do: never dropped."""
    outcomes: dict[str, VideoTask | Exception] = {}
    await look_up(app, task_ids, api_key, outcomes.__setitem__, filters=Filters(status, model, service_tier))
    tasks: list[Any] = []
    for task_id in task_ids:
        outcome = outcomes[task_id]
        if isinstance(outcome, Exception):
            tasks.append(unknown_task(task_id, outcome))
        elif passes(outcome, status, model, service_tier):
            tasks.append(outcome)
    return tasks


def passes(task: Mapping[str, Any], status: str | None, model: str | None, service_tier: str | None) -> bool:
    """A task asked about alone, by the filters a list would have applied: only where it says what they test (an
    endpoint id filter is Ark's to apply: the task names its real model)."""
    return (not status or task["status"] == status) and (
        not service_tier or task.get("service_tier") in (None, service_tier)) and (
        not model or model.startswith("ep-") or task.get("model") in (None, model))


def unknown_task(task_id: str, error: Exception) -> Any:
    """A task asked for that Ark did not describe: Ark does not know it, or checking it failed."""
    if isinstance(error, ArkAPIError) and error.status == 404:
        return {"task_id": task_id, "status": "unknown", **_compact({"error_code": error.code}),
                "error_message": error.message, "next_step": TASK_NOT_FOUND_HINT}
    reason = str(error) if isinstance(error, DoubaoError) else f"unexpected {type(error).__name__}"
    return {"task_id": task_id, "status": "unknown", "next_step": f"Checking the task failed ({reason}); it may "
            f"still be running. Call query_video_task with task_id {task_id!r} and wait_seconds=50 later."}


async def save_all(app: App, tasks: list[Any], folder: Folder) -> list[Any]:
    """Each succeeded task saved (`save_once`), all at once in the slow lane."""
    saved = list(tasks)

    async def one(index: int) -> None:
        saved[index] = await saved_unless_stopping(app, saved[index], folder)

    async with anyio.create_task_group() as group:
        for index, task in enumerate(tasks):
            if task["status"] == "succeeded":
                group.start_soon(one, index)
    return saved


async def saved_unless_stopping(app: App, task: Any, folder: Folder) -> Any:
    """`save_once` in the slow lane, or, when the server is told to stop first, the task as known with what to do:
    a call in flight gets its answer within the grace period, and the save goes on until the server exits (its
    unfinished file removed then)."""
    outcome: list[Any] = []

    async def save() -> None:
        try:
            outcome.append(await app.run("slow", save_once, app, task, folder))
        except Exception as error:  # raised below, outside the group, so it is not wrapped in a group
            outcome.append(error)
        group.cancel_scope.cancel()

    async def stop() -> None:
        await app.stopping.wait()
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(save)
        group.start_soon(stop)
    if not outcome:
        return _with(task, next_step="This server is stopping, so the video was not saved: call query_video_task "
                     f"with task_id {task['task_id']!r} and save_dir again (its link lasts 24 hours).")
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


async def wait_timed(app: App, task: Any, wait_seconds: float, report: Callable[[float, float, str], Awaitable[None]],
                     api_key: str, kind: tuple[str | None, int | None] | None = None) -> tuple[Any, Estimate]:
    """Wait up to `wait_seconds` for a task, timed by how long its kind takes (`kind`: the resolution and duration
    asked for, where Ark's answer does not say yet), its polls shared with the key's other waits: the task as last
    seen, and the estimate."""
    if not app.estimates.loaded:  # its first use reads the record: off the event loop, once
        await app.run("quick", app.estimates.load)
    estimate = app.estimates.estimate(api_key, task.get("model") or "", *kind or (task.get("resolution"),
                                                                                  task.get("duration")))
    if wait_seconds:
        task = await wait_for_task(lambda: app.poller(api_key).poll(task["task_id"]), task, wait_seconds, report,
                                   estimate.intervals(app.config.poll_intervals), estimate.seconds, age_of(task),
                                   sleep=app.stopping.sleep, stopped=lambda: app.stopping.is_set)
    return task, estimate


async def wait_for_all(app: App, ctx: Context, tasks: list[Any], wait_seconds: float, api_key: str) -> list[Any]:
    """Wait until every task is final or `wait_seconds` have passed: one wait per task, each timed by its own
    estimate, their polls shared. Progress counts the tasks done: `2 of 3 done`."""
    found = {task["task_id"]: task for task in tasks}
    done, sent, told = sum(task["status"] in FINAL_STATUSES for task in tasks), 0.0, -1

    async def counted() -> None:  # at each task done, and else at most once a second
        nonlocal sent, told
        if done != told or time.monotonic() - sent >= 1:
            sent, told = time.monotonic(), done
            await ctx.report_progress(done, len(tasks), f"{done} of {len(tasks)} done")

    async def one(task: Any) -> None:
        nonlocal done

        async def report(age: float, total: float, message: str) -> None:
            await counted()

        found[task["task_id"]], _ = await wait_timed(app, _with(task, next_step=""), wait_seconds, report, api_key)
        done += found[task["task_id"]]["status"] in FINAL_STATUSES
        await counted()

    await counted()
    async with anyio.create_task_group() as group:
        for task in tasks:
            if task["status"] not in FINAL_STATUSES:
                group.start_soon(one, task)
    return [found[task["task_id"]] for task in tasks]


@tool(title="Cancel a video task", read_only_hint=False, destructive_hint=True, idempotent_hint=False)
async def cancel_video_task(task_id: TaskId, ctx: Context) -> CancelResult:
    """Cancel a queued video task, or delete the record of a finished one. A running task cannot be
    cancelled."""
    app = app_of(ctx)
    api_key = app.config.api_key_for(ctx.headers)
    status = (await app.run("quick", fetch_task, app, task_id, api_key))["status"]
    outcome: Literal["cancelled", "deleted"] = "cancelled" if status == "queued" else "deleted"

    def cancel() -> None:
        app.client.delete_task(task_id, api_key)
        if app.record:  # nothing left to save: no watcher, now or after a restart, waits for it
            app.record.gave_up(task_id, None)
    try:
        await app.run("quick", cancel)
    except ArkAPIError as error:
        if status in ("running", "cancelled") and 400 <= error.status < 500:
            error.hint = (f"The task is {status}: Ark cannot cancel or delete it now. "
                          + ("Wait until it finishes, then call cancel_video_task again to delete its record."
                             if status == "running" else "Ark keeps cancelled tasks for 7 days."))
        raise
    message = ("The task was cancelled before it started." if outcome == "cancelled"
               else f"The {status} task's record was deleted; its URLs stop working.")
    return CancelResult(task_id=task_id, previous_status=status, outcome=outcome, message=message)


# --- build_server and main: the wiring -------------------------------------------------------------------------


def build_server(config: Config, client: ArkClient | None = None, stopping: Stopping | None = None,
                 record: Record | None = None, watcher: Watcher | None = None) -> MCPServer:
    """The MCP server: the five tools and the viewer, bound to one App (a configuration, an Ark client, worker lanes,
    and a task record and a watcher that saves videos on its own, when they are given)."""
    app = App(config, client or ArkClient(config.base_url, config.image_timeout, secrets=[config.api_key or ""],
                                          limits=config.limits, media_domains=config.media_domains),
              stopping or Stopping(), make_lanes(config.limits), record, watcher,
              estimates=Estimates(record, key_fingerprint(config.api_key)))

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[App]:
        if watcher and config.api_key:  # its polls join the waits' of the server's own key
            watcher.share(asyncio.get_running_loop(), app.poller(config.api_key))
        try:
            yield app
        finally:
            if watcher:
                watcher.share(None, None)

    apps = Apps()  # the viewer, for hosts that speak MCP Apps; others ignore it and get the same results
    apps.add_html_resource(VIEWER_URI, VIEWER_HTML, name="doubao-mcp viewer", description="Shows generated images, "
                           "and a video player or a task's progress.", prefers_border=True,
                           csp=ResourceCsp(resource_domains=list(config.media_domains)))
    return MCPServer(
        "doubao-mcp", version=__version__, tools=list(published_tools()), extensions=[apps], lifespan=lifespan,
        instructions="Generate images (Seedream) and videos (Seedance) with ByteDance Doubao models on "
        "Volcengine Ark. Videos are asynchronous tasks: generate_video returns a task_id to check with "
        "query_video_task. Result URLs expire after 24 hours.",
    )


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="doubao-image-video-mcp", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MCP server for Doubao Seedream images and Seedance videos (Volcengine Ark). Each option "
        "below also reads the variable named in it.",
        epilog=(__doc__ or "")[(__doc__ or "").index("Environment:"):].split("\n\nRun it", 1)[0].replace(
            "Environment:", "environment:", 1),
    )
    parser.add_argument("--transport", choices=TRANSPORTS,
                        default=env.get("DOUBAO_MCP_TRANSPORT", "stdio"),
                        help="stdio (default) for a local client; streamable-http (or http) to host it "
                        "(DOUBAO_MCP_TRANSPORT)")
    parser.add_argument("--host", default=env.get("DOUBAO_MCP_HOST", "127.0.0.1"),
                        help="HTTP bind address, default 127.0.0.1 (DOUBAO_MCP_HOST)")
    parser.add_argument("--port", type=int, default=env.get("DOUBAO_MCP_PORT", "8000"),
                        help="HTTP port, default 8000 (DOUBAO_MCP_PORT)")
    parser.add_argument("--allowed-hosts", default=env.get("DOUBAO_MCP_ALLOWED_HOSTS", ""),
                        help="comma-separated Host names clients use, e.g. mcp.example.com; turns on "
                        "DNS-rebinding protection for non-loopback binds (DOUBAO_MCP_ALLOWED_HOSTS)")
    parser.add_argument("--allowed-origins", default=env.get("DOUBAO_MCP_ALLOWED_ORIGINS", ""),
                        help="comma-separated browser Origins allowed with --allowed-hosts (DOUBAO_MCP_ALLOWED_ORIGINS)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default=env.get("DOUBAO_MCP_LOG_LEVEL", "WARNING"),
                        help="stderr log level, default WARNING (DOUBAO_MCP_LOG_LEVEL)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if args.transport not in TRANSPORTS or args.log_level not in LOG_LEVELS:  # argparse checks no defaults
        parser.error(f"DOUBAO_MCP_TRANSPORT must be one of {TRANSPORTS} and DOUBAO_MCP_LOG_LEVEL one of {LOG_LEVELS}")
    # stdout is the protocol channel on stdio: every log line goes to stderr, set before MCPServer() sets its own.
    logging.basicConfig(level=args.log_level, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serving_http = args.transport != "stdio"
    if not serving_http:  # a client that stops its server sends SIGTERM; a person at a terminal, SIGINT
        signal.signal(signal.SIGINT, _exit_at_once)
        signal.signal(signal.SIGTERM, _exit_at_once)
    try:
        config = replace(Config.from_env(), serving_http=serving_http)
        output_dir(None, config)  # DOUBAO_OUTPUT_DIR is made now if missing, and an unusable one reported now
    except (ConfigError, DoubaoError) as error:
        sys.exit(f"doubao-mcp: {error}")  # SystemExit with a message writes it to stderr
    client = ArkClient(config.base_url, config.image_timeout, secrets=[config.api_key or ""], limits=config.limits,
                       media_domains=config.media_domains)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactedLog(lambda: client.secrets))
    record = open_record(config, explicit=bool(env.get("DOUBAO_STATE_DIR", "").strip()))
    watcher = Watcher(client, record, config.api_key, config) if record and config.api_key else None
    stopping = Stopping()
    server = build_server(config, client, stopping, record, watcher)
    try:
        if watcher:
            watcher.resume()
        if not serving_http:
            if not config.api_key:
                log.warning("ARK_API_KEY is not set: tools are listed, but calls will ask for a key.")
            if sys.stdin.isatty():  # started by hand: say why nothing seems to happen
                sys.stderr.write("doubao-mcp is serving MCP on stdin/stdout and waits for an MCP client (see the "
                                 "README's client configuration). Ctrl-C stops it.\n")
            anyio.run(serve_stdio, server)  # returns when stdin closes; what runs on the lanes' daemon threads ends
            return
        if not is_loopback(args.host):
            if config.api_key:
                log.warning("Serving on %s with ARK_API_KEY set: requests without a key of their own spend "
                            "this account's credit.", args.host)
            if not args.allowed_hosts:
                log.warning("DNS-rebinding protection is off for %s: set DOUBAO_MCP_ALLOWED_HOSTS to the host "
                            "names clients use.", args.host)
        signal.signal(signal.SIGINT, _stop_quietly)
        signal.signal(signal.SIGTERM, _stop_quietly)
        where = f"[{args.host}]" if ":" in args.host else args.host
        sys.stderr.write(f"doubao-mcp is serving MCP over streamable HTTP at http://{where}:{args.port}/mcp. "
                         "Ctrl-C stops it.\n")
        http_server(server, args.host, args.port, args.allowed_hosts.split(","), args.allowed_origins.split(","),
                    args.log_level.lower(), config.limits, stopping).run()
    finally:
        if watcher:
            watcher.stop()
        client.close()  # ends every exchange still in flight, the watcher's too
        remove_live_parts()


# --- The Ark client and retries: every request, its answer read within a cap, mapped to data or an error ----------
# Machinery from here on: each section owns one concern, read when you change it.


class _BearerAuth(AuthBase):
    """Passed per request so the key never lives on the shared session, and ~/.netrc cannot replace it."""

    def __init__(self, api_key: str):
        self.api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.api_key}"
        return request


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read whole, within its deadline and size cap."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def capped(chunks: Iterable[bytes], cap: int, too_big: Callable[[], Exception]) -> Iterator[bytes]:
    """Chunks as they come, and `too_big()` raised as soon as they add up to more than `cap` bytes: the one reading
    helper of API answers, downloads, preview sources and input files, none read more than a chunk past its cap."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise too_big()
        yield chunk


def _read_answer(response: requests.Response, exchange: Exchange, cap: int) -> Answer:
    """API answers are small: anything over `cap` is refused before it is parsed (or even read, when declared)."""
    declared = response.headers.get("Content-Length", "")
    too_big = ArkConnectionError(f"Ark's answer is over {_size(cap)}, more than any API answer: refused unread "
                                 "(is ARK_BASE_URL a proxy or another service?).")
    if declared.isdigit() and int(declared) > cap:
        raise too_big
    # iter_content decodes: a gzip bomb counts at its real size
    body = b"".join(capped(response.iter_content(DOWNLOAD_CHUNK_BYTES), cap, lambda: too_big))
    return Answer(response.status_code, response.reason or "", response.headers, body)


def secret_forms(secret: str) -> tuple[list[str], list[str]]:
    """The forms in which a secret may come back from upstream, in lower case (matching ignores case, so an
    upper-cased echo is found too): as is or percent-encoded (only where needed, or every byte); and in base64
    (standard and URL-safe) as part of any text, at each of the three byte alignments, `Bearer <key>` as an
    Authorization header carries it among them."""
    data = secret.encode()
    plain = {secret, quote(secret, safe=""), "".join(f"%{byte:02x}" for byte in data)}
    encoded = set()
    for shift in range(3):
        text = base64.b64encode(bytes(shift) + data).decode()
        # Only the groups of four made of the secret's bytes alone: the first holds `shift` bytes of what precedes
        # it, and the last, unless the secret ends a group, bytes of what follows.
        inner = text[4 if shift else 0: -4 if (shift + len(data)) % 3 else None]
        encoded |= {inner, inner.replace("+", "-").replace("/", "_")}
    return sorted({f.lower() for f in plain if f}), sorted({f.lower() for f in encoded - plain if f})


class SecretPatterns(NamedTuple):
    windows: frozenset[str]  # every REDACT_RUN_CHARS-long piece of a long secret as is or percent-encoded
    encoded: frozenset[str]  # the same of its base64 forms
    anchors: frozenset[str]  # every ANCHOR_CHARS-long piece of both: a run holds a window only where it holds these
    runs: re.Pattern[str] | None  # text that may hold such a piece: runs of the forms' characters
    words: re.Pattern[str] | None  # a short secret's forms, as whole words


BASE64_RUN = re.compile(r"[A-Za-z0-9+/_=-]+")


def _pieces(forms: Iterable[str], size: int = REDACT_RUN_CHARS) -> frozenset[str]:
    return frozenset(form[i:i + size] for form in forms for i in range(len(form) - size + 1))


@functools.lru_cache(maxsize=32)
def secret_patterns(secrets: frozenset[str]) -> SecretPatterns:
    """What finds these secrets, built once per set of them (a new caller's key makes a new set)."""
    long = [secret_forms(secret) for secret in secrets if len(secret) >= LONG_SECRET_CHARS]
    short = [form for secret in secrets if SHORT_SECRET_CHARS <= len(secret) < LONG_SECRET_CHARS
             for forms in secret_forms(secret) for form in forms]
    plain, encoded = [form for forms, _ in long for form in forms], [form for _, forms in long for form in forms]
    alphabet = "".join(sorted({c for form in plain + encoded for c in form}))
    runs = re.compile(f"[{re.escape(alphabet)}]{{{REDACT_RUN_CHARS},}}", re.IGNORECASE) if long else None
    words = re.compile("(?<![\\w-])(?:" + "|".join(map(re.escape, sorted(short, key=len, reverse=True))) + ")(?![\\w-])",
                       re.IGNORECASE) if short else None
    return SecretPatterns(_pieces(plain), _pieces(encoded), _pieces(plain + encoded, ANCHOR_CHARS), runs, words)


class Redactor:
    """Proxies and gateways sometimes echo request headers in their pages: no key leaves through an answer, in any
    of its forms (see `secret_forms`), whole or cut short. A key as long as real ones (Ark's are 36 characters) is
    replaced wherever any REDACT_RUN_CHARS of it stand (in base64, the whole run of base64 around them, which holds
    its first and last bytes too); a short one only whole, as a word, so that a key that is also a common string
    does not mangle ids, URLs or prompts.

    Text the caller itself `sent` is left as it is, even where it matches a key: a redaction would tell a caller
    that the string it guessed is someone's key, and it knows what it sent."""

    def __init__(self, secrets: Iterable[str], sent: str = ""):
        self.patterns = secret_patterns(frozenset(s for s in secrets if s and len(s) >= SHORT_SECRET_CHARS))
        self.sent = sent.lower()

    def __call__(self, text: str) -> str:
        patterns = self.patterns
        if len(text) < REDACT_RUN_CHARS and not patterns.words:
            return text
        spans: list[tuple[int, int]] = []
        for run in patterns.runs.finditer(text) if patterns.runs else ():
            spans += self._found(text, run)
        spans += [found.span() for found in patterns.words.finditer(text)] if patterns.words else []
        for start, end in sorted(_merged(spans), reverse=True):
            if not (self.sent and text[start:end].lower() in self.sent):
                text = text[:start] + "***" + text[end:]
        return text

    def _found(self, text: str, run: re.Match[str]) -> list[tuple[int, int]]:
        """The spans of a run that hold a piece of a secret."""
        piece, patterns = run[0].lower(), self.patterns
        # Every window holds a whole block of ANCHOR_CHARS that starts at a multiple of it: windows are looked at
        # only around such blocks that are pieces of a secret, a few lookups a run instead of one per character.
        anchors = patterns.anchors
        blocks = [b for b in range(0, len(piece) - ANCHOR_CHARS + 1, ANCHOR_CHARS) if piece[b:b + ANCHOR_CHARS] in anchors]
        if not blocks:
            return []
        starts = {j for block in blocks
                  for j in range(max(0, block - ANCHOR_CHARS), min(block, len(piece) - REDACT_RUN_CHARS) + 1)}
        spans = []
        for i in sorted(starts):
            window, at = piece[i:i + REDACT_RUN_CHARS], run.start() + i
            if window in patterns.windows:
                spans.append((at, at + REDACT_RUN_CHARS))
            elif window in patterns.encoded:
                spans.append(_base64_run(text, at))
        return spans

    def values(self, value: Any) -> Any:
        """Every string of a parsed answer, keys too, redacted: escapes (\\u0041, \\/) are undone by parsing, so
        redaction sees what the text means. Iterative: an answer may nest as deep as the parser allows."""
        root = [value]
        stack: list[tuple[Any, Any]] = [(root, 0)]
        while stack:
            holder, key = stack.pop()
            item = holder[key]
            if isinstance(item, str):
                holder[key] = self(item)
            elif isinstance(item, list):
                stack.extend((item, index) for index in range(len(item)))
            elif isinstance(item, dict):
                holder[key] = item = {self(k) if isinstance(k, str) else k: v for k, v in item.items()}
                stack.extend((item, k) for k in item)
        return root[0]


def _redact(text: str, secrets: Iterable[str], sent: str = "") -> str:
    """`text` redacted of `secrets` (see `Redactor`)."""
    return Redactor(secrets, sent)(text)


def _base64_run(text: str, at: int) -> tuple[int, int]:
    """The span of the base64 run that holds position `at`."""
    start = at
    while start > 0 and BASE64_RUN.fullmatch(text[start - 1]):
        start -= 1
    found = BASE64_RUN.match(text, at)
    return start, found.end() if found else at + 1


class RedactedLog(logging.Filter):
    """Every log line (this server's, the SDK's, uvicorn's) with every key the client knows redacted, tracebacks
    included. Nothing is left as the caller sent it here: the log is the operator's, never a caller's."""

    def __init__(self, secrets: Callable[[], Iterable[str]]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(self.secrets())
        message = record.getMessage()
        clean = _redact(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text, secrets)
        return True


def _strings(value: Any) -> list[str]:
    """The strings of a request body that Ark may quote back (ids, prompts, URLs; not inline files)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and len(item) <= 2 * PROMPT_MAX_CHARS:
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans as one."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            first, last = merged.pop()
            start, end = first, max(last, end)
        merged.append((start, end))
    return merged


def _unescaped(text: str) -> str:
    """A body that is not JSON, with the escapes a key may hide behind undone: JSON's \\uXXXX and \\/, and HTML's."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)) if not 0xD800 <= int(m[1], 16) < 0xE000
                  else m[0], text)
    return html.unescape(re.sub(r'\\(["\\/])', r"\1", text))


def _excerpt(text: str, headers: Mapping[str, str]) -> str:
    """A short, single-line view of a body that is not Ark's JSON (a proxy's HTML page, say)."""
    text = " ".join(re.sub(r"<[^>]*>", " ", text[:2000]).split())
    kind = _text(headers.get("Content-Type", "no content type").split(";")[0], NAME_MAX_CHARS)
    return f"non-JSON response ({kind}): {_text(text, 160)!r}" if text else f"empty response ({kind})"


def _hint(status: int, code: str | None, param: str | None, path: str, base_url: str) -> str | None:
    model_env = "DOUBAO_IMAGE_MODEL" if path.startswith(IMAGES_PATH) else "DOUBAO_VIDEO_MODEL"
    # Ark's own 404s say why in its JSON, and its API lives under /v3: a bare 404, or any 404 from a root that does
    # not end in /v3 (the host alone, say), means the address is wrong, whatever the model.
    if status == 404 and (not code or not urlsplit(base_url).path.rstrip("/").endswith("/v3")):
        return (f"Nothing at this address is Ark's API: check ARK_BASE_URL ({base_url}), which ends in /api/v3 "
                f"as in {DEFAULT_BASE_URL}.")
    hint = code_hint(code, model_env, param)
    if hint is None and status == 404 and path.startswith(TASKS_PATH + "/"):
        hint = TASK_NOT_FOUND_HINT
    return hint or HINTS_BY_STATUS.get(500 if status >= 500 else status, "").format(model_env=model_env) or None


@dataclass(frozen=True)
class Redirect:
    location: str


class MediaPolicy:
    """Where result files may be fetched from, for saving and previews: upstream URLs must not be a door into the host.
    Allowed: the origin of ARK_BASE_URL itself (how local proxies and tests work), the origins in DOUBAO_MEDIA_DOMAINS
    (Ark's storage by default), and any other host whose every address is public. Refused: loopback, private,
    link-local (cloud metadata), shared and reserved addresses, checked for each hop by name before it is fetched
    and by the address actually connected to."""

    def __init__(self, base_url: str, domains: Iterable[str]):
        self.origins = {_origin(base_url)} | {_origin(d) for d in domains if "*." not in d}
        self.wildcards = [(scheme, host) for scheme, _, host in (d.partition("://*.") for d in domains if "*." in d)]

    def _allowed_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return _origin(url) in self.origins or any(
            parts.scheme == scheme and (parts.hostname or "").endswith("." + host.split(":")[0].lower())
            for scheme, host in self.wildcards)

    def check(self, url: str) -> Callable[[str, str], str | None] | None:
        """Refuse a URL whose host is at an address files are not fetched from; else what checks the address it
        connects to (None for an allowed origin)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DoubaoError(f"not an http(s) URL: {_text(url, 100)!r}")
        if self._allowed_origin(url):
            return None
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443,
                                                                  type=socket.SOCK_STREAM)}
        except (OSError, UnicodeError):
            addresses = set()  # a name that does not resolve cannot be fetched either; one that resolves later is
        for address in sorted(addresses):  # checked when it connects
            if reason := self.refuse_address(parts.hostname, parts.hostname, address):
                raise DoubaoError(reason)
        return partial(self.refuse_address, parts.hostname)

    def refuse_address(self, host: str, connected_host: str, address: str) -> str | None:
        """Why fetching from `address` is refused, or None. Through a proxy (`connected_host` is not `host`) the
        proxy's address says nothing of the file's, and the name was checked before."""
        if connected_host.lower() != host.lower():
            return None
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return None
        ip = getattr(ip, "ipv4_mapped", None) or ip
        if ip.is_global and not ip.is_multicast:
            return None
        kind = ("loopback" if ip.is_loopback else "link-local (cloud metadata)" if ip.is_link_local else
                "private" if ip.is_private else "non-public")
        return (f"{host} is at {ip}, a {kind} address: result files are fetched only from public addresses, the "
                "origin of ARK_BASE_URL, and DOUBAO_MEDIA_DOMAINS (which the operator may extend)")


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(),
            parts.port or (443 if parts.scheme.lower() == "https" else 80))


def _failure_reason(error: requests.RequestException, timeout: float) -> str:
    """The short reason inside requests' long exception texts."""
    if isinstance(error, DeadlineExceeded):
        return str(error)
    if isinstance(error, requests.ConnectTimeout):
        return "timed out while connecting"
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, requests.exceptions.InvalidSchema):
        return f"redirected to a URL that is not http(s) ({_text(str(error), 200)})"
    if isinstance(error, requests.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    found = re.findall(r"\[Errno -?\d+\] [^'\")]+|Connection aborted|Connection refused|"
                       r"RemoteDisconnected\([^)]*\)|IncompleteRead\([^)]*\)", str(error))
    return found[-1] if found else f"{type(error).__name__}: {_text(str(error), 160)}"


def parse_answer(answer: Answer, path: str, secrets: Iterable[str], sent_request_id: str,
                 base_url: str = DEFAULT_BASE_URL, sent: str = "") -> dict[str, Any]:
    """The one place that turns an HTTP answer into data or an error, and the one place every text from upstream
    passes through: keys are redacted here, before anything is parsed, except in what the caller `sent` itself (see
    `_redact`). Only non-2xx is an ArkAPIError."""
    secrets = tuple(secrets)
    raw = answer.body.decode("utf-8", "replace")
    header = lambda name: _text(_redact(_unescaped(answer.headers.get(name, "")), secrets, sent),  # noqa: E731
                                NAME_MAX_CHARS)
    try:
        # A success keeps what only a short key (no real Ark key is) would mangle: a common word in a URL, say.
        body = Redactor(secrets if answer.status >= 300 else [s for s in secrets if len(s) >= LONG_SECRET_CHARS],
                        sent).values(json.loads(raw)) if raw.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack, from a hostile peer
        body = None
    excerpt = lambda: _excerpt(_redact(_unescaped(raw), secrets, sent), answer.headers)  # noqa: E731  (errors only)
    if 200 <= answer.status < 300:
        if not isinstance(body, dict):
            raise ArkConnectionError(f"Ark answered {answer.status} with a body that is not a JSON object: "
                                     f"{excerpt()}.")
        return body
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = _text(error.get("message"), MESSAGE_MAX_CHARS)
    if message is None and 300 <= answer.status < 400:
        message = f"redirect to {header('Location') or '?'}"
    elif message is None:
        reason = _text(_redact(answer.reason, secrets, sent), NAME_MAX_CHARS)
        message = f"{reason}; {excerpt()}" if reason else excerpt()
    # Ark appends "Request id: ..." to its messages; lift it out so the id is shown once.
    found = re.search(r"\s*Request id: ?(\S+?)\.?\s*$", message)
    if found:
        message = message[: found.start()]
    request_id = (found and found[1]) or header("X-Request-Id") or header("X-Client-Request-Id") or sent_request_id
    code, param = _text(error.get("code"), NAME_MAX_CHARS), _text(error.get("param"), NAME_MAX_CHARS)
    raise ArkAPIError(answer.status, code, message.rstrip(" ."), param, request_id,
                      _hint(answer.status, code, param, path, base_url))


def _transient_status(status: int) -> bool:
    """Rate limiting and server-side failures: worth trying again."""
    return status == 429 or status >= 500


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _never_connected(error: requests.RequestException) -> bool:
    """True when the request cannot have reached Ark: DNS failure, refused or timed-out connect."""
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return isinstance(error, requests.ConnectTimeout) or type(reason).__name__ in (
        "NewConnectionError", "NameResolutionError")


def _retry_delay(method: str, attempt: int, response: requests.Response | None = None,
                 error: requests.RequestException | None = None) -> float | None:
    """Seconds to wait before trying again, or None when this outcome is final.

    Ark's own `x-should-retry: true|false` on an error answer decides first, as in the official SDKs. Else
    GET and DELETE are retried on 429, 5xx, timeouts and dropped connections. POST creates tasks and
    costs money, so it is retried only where Ark cannot have acted on it: a 429, or a connection that
    never opened. Never a second task. An exchange the watchdog ended is never retried: its deadline is spent.
    """
    if error is not None:
        transient = isinstance(error, (requests.ConnectionError, requests.Timeout))
        if isinstance(error, DeadlineExceeded) or not transient or (method == "POST" and not _never_connected(error)):
            return None
    else:
        assert response is not None
        status, verdict = response.status_code, response.headers.get("x-should-retry", "").strip().lower()
        if status < 400 or verdict == "false":
            return None
        if verdict != "true" and (not _transient_status(status) or (method == "POST" and status != 429)):
            return None
        asked = _retry_after(response.headers.get("Retry-After"))
        if asked is not None:
            return asked if asked <= MAX_RETRY_AFTER_SECONDS else None
    return min(RETRY_FIRST_DELAY_SECONDS * 2 ** (attempt - 1), RETRY_MAX_DELAY_SECONDS) * random.uniform(
        1.0, 1.0 + RETRY_JITTER)


class ArkClient:
    """Synchronous client for the two Ark endpoints this server uses, and for result downloads. Call it from
    worker threads. Every exchange has a deadline, every answer a size cap, and no key leaves through an error."""

    def __init__(self, base_url: str, image_timeout: float = DEFAULT_IMAGE_TIMEOUT_SECONDS, secrets: Iterable[str] = (),
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 limits: Limits | None = None, media_domains: Iterable[str] = ()):
        self.base_url = base_url.rstrip("/")
        self.image_timeout = image_timeout
        self.server_keys = tuple(s for s in secrets if s)  # the server's own key, redacted even from a caller's answers
        self.keys_used: collections.OrderedDict[str, None] = collections.OrderedDict()  # callers' keys, lately
        self.media = MediaPolicy(self.base_url, media_domains)
        self.sleep, self.clock = sleep, clock
        self.limits = limits or Limits()
        self.watchdog = Watchdog(clock)
        self.session = requests.Session()
        self.session.max_redirects = MAX_REDIRECTS
        adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=self.limits.threads)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = f"doubao-mcp/{__version__} {requests.utils.default_user_agent()}"

    def _send(self, method: str, url: str, seconds: float, read: Callable[[requests.Response, Exchange], T], *,
              attempts: int = MAX_ATTEMPTS, read_timeout: float = TASK_READ_TIMEOUT_SECONDS, min_rate: float = 0.0,
              guard: Callable[[str, str], str | None] | None = None, deadline: float | None = None,
              **kwargs: Any) -> T:
        """One HTTP exchange, retried with backoff while the failure is transient (see `_retry_delay`) and the
        deadline `seconds` from now leaves room; `read` consumes the answer kept, within the same deadline."""
        deadline = deadline or self.clock() + seconds
        attempt = 0
        while True:  # ends with the last try's outcome, returned or raised
            attempt += 1
            with self.watchdog.watch(deadline, seconds, min_rate, self.limits.rate_window) as exchange:
                exchange.guard = guard
                response, error = self._attempt(method, url, deadline, read_timeout, exchange, kwargs)
                delay = _retry_delay(method, attempt, response, error) if attempt < attempts else None
                if delay is None or self.clock() + delay + MIN_ATTEMPT_SECONDS > deadline:
                    return _kept(response, error, exchange, read)
                outcome = type(error).__name__ if response is None else f"HTTP {response.status_code}"
                if response is not None:
                    response.close()
            log.info("%s %s: %s; retry %d in %.1f s", method, urlsplit(url).path, outcome, attempt, delay)
            self.sleep(delay)

    def _attempt(self, method: str, url: str, deadline: float, read_timeout: float, exchange: Exchange,
                 kwargs: Mapping[str, Any]) -> tuple[requests.Response | None, requests.RequestException | None]:
        """One try: the answer's head, or why none came (the watchdog's reason where it ended the exchange)."""
        remaining = max(deadline - self.clock(), 0.001)
        try:
            return self.session.request(method, url, stream=True, **kwargs, timeout=(
                min(CONNECT_TIMEOUT_SECONDS, remaining), min(read_timeout, remaining))), None
        except requests.RequestException as failure:
            return None, exchange.explain(failure)

    def _request(self, method: str, path: str, api_key: str, *, json: Any = None, retry: bool = True,
                 params: list[tuple[str, Any]] | None = None, seconds: float | None = None,
                 read_timeout: float = TASK_READ_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Every Ark API call goes through here: one place for auth, deadlines, retries, caps and error mapping."""
        url = self.base_url + path
        request_id = uuid.uuid4().hex
        self._used(api_key)
        secrets = (api_key, *self.secrets)
        sent = "\n".join([path, *_strings(json), *(str(value) for _, value in params or [])])
        try:
            answer = self._send(
                method, url, seconds or (self.limits.task_deadline if retry else min(read_timeout,
                                                                                     self.limits.task_deadline)),
                partial(_read_answer, cap=self.limits.max_answer_bytes), attempts=MAX_ATTEMPTS if retry else 1,
                read_timeout=read_timeout, json=json, params=params, auth=_BearerAuth(api_key),
                headers={"X-Client-Request-Id": request_id},
                allow_redirects=False,  # an API that redirects is misconfigured; never resend the key elsewhere
            )
        except requests.RequestException as error:
            if _never_connected(error):
                what_next = "Check your network, proxy and ARK_BASE_URL, then try again."
            elif method == "POST":  # it may have been processed, and billed
                what_next = ("Ark may have created the task anyway: check list_video_tasks before trying again."
                          if path == TASKS_PATH else "Ark may have processed it; try again if no result arrives.")
            else:
                what_next = "Try again in a moment."
            raise ArkConnectionError(_redact(f"Ark request failed ({method} {url}): "
                                             f"{_failure_reason(error, read_timeout)}. {what_next}", secrets, sent)
                                     ) from error
        return parse_answer(answer, path, secrets, request_id, self.base_url, sent)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every key this client knows: redacted from whatever an upstream says, a download's errors included."""
        return (*self.server_keys, *self.keys_used)

    def _used(self, api_key: str) -> None:
        self.keys_used[api_key] = None
        self.keys_used.move_to_end(api_key)
        while len(self.keys_used) > 256:
            self.keys_used.popitem(last=False)

    def download(self, url: str, folder: Folder, stem: str, kind: str, max_bytes: int) -> SavedFile:
        """Stream a result file to disk; only a file of the expected `kind` is kept."""
        return self._get_file(url, self.limits.download_deadline, max_bytes,
                              lambda chunks: write_file(folder, stem, chunks, kind, max_bytes))

    def fetch(self, url: str, kind: str, seconds: float, max_bytes: int = PREVIEW_SOURCE_MAX_BYTES) -> bytes:
        """A result file read into memory, as a download is written to disk, and only when its bytes are the
        expected `kind` of file."""
        def read(chunks: Iterator[bytes]) -> bytes:
            data = b"".join(capped(chunks, max_bytes, lambda: DoubaoError(f"the file is over {_size(max_bytes)}")))
            _expect(data[:16], kind)
            return data
        return self._get_file(url, seconds, max_bytes, read)

    def _get_file(self, url: str, seconds: float, max_bytes: int, keep: Callable[[Iterator[bytes]], T]) -> T:
        """A result file from its pre-signed URL, without the API key: within `seconds`, above the minimum rate, and
        refused unread when it declares more than `max_bytes`. `keep` consumes its body, chunk by chunk. Redirects
        are followed here, each hop checked by the media policy before it is fetched and at the address it connects
        to; no error quotes what a server that is not a media store said."""
        deadline = self.clock() + seconds
        try:
            for hop in range(MAX_REDIRECTS + 1):
                if hop and urlsplit(url).scheme not in ("http", "https"):
                    raise DoubaoError(f"redirected to a URL that is not http(s) ({_text(url, 100)})")
                answer = self._send("GET", url, seconds, partial(self._read_file, max_bytes=max_bytes, keep=keep),
                                    read_timeout=DOWNLOAD_SILENCE_SECONDS, min_rate=self.limits.download_min_rate,
                                    allow_redirects=False, guard=self.media.check(url), deadline=deadline)
                if not isinstance(answer, Redirect):
                    return answer
                url = urljoin(url, answer.location)
            raise DoubaoError(f"more than {MAX_REDIRECTS} redirects")
        except requests.RequestException as error:
            raise DoubaoError(_redact(_failure_reason(error, DOWNLOAD_SILENCE_SECONDS), self.secrets)) from error
        except DoubaoError as error:
            raise DoubaoError(_redact(str(error), self.secrets)) from None

    @staticmethod
    def _read_file(response: requests.Response, exchange: Exchange, max_bytes: int,
                   keep: Callable[[Iterator[bytes]], T]) -> T | Redirect:
        if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("Location"):
            return Redirect(response.headers["Location"])
        if response.status_code != 200:
            raise DoubaoError(f"the download answered HTTP {response.status_code}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise DoubaoError(f"the file is {_size(int(declared))}, over the {_size(max_bytes)} download cap")

        def counted() -> Iterator[bytes]:
            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                exchange.received += len(chunk)
                yield chunk
            if exchange.failure:  # a shut socket ends a body without a length like a complete one: keep nothing
                raise DeadlineExceeded(exchange.failure)
        return keep(counted())

    def close(self) -> None:
        """At shutdown: end every exchange in flight (their threads then finish at once) and the session."""
        self.watchdog.end_all("the server is stopping")
        self.session.close()

    def generate_images(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        return self._request("POST", IMAGES_PATH, api_key, json=body, seconds=self.image_timeout,
                             read_timeout=self.image_timeout)

    def create_task(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        return self._request("POST", TASKS_PATH, api_key, json=body)

    def get_task(self, task_id: str, api_key: str, retry: bool = True) -> dict[str, Any]:
        return self._request("GET", f"{TASKS_PATH}/{quote(task_id, safe='')}", api_key, retry=retry)

    def list_tasks(self, params: list[tuple[str, Any]], api_key: str, retry: bool = True) -> dict[str, Any]:
        return self._request("GET", TASKS_PATH, api_key, params=params, retry=retry)

    def delete_task(self, task_id: str, api_key: str) -> dict[str, Any]:
        return self._request("DELETE", f"{TASKS_PATH}/{quote(task_id, safe='')}", api_key)


# --- Deadlines: how an exchange is timed and ended ----------------------------------------------------------------
# A per-read timeout alone never ends an answer that trickles a byte before each timeout. Every exchange is watched
# by one thread, which ends one that runs past its deadline (or below its minimum rate) by shutting its socket. The
# socket is learnt from the connection classes of urllib3's pools, installed in one place: `watch_pools`.


class DeadlineExceeded(requests.exceptions.Timeout):
    """The watchdog ended the exchange: past its deadline, or slower than its minimum rate."""

_current = threading.local()  # the Exchange this thread is making, for the connection classes below


class Exchange:
    """One HTTP attempt (its redirects included): a deadline, and for downloads a minimum rate over each window.
    A per-read timeout alone never ends an answer that trickles a byte before each timeout; the watchdog ends an
    exchange that runs over by shutting its socket, which wakes the thread blocked on it."""

    def __init__(self, watchdog: Watchdog, now: float, deadline: float, seconds: float, min_rate: float,
                 window: float):
        self.watchdog, self.seconds = watchdog, seconds  # the whole call's time, retries included, for messages
        self.deadline, self.min_rate, self.window = deadline, min_rate, window
        self.received, self.window_start, self.window_bytes = 0, now, 0
        self.socket: socket.socket | None = None
        self.failure: str | None = None
        self.guard: Callable[[str, str], str | None] | None = None  # (host, address connected to): why refused

    def due(self) -> float:
        return min(self.deadline, self.window_start + self.window) if self.min_rate else self.deadline

    def check(self, now: float) -> str | None:
        if now >= self.deadline:
            return f"no complete answer within {self.seconds:g} s"
        if self.min_rate and now >= self.window_start + self.window:
            if self.received - self.window_bytes < self.min_rate * self.window:
                return f"slower than {self.min_rate / 1024:g} KB/s for {self.window:g} s"
            self.window_start, self.window_bytes = now, self.received
        return None

    def explain(self, error: requests.RequestException) -> requests.RequestException:
        """The watchdog's reason when it ended this exchange (the error seen is only a broken socket)."""
        return DeadlineExceeded(self.failure) if self.failure else error


class Watchdog:
    """The one thread that holds every exchange to its deadline and rate. It sleeps until the next one is due."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.lock = threading.Condition()
        self.exchanges: set[Exchange] = set()
        self.owners: dict[socket.socket, Exchange] = {}  # a kept-alive socket serves one exchange at a time
        self.thread: threading.Thread | None = None
        self.wakes_at = math.inf  # when the watchdog thread next looks

    @contextlib.contextmanager
    def watch(self, deadline: float, seconds: float, min_rate: float = 0.0, window: float = 0.0) -> Iterator[Exchange]:
        exchange = Exchange(self, self.clock(), deadline, seconds, min_rate, window)
        with self.lock:
            self.exchanges.add(exchange)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="doubao-watchdog", daemon=True)
                self.thread.start()
            if exchange.due() < self.wakes_at:  # only an earlier deadline is news: no wake-up per request
                self.lock.notify()
        _current.exchange = exchange
        try:
            yield exchange
        finally:
            _current.exchange = None
            with self.lock:
                self.exchanges.discard(exchange)
                if exchange.socket is not None and self.owners.get(exchange.socket) is exchange:
                    del self.owners[exchange.socket]

    def carry(self, exchange: Exchange, sock: socket.socket) -> None:
        """This socket now carries the exchange (told on the requesting thread by the connection classes)."""
        with self.lock:
            exchange.socket, self.owners[sock] = sock, exchange
            if exchange.failure:
                self._shut(exchange)

    def end_all(self, reason: str) -> None:
        with self.lock:
            for exchange in self.exchanges:
                exchange.failure = exchange.failure or reason
                self._shut(exchange)

    def _shut(self, exchange: Exchange) -> None:
        if exchange.socket is not None and self.owners.get(exchange.socket) is exchange:
            with contextlib.suppress(OSError):  # the base method: on TLS sockets too, without touching TLS state
                socket.socket.shutdown(exchange.socket, socket.SHUT_RDWR)

    def _run(self) -> None:
        with self.lock:
            while True:
                now = self.clock()
                for exchange in self.exchanges:
                    if exchange.failure is None and (reason := exchange.check(now)):
                        exchange.failure = reason
                        self._shut(exchange)
                due = [e.due() for e in self.exchanges if e.failure is None]
                self.wakes_at = min(due, default=math.inf)
                self.lock.wait(max(self.wakes_at - self.clock(), 0.01) if due else None)


def _carried_by(sock: socket.socket) -> None:
    exchange = getattr(_current, "exchange", None)
    if exchange is not None:
        exchange.watchdog.carry(exchange, sock)


def _check_peer(connection: Any) -> None:
    """The address a download actually connected to, checked again: a name that resolved to a public address when it
    was checked may resolve to a loopback one when connected (DNS rebinding)."""
    exchange = getattr(_current, "exchange", None)
    if exchange is None or exchange.guard is None:
        return
    try:
        peer = connection.sock.getpeername()[0]
    except OSError:
        return
    reason = exchange.guard(connection.host, peer)
    if reason:
        exchange.failure = reason
        connection.sock.close()
        raise ConnectionRefusedError(reason)


def _kept(response: requests.Response | None, error: requests.RequestException | None, exchange: Exchange,
          read: Callable[[requests.Response, Exchange], T]) -> T:
    """The last try's outcome: its error raised, or its answer read whole by `read` within the same exchange. A
    socket the watchdog shut after the last byte looked like a clean end is still its failure."""
    if response is None:
        raise error or requests.ConnectionError("no answer")
    with response:
        try:
            result = read(response, exchange)
        except requests.RequestException as failure:
            raise exchange.explain(failure) from failure
    if exchange.failure:
        raise DeadlineExceeded(exchange.failure)
    return result


def _watched(connection_class: type) -> type:
    class Watched(connection_class):  # type: ignore[valid-type, misc]
        """Tells the watchdog which socket carries this thread's exchange: once connected, and when reused."""

        def connect(self) -> None:
            super().connect()
            _carried_by(self.sock)
            _check_peer(self)

        def request(self, *args: Any, **kwargs: Any) -> None:
            if self.sock is not None:
                _carried_by(self.sock)
            super().request(*args, **kwargs)

    return Watched

WATCHED_POOLS = {
    "http": type("WatchedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": _watched(HTTPConnection)}),
    "https": type("WatchedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": _watched(HTTPSConnection)}),
}


def watch_pools(manager: Any) -> Any:
    """The one place urllib3's internals are touched: a pool manager's pools are made of Watched connections. Written
    for urllib3 2.x (`PoolManager.pool_classes_by_scheme`), the major version pyproject.toml pins."""
    manager.pool_classes_by_scheme = WATCHED_POOLS
    return manager


class _WatchedAdapter(HTTPAdapter):
    """Connection pools whose connections report their sockets to the watchdog, direct and through a proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        # SOCKS brings its own pools: those keep per-read timeouts only
        return manager if proxy.lower().startswith("socks") else watch_pools(manager)


# --- Worker lanes and waits: blocking work off the event loop, bounded; polling until a task is done --------------


class Lane:
    """A fixed set of daemon threads for one kind of blocking work. A job holds its thread, and its place in the
    count, until it really ends, even after its caller has given up: abandoned work cannot pile up, and a job
    whose caller left before it started never runs. A caller waits up to `slot_wait` for a free thread, then is
    told the server is busy. Threads are daemons, so a stuck one never keeps the process alive at exit.

    Not concurrent.futures.ThreadPoolExecutor: its threads are joined at interpreter exit, so one job stuck on a
    dead upstream would hold the process up to its deadline (ten minutes for a download), and its idle threads
    never end. This pool is that executor's queue and futures, with daemon threads that end after
    THREAD_IDLE_SECONDS without work."""

    def __init__(self, name: str, threads: int, slot_wait: float, busy: str):
        self.name, self.threads, self.slot_wait, self.busy = name, threads, slot_wait, busy
        self.jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self.started = 0  # threads alive; each ends after THREAD_IDLE_SECONDS without work
        self.lock = threading.Lock()
        self.free: asyncio.Semaphore | None = None  # made in the event loop that first uses the lane

    async def run(self, job: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        self.free = self.free or asyncio.Semaphore(self.threads)
        try:
            if self.free.locked():  # wait_for costs a task: only when there is something to wait for
                await asyncio.wait_for(self.free.acquire(), self.slot_wait)
            else:
                await self.free.acquire()
        except asyncio.TimeoutError:
            raise DoubaoError(self.busy.format(threads=self.threads)) from None
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        waiter: asyncio.Future[T] = loop.create_future()

        def settle() -> None:  # on the event loop: one wake-up frees the thread's place and hands over the outcome
            self.free.release()  # type: ignore[union-attr]
            if waiter.done():  # its caller gave up
                return
            if future.exception() is not None:
                waiter.set_exception(future.exception())  # type: ignore[arg-type]
            else:
                waiter.set_result(future.result())

        def finished(_: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the server stopped, nobody waits
                loop.call_soon_threadsafe(settle)

        future.add_done_callback(finished)
        with self.lock:
            if self.started < self.threads:
                self.started += 1
                threading.Thread(target=self._work, name=f"doubao-{self.name}", daemon=True).start()
            self.jobs.put((future, job))
        try:
            return await waiter
        except asyncio.CancelledError:
            future.cancel()  # a job not started yet never runs; one running ends on its own, then frees its place
            raise

    def _work(self) -> None:
        while True:
            try:
                future, job = self.jobs.get(timeout=THREAD_IDLE_SECONDS)
            except queue.Empty:
                with self.lock:
                    if self.jobs.empty():  # else a job came just now: take it
                        self.started -= 1
                        return
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as error:  # handed to the caller, who decides
                    future.set_exception(error)


def make_lanes(limits: Limits) -> dict[str, Lane]:
    """The quick lane (task queries, lists, cancels, folder checks) and the slow one (generations, uploads,
    downloads, reading input files): a flood of slow work never slows the quick calls."""
    return {
        "quick": Lane("quick", limits.quick_threads, limits.slot_wait, "The server is busy: all {threads} threads "
                      "for task queries are taken (Ark may be slow). Try again in a minute."),
        "slow": Lane("slow", limits.slow_threads, limits.slot_wait, "The server is busy: {threads} generations, "
                     "uploads and downloads are already running. Try again in a minute."),
    }


class Stopping:
    """Set when the server is told to stop: waits end early with what they know, and new calls are refused."""

    def __init__(self) -> None:
        self.is_set = False
        self.event: asyncio.Event | None = None

    def set(self) -> None:  # on the event loop's thread
        self.is_set = True
        if self.event:
            self.event.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, or return as soon as the server is stopping."""
        with anyio.move_on_after(seconds):
            await self.wait()

    async def wait(self) -> None:
        """Return when the server is stopping."""
        self.event = self.event or asyncio.Event()
        if not self.is_set:
            await self.event.wait()


def _transient(error: Exception) -> bool:
    return isinstance(error, ArkConnectionError) or (isinstance(error, ArkAPIError) and _transient_status(error.status))


def _timestamp(value: Any) -> float | None:
    """Unix seconds from a time a result shows (ISO 8601, as `_time` writes Ark's), or None."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def age_of(task: Mapping[str, Any]) -> float:
    """Seconds since Ark created the task: 0 when its answer did not say, or said something no running task can be
    (older than Ark lets a task run, or a clock skewed into the future)."""
    created = _timestamp(task.get("created_at"))
    age = time.time() - created if created else 0.0
    return age if 0 <= age <= MAX_TASK_RUN_SECONDS else 0.0


class Estimate(NamedTuple):
    seconds: float
    learnt: bool  # from tasks seen; else the family's prior, which may be far off: polls then stay closer

    def intervals(self, intervals: tuple[float, float]) -> tuple[float, float]:
        """The bounds of the polls (densest, sparsest) a wait timed by this estimate uses."""
        near, far = intervals
        return intervals if self.learnt else (near, min(far, PRIOR_POLL_SECONDS))


def _task_seconds(seconds: Any) -> bool:
    """Whether a task can have taken this long: a number, more than nothing, at most as long as Ark lets one run."""
    return isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= MAX_TASK_RUN_SECONDS


class Estimates:
    """How long a video task takes: the median of recent succeeded tasks of its family, of its resolution and
    duration where there are enough of those, else of the family, else the family's prior in VIDEO_MODELS.

    Kept per API key (by fingerprint): over HTTP one caller's tasks never move another's estimates, which would tell
    each what the other makes, and an account's own queue is what times its tasks. The server's own key also learns
    from the task record at first use; every key learns from the tasks this process sees succeed. A time that no
    task can take (a poisoned record, a clock gone wrong) is skipped, never trusted."""

    def __init__(self, record: Record | None = None, owner: str | None = None, keys: int = 256):
        self.record, self.owner, self.keys = record, owner, keys  # the record's tasks are the key `owner`'s
        self.loaded = record is None or owner is None
        self.seen: collections.OrderedDict[str, collections.deque[tuple[str, Any, Any, float]]] = (
            collections.OrderedDict())
        self.learnt: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.lock = threading.Lock()

    def _add(self, slot: str, task_id: str, model: Any, resolution: Any, duration: Any, seconds: float) -> None:
        with self.lock:
            if task_id in self.learnt or not _task_seconds(seconds):
                return
            self.learnt[task_id] = None
            if len(self.learnt) > ESTIMATE_TASKS_KEPT:
                self.learnt.popitem(last=False)
            if slot not in self.seen:
                self.seen[slot] = collections.deque(maxlen=ESTIMATE_HISTORY)
                if len(self.seen) > self.keys:
                    self.seen.popitem(last=False)
            self.seen.move_to_end(slot)
            self.seen[slot].append((family_key(model if isinstance(model, str) else ""), resolution, duration,
                                    seconds))

    def learn(self, api_key: str, tasks: Iterable[Mapping[str, Any]]) -> None:
        """Tasks Ark reported: each succeeded one teaches how long its kind takes (Ark's own created and updated)."""
        slot = key_fingerprint(api_key) or ""
        for task in tasks:
            if task.get("status") != "succeeded" or task["task_id"] in self.learnt:  # a list repeats them each call
                continue
            start, end = _timestamp(task.get("created_at")), _timestamp(task.get("updated_at"))
            if start and end:
                self._add(slot, task["task_id"], task.get("model"), task.get("resolution"), task.get("duration"),
                          end - start)

    def load(self) -> None:
        """The server key's finished tasks from the record, once: on a worker thread. A row that cannot be read is
        logged and skipped."""
        if self.loaded or self.record is None or self.owner is None:
            return
        self.loaded = True
        skipped = 0
        for task_id, model, stored, seconds in self.record.recent_durations(self.owner, ESTIMATE_HISTORY):
            try:
                parameters = json.loads(stored)
                resolution, duration = parameters.get("resolution"), parameters.get("duration")
            except (TypeError, ValueError, AttributeError):
                parameters = None
            if parameters is None or not _task_seconds(seconds):
                skipped += 1
                continue
            self._add(self.owner, task_id, model, resolution, duration, seconds)
        if skipped:
            log.warning("The task record %s has %d rows whose times or parameters cannot be read: left out of the "
                        "estimates.", self.record.path, skipped)

    def estimate(self, api_key: str, model: str, resolution: Any = None, duration: Any = None) -> Estimate:
        """Seconds from creation to a finished video, from what is in memory (see `load`)."""
        family = family_key(model)
        with self.lock:
            seen = list(self.seen.get(key_fingerprint(api_key) or "", ()))
        for alike in ([s for f, r, d, s in seen if (f, r, d) == (family, resolution, duration)],
                      [s for f, _, _, s in seen if f == family]):
            if len(alike) >= ESTIMATE_MIN_SAMPLES:
                return Estimate(statistics.median(alike[-ESTIMATE_SAMPLES:]), learnt=True)
        row = family_row("video", model)
        seconds = max(duration if isinstance(duration, int) and duration > 0 else 5, 5)
        return Estimate((row.seconds if row else VideoFamily.seconds) * RESOLUTION_COST.get(resolution or "720p", 1.0)
                        * seconds / 5, learnt=False)


class PollBatcher:
    """The polls of one API key's waits that fall within a moment of each other go to Ark as one request: a GET for
    one task, a list (`filter.task_ids`) for several, each waiter handed its own task as soon as it is known. Twenty
    waits on videos of one kind, started together and timed alike, cost one request a poll instead of twenty. On
    the event loop; every request it starts is kept until it ends."""

    def __init__(self, app: App, api_key: str):
        self.app, self.api_key = app, api_key
        self.pending: dict[str, list[asyncio.Future[VideoTask]]] = {}
        self.alone: set[str] = set()  # tasks to ask about alone when a list leaves them out (a wait's; not the watcher's)
        self.sending: set[asyncio.Task[None]] = set()  # the requests under way: asyncio keeps only weak references

    async def poll(self, task_id: str, alone_if_missing: bool = True) -> VideoTask:
        """The task as Ark reports it in the next shared request. A task a list leaves out is asked about alone, or,
        without `alone_if_missing` (the watcher, which paces those itself), raises NotListed."""
        future: asyncio.Future[VideoTask] = asyncio.get_running_loop().create_future()
        first = not self.pending
        self.pending.setdefault(task_id, []).append(future)
        if alone_if_missing:
            self.alone.add(task_id)
        if first:
            asyncio.get_running_loop().call_later(POLL_BATCH_SECONDS, self._start)
        return await future

    def _start(self) -> None:
        pending, self.pending = self.pending, {}
        alone, self.alone = self.alone, set()
        for task_id in list(pending)[LIST_PAGE_TASKS:]:  # past a list's page: the next batch
            for future in pending[task_id]:
                self._keep(self._requeue(task_id, future, task_id in alone))
        self._keep(self._send({task_id: pending[task_id] for task_id in list(pending)[:LIST_PAGE_TASKS]}, alone))

    def _keep(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, pending: dict[str, list[asyncio.Future[VideoTask]]], alone: set[str]) -> None:
        def settle(task_id: str, outcome: VideoTask | Exception) -> None:
            for future in pending[task_id]:
                if future.done():  # its wait gave up
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

        await look_up(self.app, list(pending), self.api_key, settle, alone.__contains__, retry=False)

    async def _requeue(self, task_id: str, future: asyncio.Future[VideoTask], alone_if_missing: bool) -> None:
        try:
            result = await self.poll(task_id, alone_if_missing)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
            return
        if not future.done():
            future.set_result(result)


class NotListed(DoubaoError):
    """A list request left the task out: Ark may have forgotten it. The watcher asks about it alone, at its pace."""


def one_per_task(tasks: Iterable[VideoTask]) -> list[VideoTask]:
    """One entry per task, where it first appears: a list that names a task twice (an upstream that lies, or a
    task listed as it changed) never yields two, and a final status is never replaced by an unfinished one."""
    kept: dict[str, VideoTask] = {}
    for task in tasks:
        seen = kept.get(task["task_id"])
        if seen is None or (seen["status"] not in FINAL_STATUSES and task["status"] in FINAL_STATUSES):
            kept[task["task_id"]] = task
    return list(kept.values())


def tasks_by_id(client: ArkClient, task_ids: list[str], api_key: str, retry: bool = True,
                filters: Filters = NO_FILTERS) -> dict[str, VideoTask]:
    """These tasks by list requests (`filter.task_ids`, and any other `filters`), each for a page that holds its ids,
    and paged on while Ark says there is more than it sent: those of them Ark returned, by id, shaped. Runs on a
    worker thread."""
    wanted = list(dict.fromkeys(task_ids))
    found: dict[str, VideoTask] = {}
    for start in range(0, len(wanted), LIST_PAGE_TASKS):
        ids = wanted[start:start + LIST_PAGE_TASKS]
        page, size, seen = 1, len(ids), 0
        while True:
            query = list_query(*filters, ids, page if page > 1 else None, size)
            listed = client.list_tasks(query, api_key, retry=retry)
            items = [task for task in shape_items(listed.get("items")) if task["task_id"] in ids]
            known = len(found)
            found = {task["task_id"]: task for task in one_per_task([*found.values(), *items])}
            seen += len(items)
            size = min(size, len(items)) or size  # Ark's own page size, where it sends fewer than asked for
            # On while Ark says it has more than it sent, and each page brings a task not seen yet (a list that
            # lies repeats itself): at most one page per task.
            more = (_int(listed.get("total")) or 0) > seen and len(found) > known
            if not more or len(found) == len(ids):
                break
            page += 1
    return found


async def look_up(app: App, task_ids: list[str], api_key: str, settle: Callable[[str, VideoTask | Exception], None],
                  alone: Callable[[str], bool] = lambda task_id: True, retry: bool = True,
                  filters: Filters | None = None) -> None:
    """Ask Ark about these tasks and `settle` each, with its task or why not, as soon as that is known: one GET for
    one task; for several, or with list `filters`, list requests, then a GET for each the list left out, all at
    once in the quick lane, so that a list that lies costs one request's time, not one per task. A task the list
    left out and `alone` declines is NotListed. With `retry` False, single attempts: the next poll is the retry."""
    async def one(task_id: str) -> None:
        try:
            outcome: VideoTask | Exception = await app.run("quick", fetch_task, app, task_id, api_key, retry)
        except Exception as error:
            outcome = error
        settle(task_id, outcome)

    found: dict[str, VideoTask] = {}
    listing = len(task_ids) > 1 or filters is not None
    if listing:
        try:
            found = await app.run("quick", listed_by_id, app, task_ids, api_key, retry, filters or NO_FILTERS)
        except Exception as error:  # each waiter decides what a failure means for its wait
            for task_id in task_ids:
                settle(task_id, error)
            return
        for task_id, task in found.items():
            settle(task_id, task)
    async with anyio.create_task_group() as group:
        for task_id in task_ids:
            if task_id in found:
                continue
            if not listing or alone(task_id):
                group.start_soon(one, task_id)
            else:
                settle(task_id, NotListed(f"{task_id} was not in Ark's list"))


def listed_by_id(app: App, task_ids: list[str], api_key: str, retry: bool, filters: Filters
                 ) -> dict[str, VideoTask]:
    """`tasks_by_id`, remembered (see `remembered`). Runs on a worker thread."""
    found = tasks_by_id(app.client, task_ids, api_key, retry, filters)
    return {task["task_id"]: task for task in remembered(app, list(found.values()), api_key)}


async def _polled_together(batcher: PollBatcher, task_ids: list[str]) -> dict[str, VideoTask | Exception]:
    """The watcher's polls, through a key's shared batcher: each task, or why not."""
    outcomes = await asyncio.gather(*(batcher.poll(task_id, alone_if_missing=False) for task_id in task_ids),
                                    return_exceptions=True)
    return {task_id: outcome if isinstance(outcome, (dict, Exception)) else DoubaoError("the poll was interrupted")
            for task_id, outcome in zip(task_ids, outcomes)}


def poll_interval(age: float, estimate: float, intervals: tuple[float, float]) -> float:
    """Seconds until the next poll of a task `age` seconds old that should take about `estimate`: rare early, dense
    around and after the estimate, and slowly sparser as it runs on past it."""
    near, far = intervals
    left = estimate - age
    if left > 0:
        return min(far, max(near, left / 3))
    return min(far if -left > estimate else OVERRUN_POLL_SECONDS, near + -left / 15)  # sparser only far past it


def grown(estimate: float, age: float) -> float:
    """A task past its estimate: the estimate grows with it (progress is shown against it, and never goes back)."""
    return max(estimate, age * 1.2 + 1)


async def wait_for_task(poll: Callable[[], Awaitable[VideoTask]], task: VideoTask, wait_seconds: float,
                        report: Callable[[float, float, str], Awaitable[None]],
                        intervals: tuple[float, float] = POLL_INTERVALS_SECONDS, estimate: float = 90.0,
                        age: float = 0.0, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
                        stopped: Callable[[], bool] = lambda: False,
                        poll_limit: float = TASK_READ_TIMEOUT_SECONDS) -> VideoTask:
    """Poll until the task is final or `wait_seconds` have passed: once soon, then timed by how long it should take
    (`estimate` seconds from its creation, `age` seconds ago). Progress, the task's age against its estimate, is
    reported every few seconds.

    Sleeping happens on the event loop, so a wait holds no thread, and a cancelled call stops here at once. The last
    poll starts no later than the deadline. `poll` makes a single attempt: the next poll is the retry of a
    transient failure, which keeps the deadline exact. Whatever fails, and when the server is stopping, the task
    comes back with what is known of it: the caller never loses its id. No poll is awaited longer than `poll_limit`
    (one request's own deadline), however long the queue before it: a wait ends within `wait_seconds` and one poll.
    """
    start = clock()
    total, polled = estimate, False
    failure: Exception | None = None
    while task["status"] not in FINAL_STATUSES:
        elapsed = clock() - start
        if elapsed >= wait_seconds:
            break
        # The first poll comes soon whatever the estimate: Ark refuses a prompt or an image within seconds.
        poll_at = elapsed + (poll_interval(age + elapsed, estimate, intervals) if polled else intervals[0])
        # On a grid of the clock: waits polling at about the same time poll at the same time, in one request.
        grid = min(POLL_GRID_SECONDS, intervals[0])
        poll_at = min(math.ceil(round((start + poll_at) / grid, 6)) * grid - start, wait_seconds)
        polled = True
        while elapsed < poll_at:  # progress every few seconds between polls: a client's silence timer never fires
            total = max(total, grown(estimate, age + elapsed))
            await report(age + elapsed, total, f"{task['task_id']}: {task['status']}, {age + elapsed:.0f} s of "
                         f"about {total:.0f} s")
            await sleep(min(PROGRESS_EVERY_SECONDS, poll_at - elapsed))
            if stopped():
                return _with(task, next_step="This server is stopping, so it stopped waiting; the task goes on at "
                             f"Ark. Call query_video_task with task_id {task['task_id']!r} later.")
            elapsed = clock() - start
        try:
            with anyio.fail_after(poll_limit):
                task, failure = await poll(), None
        except Exception as error:  # any failure, expected or not: the task id must come back
            failure = ArkConnectionError(f"no answer within {poll_limit:g} s") if isinstance(error, TimeoutError) \
                else error
            if not _transient(failure):
                break
    if failure:
        reason = str(failure) if isinstance(failure, DoubaoError) else f"unexpected {type(failure).__name__}"
        return _with(task, next_step=f"Checking the task failed ({reason}); it may still be running. Call "
                     f"query_video_task with task_id {task['task_id']!r} and wait_seconds=50 later.")
    return task


# --- Local files: opened once, confined, written atomically -------------------------------------------------------
# A path is checked and used in one step: opened once, then its open descriptor is checked and read or written.
# Under DOUBAO_ALLOWED_DIR it is opened from that folder down, one component at a time and never through a link,
# so a link swapped in between a check and a use cannot lead outside it. (Windows has no O_NOFOLLOW or dir_fd:
# there paths are resolved, checked, then opened.)

WALK_BENEATH = hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd

READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open; fstat refuses it after

PART_FILE = re.compile(r"\..+\.[0-9a-f]{8}\.part")

_LIVE_PARTS: set[str] = set()  # this process's unfinished downloads, removed at exit however it ends
_LIVE_PARTS_LOCK = threading.Lock()  # a .part file is made and listed in one step, so the exit misses none
_PARTS_ENDED = threading.Event()  # set at exit: a download still running on a daemon thread then makes no file


def open_beneath(path: Path, root: Path | None, flags: int, argument: str, make_folders: bool = False) -> int:
    """A descriptor for `path` (absolute, lexically normal), opened once; under `root` without following links.
    With `make_folders`, `path` is a folder, made when missing, parents too."""
    if root is None or not WALK_BENEATH:
        if make_folders:
            os.makedirs(path, exist_ok=True)
        return os.open(path, flags)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    parts = path.relative_to(root).parts
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if make_folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=fd)
        try:
            inner = os.open(part, (flags if last else os.O_RDONLY | os.O_DIRECTORY) | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                raise DoubaoError(f"{argument}: {path} is or passes through a symbolic link, and links are not "
                                  "followed inside DOUBAO_ALLOWED_DIR.") from error
            raise
        finally:
            os.close(fd)
        fd = inner
    return fd


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_input(path: Path, root: Path | None, argument: str, max_bytes: int, what: str) -> bytes:
    """A local input's bytes: a regular file of at most `max_bytes`, checked on the open file and read at most one
    byte past the limit, so a file swapped for a device or grown after the check cannot flood memory."""
    try:
        fd = open_beneath(path, root, READ_FLAGS, argument)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise DoubaoError(f"{argument}: {path} is a folder, not {what}." if stat.S_ISDIR(info.st_mode) else
                              f"{argument}: {path} is not a regular file.")
        size = f"is {_size(info.st_size)}, over" if info.st_size > max_bytes else "is over"  # or it grew since
        too_big = DoubaoError(f"{argument}: {path} {size} Ark's {_size(max_bytes)} limit for this input.")
        with os.fdopen(fd, "rb", buffering=0) as file:
            return b"".join(capped(iter(partial(file.read, DOWNLOAD_CHUNK_BYTES), b""), max_bytes, lambda: too_big))
    except FileNotFoundError as error:
        raise DoubaoError(f"{argument}: {path} does not exist.") from error
    except OSError as error:
        raise DoubaoError(f"{argument}: {path} cannot be read: {error.strerror or error}.") from error


class Folder:
    """A folder to save into, held open from the moment it is checked. Files are created relative to this
    descriptor, so a folder swapped for a link mid-call still gets them and nothing lands anywhere else.

    It is closed when its last user lets go (the call, or a save job still running after its caller left), so
    never under a thread that is still writing into it."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd, self.swept = path, fd, False

    def _at(self, name: str) -> tuple[str, dict[str, int]]:
        return (name, {"dir_fd": self.fd}) if self.fd is not None else (str(self.path / name), {})

    def create(self, name: str) -> int:
        """A new file, never an existing one and never through a link."""
        where, at = self._at(name)
        return os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666, **at)

    def unlink(self, name: str) -> None:
        where, at = self._at(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where, **at)

    def replace(self, source: str, target: str) -> None:
        if self.fd is None:
            os.replace(self.path / source, self.path / target)
        else:
            os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def sweep(self) -> None:
        """Remove the .part files a killed process left here, at once: a live download holds a lock on its own (where
        there are no locks, on Windows, one older than any download can be is removed)."""
        self.swept = True
        with contextlib.suppress(OSError), os.scandir(self.fd if self.fd is not None else self.path) as entries:
            for entry in entries:
                if not PART_FILE.fullmatch(entry.name):
                    continue
                if fcntl is None:
                    if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_PART_SECONDS:
                        self.unlink(entry.name)
                    continue
                where, at = self._at(entry.name)
                with contextlib.suppress(OSError):
                    fd = os.open(where, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), **at)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken: nobody is writing it
                        self.unlink(entry.name)
                    finally:
                        os.close(fd)

    def create_part(self, stem: str) -> tuple[str, int]:
        """A new hidden .part file, locked for as long as it is open: the lock is what tells a live download from one
        a killed process left. Made again if a sweep removed it between its creation and its lock."""
        while True:
            name = f".{stem}.{uuid.uuid4().hex[:8]}.part"
            fd = self.create(name)
            if fcntl is None:
                return name, fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:
                return name, fd
            os.close(fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    __del__ = close


def open_folder(path: Path, root: Path | None, argument: str = "save_dir") -> Folder:
    """The folder at `path`, made when missing (parents too), held open; refused when it is a file or cannot hold
    new files. `argument` is what to name in errors: save_dir, or the DOUBAO_OUTPUT_DIR setting."""
    try:
        if WALK_BENEATH:
            fd: int | None = open_beneath(path, root, os.O_RDONLY | os.O_DIRECTORY, argument, make_folders=True)
        else:  # Windows opens no folder: it is used by path
            os.makedirs(path, exist_ok=True)
            fd = None
    except (NotADirectoryError, FileExistsError) as error:
        raise DoubaoError(f"{argument} {path} is a file (or inside one), not a folder.") from error
    except OSError as error:
        raise DoubaoError(f"{argument} {path} cannot be made or opened as a folder: {error.strerror or error}."
                          ) from error
    folder = Folder(path, fd)
    probe = f".doubao-write-test-{uuid.uuid4().hex[:8]}"
    try:
        os.close(folder.create(probe))
        folder.unlink(probe)
    except OSError as error:
        folder.close()
        raise DoubaoError(f"{argument} {path} cannot hold new files ({error.strerror or error}): choose another "
                          "folder.") from error
    return folder


def write_file(folder: Folder, stem: str, chunks: Iterable[bytes], kind: str, max_bytes: int) -> SavedFile:
    """Stream chunks to a hidden .part file, check that the bytes are the `kind` of file expected ("image" or
    "video"), then move it to a name no existing file has. A failure at any point leaves nothing behind; the
    extension comes from the content."""
    if not folder.swept:
        folder.sweep()
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")[:100] or "doubao"
    with _LIVE_PARTS_LOCK:
        if _PARTS_ENDED.is_set():
            raise DoubaoError("not saved: the server is stopping")
        part, fd = folder.create_part(stem)
        live = str(folder.path / part)
        _LIVE_PARTS.add(live)
    log.debug("Writing %s", live)
    size, head, found, digest = 0, b"", None, hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in capped(chunks, max_bytes, lambda: DoubaoError(
                    f"the file is larger than the {_size(max_bytes)} download cap")):
                size += len(chunk)
                head += chunk[: 16 - len(head)]
                if found is None and len(head) == 16:
                    found = _expect(head, kind)
                digest.update(chunk)
                out.write(chunk)
        ext = (found or _expect(head, kind))[1]
        for n in range(1000):
            final = f"{stem}{f'-{n}' if n else ''}{ext}"
            try:
                os.close(folder.create(final))  # claims the name atomically: an existing file is never replaced
            except FileExistsError:
                continue
            try:
                folder.replace(part, final)
            except OSError:
                folder.unlink(final)
                raise
            return SavedFile(path=str(folder.path / final), bytes=size, sha256=digest.hexdigest())
        raise DoubaoError(f"{folder.path} already has 1000 files named {stem}*{ext}")
    finally:
        folder.unlink(part)
        _LIVE_PARTS.discard(live)


def _expect(head: bytes, kind: str) -> tuple[str, str]:
    """(MIME type, extension) of a download that must be an image or a video; anything else is refused, and never
    quoted: it may be another service's secret."""
    found = sniff(head)
    if not found or not found[0].startswith(kind + "/"):
        raise DoubaoError(f"the download is not {'an image' if kind == 'image' else 'a video'} ("
                          f"{found[0] if found else 'no known file type'}): not saved")
    return found


def remove_live_parts() -> None:
    """At exit: the .part files of downloads that never finished. A download that is about to make one (its thread
    outlives this call until the process ends) makes none: the lock is waited for at most a second, since this also
    runs in a signal handler."""
    _PARTS_ENDED.set()
    locked = _LIVE_PARTS_LOCK.acquire(timeout=1)
    try:
        for live in list(_LIVE_PARTS):
            with contextlib.suppress(OSError):
                os.unlink(live)
    finally:
        if locked:
            _LIVE_PARTS_LOCK.release()


def save_task_files(client: ArkClient, task: VideoTask, folder: Folder, max_bytes: int,
                    wanted: Iterable[str] = ("video_url", "last_frame_url")) -> VideoTask:
    """Download a succeeded task's `wanted` files (its video_url, last_frame_url); a failed download is reported,
    not raised. Each saved file says its kind, so nothing is ever told apart by its name."""
    named = {"video_url": (task["task_id"], "video"), "last_frame_url": (f"{task['task_id']}{LAST_FRAME_NAME}", "image")}
    return _with(task, **_save_each(
        (task[key], partial(_tagged, {"kind": FILE_KINDS[key]}, client.download, task[key], folder, *named[key],
                            max_bytes)) for key in wanted if task.get(key)))


def _tagged(tags: Mapping[str, Any], save: Callable[..., SavedFile], *args: Any) -> SavedFile:
    return SavedFile(**save(*args), **tags)  # type: ignore[typeddict-item]


def save_images(client: ArkClient, data: list[Any], result: ImageResult, folder: Folder,
                max_bytes: int) -> ImageResult:
    """Save each generated image, from its URL or its inline b64_json, named by time and index."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jobs = []
    for image in result["images"]:
        index, item = image["index"], data[image["index"]]
        stem, tags = f"doubao-{stamp}-{index}", {"kind": "image", "index": index}
        if image.get("url"):
            jobs.append((image["url"], partial(_tagged, tags, client.download, image["url"], folder, stem, "image",
                                               max_bytes)))
        else:  # map() decodes as write_file reads, so a bad payload is this image's save error
            chunks = map(base64.b64decode, [item["b64_json"]])
            jobs.append((f"image {index} (b64_json)", partial(_tagged, tags, write_file, folder, stem, chunks, "image",
                                                              max_bytes)))
    return ImageResult(**result, **_save_each(jobs))


def _save_each(jobs: Iterable[tuple[str, Callable[[], SavedFile]]]) -> dict[str, Any]:
    """Run each (source, save) job; the result's `saved_files` and `save_errors`, where there are any."""
    saved: list[SavedFile] = []
    errors: list[SaveError] = []
    for source, job in jobs:
        try:
            saved.append(job())
        except (DoubaoError, OSError, ValueError) as error:
            log.warning("Saving %s failed: %s", source[:100], error)
            errors.append(SaveError(source=source, error=str(error)))
    return _compact({"saved_files": saved or None, "save_errors": errors or None})


# --- The record and the watcher: no video is lost -----------------------------------------------------------------
# A video takes minutes and its links last 24 h: a closed conversation, a client timeout or a restart must not
# lose it. Every task this server creates gets a row in a local SQLite file; a watcher thread saves the video
# of a task created with save_dir when it finishes, whoever still listens, and a restarted server resumes it.
# The record is never on a call's critical path: a write that finds the file locked, full or read-only waits a
# fraction of a second, then is queued and retried off the call's thread; a read that fails reads as "nothing
# recorded". A call never fails because of it, and its task id always comes back.

RECORD_VERSION = 2  # PRAGMA user_version of the schema below; older versions of ours are migrated

RECORD_APP_ID = 0x44424D43  # PRAGMA application_id "DBMC": this file is doubao-mcp's own

RECORD_SCHEMA = ("""
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    base_url TEXT NOT NULL,                 -- the Ark it lives at
    owner TEXT,                             -- fingerprint of the server key that made it; NULL: a caller's key
    model TEXT, prompt TEXT, parameters TEXT,  -- the first 200 characters of the prompt, the main parameters
    save_dir TEXT, last_frame INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL, video_url TEXT, last_frame_url TEXT, error TEXT,
    created REAL NOT NULL, updated REAL NOT NULL, finished REAL,
    files TEXT, save_error TEXT,            -- JSON [{"path", "bytes", "sha256", "kind"}], why saving failed
    watcher TEXT, watched REAL,             -- pid@host of the process watching it, and when it last polled
    saver TEXT, saving REAL,                -- who is saving it, since when: each video is saved once
    complete INTEGER NOT NULL DEFAULT 0     -- every file Ark gave (video, last frame) is saved
)""", """
CREATE INDEX tasks_unsaved ON tasks (owner, base_url) WHERE save_dir IS NOT NULL AND complete = 0""")

V1_COLUMNS = frozenset({"task_id", "base_url", "owner", "model", "prompt", "parameters", "save_dir", "last_frame",
                        "status", "video_url", "last_frame_url", "error", "created", "updated", "finished", "files",
                        "save_error", "watcher", "watched", "saver", "saving"})

LOCK_WAIT_SECONDS = 0.2  # the longest a call waits for the record's write lock; then its write is queued

CLAIM_WAIT_SECONDS = 2.0  # a claim to save a video may wait longer: it is what keeps a video from being saved twice

RETRY_WRITES_SECONDS = 5.0  # queued writes are tried again this often, on a thread of their own

MAX_QUEUED_WRITES = 10_000  # past this, the oldest queued writes are dropped (with a warning)

WATCH_BEAT_SECONDS = 30.0  # how often a watching process stamps its tasks as watched

WATCH_STALE_SECONDS = 120.0  # a watcher that has not stamped them for this long is gone (a download may hold it up:

# then a second process may watch too, and the claim still saves each video once)
SAVE_STALE_SECONDS = 2 * DOWNLOAD_DEADLINE_SECONDS + 60  # a video and its last frame, each within its deadline

LINK_LIFETIME_SECONDS = 24 * 3600.0

ARK_RETENTION_SECONDS = 7 * 24 * 3600.0  # Ark forgets a task after 7 days: an older one is closed without asking

RECORD_CACHE_TASKS = 10_000

FILE_KINDS = {"video_url": "video", "last_frame_url": "last_frame"}  # a task's result URL, and the file saved from it


def default_state_dir(env: Mapping[str, str]) -> Path:
    """The platform's folder for an application's data: XDG_DATA_HOME, ~/Library/Application Support, LOCALAPPDATA."""
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "doubao-mcp"


def key_fingerprint(api_key: str | None) -> str | None:
    """Which key made a task, without keeping the key: a server resumes only the tasks its own key can see."""
    return hashlib.sha256(f"doubao-mcp:{api_key}".encode()).hexdigest()[:16] if api_key else None


class RecordUnusable(Exception):
    """The record's file is not one this server can use: another program's, a newer version's, or not SQLite."""


def _is_locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error))


@dataclass
class TaskFiles:
    """What the record holds of a task's saving: the files (each marked missing when it is no longer there), whether
    every file Ark gave is among them, and why the last save failed."""

    files: list[SavedFile]
    complete: bool
    error: str | None


class Record:
    """The local record of video tasks. Safe for several server processes at once (WAL, a short busy timeout, and
    claims made in one UPDATE); a task's row is written when it is created and when what Ark says of it
    changes, so a query of an unchanged task writes nothing. It never holds a key, and never raises."""

    def __init__(self, folder: Path, base_url: str, retry_every: float = RETRY_WRITES_SECONDS):
        self.path, self.base_url, self.retry_every = folder / "tasks.sqlite3", base_url, retry_every
        # pid@host, and a token: a container restarts its server with the same pid, and that is another process.
        self.me = f"{os.getpid()}@{socket.gethostname()}#{os.urandom(4).hex()}"
        self.lock = threading.Lock()  # one connection, used from the lanes' threads and the watcher's
        self.db: sqlite3.Connection | None = None
        self.queued: collections.deque[tuple[str, tuple[Any, ...]]] = collections.deque()  # writes not done yet
        self.retrying: threading.Thread | None = None
        self.known: dict[str, tuple[Any, ...]] = {}  # what this process last wrote of each task (a cache: see observed)
        self.warned = 0.0
        try:
            self.open()
        except sqlite3.Error as error:  # locked by another process, say: opened later, off every call's path
            if not _is_locked(error):
                raise
            self._warn(error)
            self._start_retrying()

    def open(self) -> None:
        """Open the file, made when missing, and bring its schema to this version. Raises RecordUnusable for a file
        that is not ours, sqlite3.Error when it is locked or unreadable, OSError when the folder cannot be made."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):  # an existing folder keeps its mode: prompts and paths are private
            if folder.stat().st_uid == os.getuid():
                os.chmod(folder, 0o700)
        db = sqlite3.connect(self.path, timeout=LOCK_WAIT_SECONDS, check_same_thread=False, isolation_level=None)
        try:
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
            _migrate(db, self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; no fsync on every change
        except BaseException:
            db.close()
            raise
        self.db = db

    def _warn(self, error: BaseException) -> None:
        if time.monotonic() - self.warned > 60:  # a failing disk must not flood the log
            self.warned = time.monotonic()
            what = "is locked by another process" if _is_locked(error) else f"cannot be used ({error})"
            log.warning("The task record %s %s: calls go on without it; what it missed is written when it can be.",
                        self.path, what)

    def _flush(self) -> bool:
        """Write the queued writes, in order. Under self.lock."""
        try:
            if self.db is None:
                self.open()
            assert self.db is not None
            while self.queued:
                sql, values = self.queued[0]
                self.db.execute(sql, values)
                self.queued.popleft()
            return True
        except (sqlite3.Error, OSError, RecordUnusable) as error:
            self._warn(error)
            return False

    def _write(self, sql: str, *values: Any) -> None:
        """A write that never holds up a call for long: done now, or queued behind earlier ones."""
        with self.lock:
            self.queued.append((sql, values))
            if len(self.queued) > MAX_QUEUED_WRITES:
                self.queued.popleft()
                log.warning("The task record %s has missed over %d writes: the oldest is dropped.", self.path,
                            MAX_QUEUED_WRITES)
            if len(self.queued) > 1 or not self._flush():  # already failing: the retrying thread writes it
                self._start_retrying()

    def _start_retrying(self) -> None:
        if self.retrying is None or not self.retrying.is_alive():
            self.retrying = threading.Thread(target=self._retry, name="doubao-record", daemon=True)
            self.retrying.start()

    def _retry(self) -> None:
        pause = LOCK_WAIT_SECONDS  # soon at first: another server opening the same record holds it a moment
        while True:
            time.sleep(pause)
            pause = min(pause * 2, self.retry_every)
            with self.lock:
                if self._flush():
                    log.info("The task record %s is written again.", self.path)
                    return

    def _read(self, sql: str, *values: Any) -> list[Any]:
        """Rows, or none when the record cannot be read now: a call then goes on as if nothing were recorded."""
        with self.lock:
            if self.queued:  # what it missed first, so that it reads what this process did
                self._flush()
            try:
                return self.db.execute(sql, values).fetchall() if self.db else []
            except sqlite3.Error as error:
                self._warn(error)
                return []

    def _change(self, sql: str, *values: Any) -> int | None:
        """A write whose outcome matters now (a claim): the rows it changed, or None when the record cannot say."""
        with self.lock:
            if self.queued and not self._flush() or self.db is None:
                return None
            try:
                self.db.execute(f"PRAGMA busy_timeout = {int(CLAIM_WAIT_SECONDS * 1000)}")
                return self.db.execute(sql, values).rowcount
            except sqlite3.Error as error:
                self._warn(error)
                return None
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_SECONDS * 1000)}")

    def created(self, task: VideoTask, body: Mapping[str, Any], save_dir: Path | None, owner: str | None,
                watched: bool = False) -> None:
        """A new task; `watched`: this process's watcher will save it."""
        prompt = next((item["text"] for item in body["content"] if item.get("type") == "text"), "")
        parameters = {k: v for k, v in body.items()  # not callback_url: its query string may hold a token
                      if k not in ("model", "content", "callback_url") and isinstance(v, (int, float, str))}
        now = time.time()
        self._write("INSERT OR IGNORE INTO tasks (task_id, base_url, owner, model, prompt, parameters, save_dir, "
                    "last_frame, status, created, updated, watcher, watched) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?)", task["task_id"], self.base_url, owner, body["model"], prompt[:200], json.dumps(parameters),
                    str(save_dir) if save_dir else None, bool(body.get("return_last_frame")), task["status"], now, now,
                    self.me if watched else None, now if watched else None)
        self.known[task["task_id"]] = self._state(task)

    @staticmethod
    def _state(task: Mapping[str, Any]) -> tuple[Any, ...]:
        return (task["status"], task.get("video_url"), task.get("last_frame_url"),
                task.get("error_code") and f"{task['error_code']}: {task.get('error_message', '')}")

    def observed(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """What Ark said of these tasks, written only where it changed."""
        for task in tasks:
            state = self._state(task)
            if self.known.get(task["task_id"]) == state:
                continue
            if len(self.known) >= RECORD_CACHE_TASKS:  # a server listing thousands of tasks: forgetting costs a write
                self.known.clear()
            now = time.time()
            self._write("UPDATE tasks SET status = ?, video_url = ?, last_frame_url = ?, error = ?, updated = ?, "
                        "finished = COALESCE(finished, ?) WHERE task_id = ?", *state, now,
                        now if state[0] in FINAL_STATUSES else None, task["task_id"])
            self.known[task["task_id"]] = state

    def files_of(self, task_ids: Iterable[str]) -> dict[str, TaskFiles]:
        """What the record holds of these tasks' saving, for those it has saved or tried to."""
        ids = list(task_ids)[:10_000]
        rows = self._read(f"SELECT task_id, files, complete, save_error FROM tasks WHERE (files IS NOT NULL OR "
                          f"save_error IS NOT NULL) AND task_id IN ({', '.join('?' * len(ids))})", *ids) if ids else []
        found: dict[str, TaskFiles] = {}
        for task_id, files, complete, error in rows:
            try:
                saved = [self._saved_file(stored) for stored in json.loads(files or "[]")]
            except (TypeError, ValueError, KeyError, AttributeError):
                log.warning("The task record %s holds files of %s that cannot be read: they are left out.", self.path,
                            _text(str(task_id), 100))
                saved = []
            found[task_id] = TaskFiles(saved, bool(complete) and bool(saved),
                                       error if isinstance(error, str) else None)
        return found

    @classmethod
    def _readable_files(cls, files: Any) -> bool:
        try:
            return all(cls._saved_file(stored) for stored in json.loads(files))
        except (TypeError, ValueError, KeyError, AttributeError):
            return False

    @staticmethod
    def _saved_file(stored: Any) -> SavedFile:
        """A file as the record holds it, checked: a row another program wrote may hold anything."""
        path, size, kind, digest = stored["path"], stored["bytes"], stored.get("kind") or "video", stored.get("sha256")
        if not (isinstance(path, str) and _int(size) is not None and kind in FILE_KINDS.values()):
            raise ValueError("not a saved file")
        one = SavedFile(path=path, bytes=size, kind=kind)
        if isinstance(digest, str):
            one["sha256"] = digest
        if not os.path.isfile(path):
            one["missing"] = True
        return one

    def save(self, task: Mapping[str, Any], folder: Path, save: Callable[[], Mapping[str, Any]],
             again: bool = False) -> Mapping[str, Any] | None:
        """`save()` the task's missing files into `folder` and record every file it has (its result's saved_files),
        unless the task is saved already (`again`: some of its files are missing) or another live process, or this
        one, is saving it: None then. Each video is saved once. A task made elsewhere is recorded now, so that it is
        not saved twice either. A record that cannot be read or written does not stop the save."""
        task_id = task["task_id"]
        now = time.time()
        self._write("INSERT OR IGNORE INTO tasks (task_id, base_url, model, save_dir, status, video_url, last_frame_url, "
                    "created, updated, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", task_id, self.base_url,
                    task.get("model"), str(folder), task["status"], task.get("video_url"), task.get("last_frame_url"),
                    now, now, now if task["status"] in FINAL_STATUSES else None)
        self.observed([task])
        if self._claim(task_id, again) is False:
            return None
        result: Mapping[str, Any] = {}
        try:
            result = save()
        finally:
            files = [{"path": f["path"], "bytes": f["bytes"], "sha256": f.get("sha256"), "kind": f.get("kind")}
                     for f in result.get("saved_files", [])]
            wanted = {kind for key, kind in FILE_KINDS.items() if task.get(key)}
            complete = wanted <= {f["kind"] for f in files}
            self._write("UPDATE tasks SET files = ?, complete = ?, save_error = ?, saver = NULL WHERE task_id = ?",
                        json.dumps(files) if files else None, complete,
                        None if complete else "; ".join(e["error"] for e in result.get("save_errors", [])) or None,
                        task_id)
        return result

    def _claim(self, task_id: str, again: bool) -> bool | None:
        """Whether this process may save the task now; None when the record cannot say (then it saves anyway: a
        video saved twice beats one never saved)."""
        rows = self._read("SELECT files, complete, saver, saving FROM tasks WHERE task_id = ?", task_id)
        if not rows:
            return None
        files, complete, saver, saving = rows[0]
        if complete and not self._readable_files(files):  # a row that claims files it does not hold: save them
            again = True
        try:
            if (complete and not again) or self._alive(saver, saving, SAVE_STALE_SECONDS):
                return False
        except (TypeError, ValueError):  # a saver stamp another program wrote: not a live saver
            pass
        # Taken only if the row is still as read: of two processes that read it, one wins, and one that read it
        # before another's whole save (claim, files, release) finds the files and the claim's time changed.
        changed = self._change("UPDATE tasks SET saver = ?, saving = ? WHERE task_id = ? AND files IS ? AND saver IS ? "
                               "AND saving IS ?", self.me, time.time(), task_id, files, saver, saving)
        return None if changed is None else changed == 1

    def watching(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            self._write(f"UPDATE tasks SET watcher = ?, watched = ? WHERE task_id IN ({', '.join('?' * len(chunk))})",
                        self.me, time.time(), *chunk)

    def heartbeat(self) -> None:
        """This process still watches its tasks: one write for all of them, every WATCH_BEAT_SECONDS."""
        self._write("UPDATE tasks SET watched = ? WHERE watcher = ? AND complete = 0 AND save_dir IS NOT NULL AND "
                    "status IN ('queued', 'running', 'succeeded')", time.time(), self.me)

    def gave_up(self, task_id: str, error: str | None) -> None:
        """Nothing more to save for this task (cancelled, deleted, or Ark refuses it; `error` says why, when it is a
        failure): no start-up resumes it."""
        self._write("UPDATE tasks SET save_dir = NULL, save_error = ?, saver = NULL WHERE task_id = ?", error, task_id)

    def recent_durations(self, owner: str, limit: int) -> list[tuple[Any, Any, Any, Any]]:
        """(task id, model, parameters, seconds from creation to finish seen) of the latest succeeded tasks the key
        `owner` created (a task first seen by a save has no parameters, and no creation time of its own). As stored:
        the caller checks every value."""
        return self._read("SELECT task_id, model, parameters, finished - created FROM tasks WHERE status = 'succeeded' "
                          "AND owner = ? AND finished IS NOT NULL AND parameters IS NOT NULL ORDER BY finished DESC "
                          "LIMIT ?", owner, limit)

    def failed(self, task_id: str, error: str) -> None:
        """Saving failed before it began (the folder went away): shown to callers, tried again at the next start."""
        self._write("UPDATE tasks SET save_error = ? WHERE task_id = ?", error, task_id)

    def orphans(self, owner: str) -> list[tuple[str, str]]:
        """(task id, save folder) of this key's tasks that nobody alive watches and whose files are not all saved:
        unfinished, or succeeded with links still valid. Tasks older than Ark keeps them are closed here, unasked."""
        now = time.time()
        self._write("UPDATE tasks SET save_dir = NULL, save_error = ? WHERE owner = ? AND base_url = ? AND save_dir IS "
                    "NOT NULL AND complete = 0 AND created < ?", "Ark keeps tasks 7 days: this one is gone, unsaved.",
                    owner, self.base_url, now - ARK_RETENTION_SECONDS)
        rows = self._read("SELECT task_id, save_dir, status, finished, watcher, watched FROM tasks WHERE owner = ? AND "
                          "base_url = ? AND save_dir IS NOT NULL AND complete = 0 AND created >= ? ORDER BY created DESC",
                          owner, self.base_url, now - ARK_RETENTION_SECONDS)
        found = []
        for task_id, save_dir, status, finished, watcher, watched in rows:
            try:
                alive = self._alive(watcher, watched, WATCH_STALE_SECONDS)
                links_valid = status == "succeeded" and (finished or 0) > now - LINK_LIFETIME_SECONDS
            except (TypeError, ValueError):
                alive, links_valid = True, False  # a row another program wrote: never trusted, never resumed
            readable = isinstance(task_id, str) and re.fullmatch(ID_PATTERN, task_id) and isinstance(save_dir, str)
            if readable and not alive and (status in ("queued", "running") or links_valid):
                found.append((task_id, save_dir))
        return found

    def _alive(self, worker: str | None, since: float | None, stale_after: float) -> bool:
        """Whether the process `worker` (pid@host#token) still does what it stamped at `since`: on this host, while
        its pid lives; anywhere, until the stamp is stale (a reused pid, a process on another host that died)."""
        if not worker or time.time() - (since or 0) > stale_after:
            return False
        if worker == self.me:
            return True
        pid, _, host = worker.partition("#")[0].partition("@")
        if host == socket.gethostname() and os.name == "posix":
            if pid == str(os.getpid()):  # an earlier process with this pid: this one has replaced it
                return False
            with contextlib.suppress(PermissionError, ValueError):
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    return False
        return True


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring a record to RECORD_VERSION: make a new one, or migrate an older one of ours. A file that is not ours
    is refused (RecordUnusable) and left as it is."""
    try:
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find it done
    except sqlite3.DatabaseError as error:
        if _is_locked(error):
            raise
        raise RecordUnusable(f"it is not an SQLite database ({error})") from error
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        if app not in (0, RECORD_APP_ID):
            raise RecordUnusable(f"it belongs to another application (application_id {app:#x})")
        if version > RECORD_VERSION:
            raise RecordUnusable(f"it was written by a newer doubao-mcp (schema {version}; this one reads up to "
                                 f"{RECORD_VERSION})")
        if version == 0 and tables:
            raise RecordUnusable(f"it is another program's database (tables {', '.join(sorted(tables))[:120]})")
        if version in (1, RECORD_VERSION) and not V1_COLUMNS <= columns:
            raise RecordUnusable(f"its tasks table lacks {', '.join(sorted(V1_COLUMNS - columns))[:120]}")
        if version == 0:
            for statement in RECORD_SCHEMA:  # not executescript: it would commit
                db.execute(statement)
        elif version == 1:
            _migrate_v1(db)
        db.execute(f"PRAGMA application_id = {RECORD_APP_ID}")
        db.execute(f"PRAGMA user_version = {RECORD_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Version 1 kept files without their kind, and counted a task saved when it had any file: a video whose save
    failed beside a saved last frame was never finished. Kinds are read from the v1 file names, once."""
    db.execute("ALTER TABLE tasks ADD COLUMN complete INTEGER NOT NULL DEFAULT 0")
    for task_id, files, video_url, last_frame_url in db.execute(
            "SELECT task_id, files, video_url, last_frame_url FROM tasks WHERE files IS NOT NULL").fetchall():
        stored = json.loads(files)
        for one in stored:
            one["kind"] = "last_frame" if one["path"].endswith((f"{LAST_FRAME_NAME}.png", f"{LAST_FRAME_NAME}.jpeg")) \
                else "video"
        wanted = {kind for kind, url in (("video", video_url), ("last_frame", last_frame_url)) if url} or {"video"}
        db.execute("UPDATE tasks SET files = ?, complete = ? WHERE task_id = ?",
                   (json.dumps(stored), wanted <= {one["kind"] for one in stored}, task_id))
    db.execute("CREATE INDEX tasks_unsaved ON tasks (owner, base_url) WHERE save_dir IS NOT NULL AND complete = 0")


def save_missing(client: ArkClient, record: Record | None, task: VideoTask, folder: Folder, max_bytes: int,
                 known: TaskFiles | None) -> VideoTask | None:
    """Save what of a succeeded task is not saved yet, by what the record knows of each file's kind: files it holds
    are reported, not fetched again (one that went missing is), and a save that failed half-way is finished. With a
    record, each video is saved once across processes; None: the watcher or another process is saving it now."""
    present = [f for f in (known.files if known else []) if not f.get("missing")]
    have = {f.get("kind") for f in present}
    wanted = [key for key, kind in FILE_KINDS.items() if task.get(key) and kind not in have]
    bare: Any = {k: v for k, v in task.items() if k not in ("saved_files", "save_errors")}
    if not wanted:
        return _with(bare, saved_files=present) if present else task

    def save() -> Mapping[str, Any]:
        fetched = save_task_files(client, bare, folder, max_bytes, wanted)
        files = present + fetched.get("saved_files", [])
        return _with(bare, **({"saved_files": files} if files else {}),
                     **{k: fetched[k] for k in ("save_errors",) if k in fetched})
    return record.save(task, folder.path, save, again=bool(known and known.files)) if record else save()  # type: ignore

WATCH_GAP_SECONDS = 0.5  # at least this long between two of the watcher's requests: a large record floods nobody

RESUME_LOG_LINES = 20  # resumed tasks named one by one in the log; the rest are counted


class Watcher:
    """One daemon thread that keeps watching the tasks made with a save folder, whoever still listens: it polls
    them (many in one list request) with the same backoff as a wait, at a bounded pace, saves the video (and its
    last frame) when it succeeds, records a failure, and stops at a final state. It uses the server's own key,
    and one connection at a time. Record errors never stop it: the record never raises."""

    def __init__(self, client: ArkClient, record: Record, api_key: str, config: Config,
                 gap: float = WATCH_GAP_SECONDS):
        self.client, self.record, self.api_key, self.config, self.gap = client, record, api_key, config, gap
        self.owner = key_fingerprint(api_key) or ""
        self.due: list[tuple[float, str]] = []  # a heap of (when to poll next, task id)
        self.tasks: dict[str, tuple[Path, float]] = {}  # task id: save folder, the interval after the next poll
        self.new: set[str] = set()  # tasks not polled yet
        self.alone: set[str] = set()  # tasks a list answer left out: asked about one by one
        self.condition = threading.Condition()
        self.stopping = threading.Event()  # what a pause between requests waits on: a new task does not shorten it
        self.shared: tuple[asyncio.AbstractEventLoop, PollBatcher] | None = None
        self.stopped = self.resuming = False
        self.thread: threading.Thread | None = None
        self.beat = 0.0

    def watch(self, task_id: str, folder: Path, due: float | None = None) -> Path:
        """Save this task's video (and its last frame, when it was asked for) into `folder` when it succeeds; the
        folder it is saved into (an earlier one, when the task is watched already). Quick enough for the event
        loop: the record learns who watches it at its first poll."""
        with self.condition:
            if task_id in self.tasks:
                return self.tasks[task_id][0]
            if self.stopped:
                return folder
            first, _ = self.config.poll_intervals
            self.tasks[task_id] = (folder, first * 1.5)
            self.new.add(task_id)
            heapq.heappush(self.due, (due or time.monotonic() + first, task_id))
            self._start()
            self.condition.notify()
        return folder

    def resume(self) -> None:
        """At start-up: this key's tasks that a stopped or killed server left unsaved. Found on the watcher's own
        thread, so start-up waits for nothing, however large the record."""
        with self.condition:
            self.resuming = True
            self._start()

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="doubao-watcher", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        with self.condition:
            self.stopped = True
            self.stopping.set()
            self.condition.notify()

    def _resume(self) -> None:
        orphans = self.record.orphans(self.owner)
        for task_id, save_dir in orphans[:RESUME_LOG_LINES]:
            log.info("Resuming %s: it is saved into %s when it finishes.", task_id, save_dir)
        if len(orphans) > RESUME_LOG_LINES:
            log.info("Resuming %d more tasks.", len(orphans) - RESUME_LOG_LINES)
        due = time.monotonic()  # all at once, then in batches of LIST_PAGE_TASKS, one batch per gap
        for task_id, save_dir in orphans:
            self.watch(task_id, Path(save_dir), due)

    def _run(self) -> None:
        if self.resuming:
            self._resume()
        while True:
            with self.condition:
                while not self.stopped and (not self.due or self.due[0][0] > time.monotonic()):
                    self.condition.wait(self.due[0][0] - time.monotonic() if self.due else None)
                if self.stopped:
                    return
                batch: list[str] = []
                while self.due and self.due[0][0] <= time.monotonic() and len(batch) < LIST_PAGE_TASKS:
                    batch.append(heapq.heappop(self.due)[1])
                first = [task_id for task_id in batch if task_id in self.new]
                self.new.difference_update(first)
            if first:  # stamped here, off the callers' path
                self.record.watching(first)
            try:
                again = self._poll(batch)
            except Exception:  # a bug must not end the watching of every other task
                log.exception("Watching %s failed", ", ".join(batch)[:200])
                again = set()
            with self.condition:
                for task_id in batch:
                    folder, interval = self.tasks[task_id]
                    if task_id in again and not self.stopped:
                        self.tasks[task_id] = (folder, min(interval * 1.5, self.config.poll_intervals[1]))
                        heapq.heappush(self.due, (time.monotonic() + interval, task_id))
                    else:
                        del self.tasks[task_id]
                        self.alone.discard(task_id)
            self.stopping.wait(self.gap)  # the pace: one request per gap at most (a stop cuts it short)
            if time.monotonic() - self.beat > WATCH_BEAT_SECONDS:
                self.beat = time.monotonic()
                self.record.heartbeat()

    def share(self, loop: asyncio.AbstractEventLoop | None, batcher: PollBatcher | None) -> None:
        """While a server runs (its lifespan), poll through its shared batcher for this key: a task that a wait and
        the watcher both follow costs one request a poll, not two. Without one, the watcher polls on its own."""
        self.shared = (loop, batcher) if loop and batcher else None

    def _listed(self, task_ids: list[str]) -> dict[str, VideoTask | Exception] | None:
        """These tasks in one request, each its task or why not (NotListed: the list left it out); None when the
        request failed as a whole."""
        shared = self.shared
        if shared:
            loop, batcher = shared
            try:
                return asyncio.run_coroutine_threadsafe(_polled_together(batcher, task_ids), loop).result(
                    timeout=self.config.limits.task_deadline + 5)
            except Exception:  # the loop stopped, or it took too long: polled again next round
                return None
        try:
            found = tasks_by_id(self.client, task_ids, self.api_key)
        except DoubaoError as error:
            return {task_id: error for task_id in task_ids}
        return {task_id: found.get(task_id) or NotListed(task_id) for task_id in task_ids}

    def _poll(self, batch: list[str]) -> set[str]:
        """Ask Ark about these tasks: in one list request, and one by one those a list answer left out (asked about
        alone from then on: Ark may have forgotten them), each request a gap after the one before. The ids to poll
        again."""
        together = [task_id for task_id in batch if task_id not in self.alone]
        alone = [task_id for task_id in batch if task_id in self.alone]
        again: set[str] = set()
        requests = 0
        if len(together) > 1 or (together and self.shared):
            requests += 1
            outcomes = self._listed(together)
            if outcomes is None:
                return set(batch)
            # Left out, or refused for good (a 4xx the list as a whole got): each is asked about alone.
            missing = [task_id for task_id, outcome in outcomes.items() if isinstance(outcome, NotListed) or (
                isinstance(outcome, ArkAPIError) and not _transient_status(outcome.status))]
            self.alone.update(missing)
            alone, together = missing + alone, []
            again |= {task_id for task_id, outcome in outcomes.items() if task_id not in missing and (
                isinstance(outcome, Exception) or self._handle(outcome))}
        for task_id in together + alone:
            if requests:
                self.stopping.wait(self.gap)
            if self.stopped:
                break
            requests += 1
            if self._poll_one(task_id):
                again.add(task_id)
        return again

    def _poll_one(self, task_id: str) -> bool:
        try:
            task = shape_task(self.client.get_task(task_id, self.api_key, retry=False), task_id)
        except DoubaoError as error:
            # Ark's refusal (not found, a revoked key) is final; anything else may pass, and is polled again.
            if isinstance(error, ArkAPIError) and not _transient_status(error.status) and not self.stopped:
                log.warning("Stopped watching %s: %s", task_id, error)
                self.record.gave_up(task_id, str(error))
                return False
            return True
        return self._handle(task)

    def _handle(self, task: VideoTask) -> bool:
        """What Ark said of a task: recorded, and its files saved when it succeeded. True to poll again."""
        task_id = task["task_id"]
        self.record.observed([task])
        if task["status"] not in FINAL_STATUSES:
            return True
        if task["status"] != "succeeded":
            log.warning("%s is %s, so there is nothing to save: %s", task_id, task["status"],
                        task.get("error_message") or task["next_step"])
            return False
        folder = self.tasks[task_id][0]
        try:
            opened = open_folder(folder, self.config.allowed_dir)
        except DoubaoError as error:  # the folder went away or became unwritable; tried again at the next start
            log.warning("Saving %s failed: %s", task_id, error)
            self.record.failed(task_id, str(error))
            return False
        known = self.record.files_of([task_id]).get(task_id)
        saved = save_missing(self.client, self.record, task, opened, self.config.max_download_bytes, known)
        if saved and saved.get("saved_files"):
            log.info("Saved %s: %s", task_id, ", ".join(f["path"] for f in saved["saved_files"]))
        if saved and saved.get("save_errors"):
            log.warning("Saving %s failed: %s", task_id, "; ".join(e["error"] for e in saved["save_errors"]))
        return False


def open_record(config: Config, explicit: bool) -> Record | None:
    """The task record, when there is to be one. Over HTTP (many callers, maybe many replicas) it is off unless
    DOUBAO_STATE_DIR is set. One the operator asked for must work; the default one is worth a warning only, and a
    file there that is not ours is moved aside. (A record locked by another process is opened when it can be.)"""
    if config.state_dir is None or (config.serving_http and not explicit):
        return None
    path = config.state_dir / "tasks.sqlite3"
    try:
        try:
            return Record(config.state_dir, config.base_url)
        except RecordUnusable as error:
            if explicit:
                sys.exit(f"doubao-mcp: the task record {path} cannot be used: {error}. Move that file away, or set "
                         "DOUBAO_STATE_DIR to another folder, or to off.")
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(f"{path}{suffix}"):
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            log.warning("The task record %s cannot be used (%s): moved it to %s and started a new one.", path, error,
                        aside)
            return Record(config.state_dir, config.base_url)
    except (OSError, sqlite3.Error, RecordUnusable) as error:
        message = (f"the task record cannot be kept in {config.state_dir} ({error}). Set DOUBAO_STATE_DIR to a "
                   "writable folder, or to off")
        if explicit:
            sys.exit(f"doubao-mcp: {message}.")
        log.warning("No task record, so videos are saved only when a call asks: %s.", message)
        return None


# --- SDK adaptations: what the MCP SDK does not do as this server needs -------------------------------------------

# Argument names models reach for, and the real one each means ("a|b": whichever the tool has). Keys are
# compared without case, spaces, dashes or underscores, so imageUrl and image-url are image_url.
ARGUMENT_ALIASES = {
    "aspect_ratio": "ratio", "image": "images|first_frame|reference_images", "image_url": "images|first_frame",
    "input_image": "images|first_frame", "init_image": "images|first_frame", "reference_image": "images|"
    "reference_images", "n": "max_images", "num_images": "max_images", "count": "max_images", "width": "size",
    "height": "size", "dimensions": "size", "resolution": "size", "quality": "resolution|size", "length": "duration",
    "seconds": "duration", "video_length": "duration", "start_frame": "first_frame", "first_image": "first_frame",
    "end_frame": "last_frame", "last_image": "last_frame", "video": "reference_videos", "video_url": "reference_videos",
    "reference_video": "reference_videos", "audio": "reference_audios|generate_audio", "audio_url": "reference_audios",
    "reference_audio": "reference_audios", "sound": "generate_audio", "output_dir": "save_dir", "output_path":
    "save_dir", "save_path": "save_dir", "download_dir": "save_dir", "folder": "save_dir", "wait": "wait_seconds",
    "timeout": "wait_seconds", "id": "task_id", "task": "task_id", "ids": "task_ids", "endpoint": "model",
    "endpoint_id": "model", "model_id": "model", "text": "prompt", "description": "prompt",
}


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())

_ALIASES = {_plain(name): meant for name, meant in ARGUMENT_ALIASES.items()}


def lenient_arguments(tool: str, arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Meet a model halfway before validation: refuse unknown arguments, naming the real one meant, and coerce
    where the meaning is unambiguous (surrounding whitespace, the case of an enum value, one string for a list;
    numeric strings pydantic already takes)."""
    properties = schema.get("properties", {})
    unknown = [key for key in arguments if key not in properties]
    if unknown:
        raise DoubaoError(" ".join(_unknown_argument(key, tool, properties) for key in unknown))
    return {key: _coerce(value, properties[key]) for key, value in arguments.items()}


def _unknown_argument(key: str, tool: str, properties: Mapping[str, Any]) -> str:
    meant = [name for name in _ALIASES.get(_plain(key), "").split("|") if name in properties]
    meant = meant or difflib.get_close_matches(key, list(properties), n=1, cutoff=0.6)
    instead = f"use {' or '.join(meant)}" if meant else f"its arguments are {', '.join(properties)}"
    return f"{_text(key, 60)!r} is not an argument of {tool}: {instead}."


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if "enum" in schema:
            return next((choice for choice in schema["enum"] if str(choice).lower() == value.lower()), value)
        if schema.get("type") == "array" and not value.startswith("["):  # "[...]" is JSON the SDK parses
            return [value]
    elif isinstance(value, list):
        return [_coerce(item, schema.get("items", {})) for item in value]
    return value

# Sentences for pydantic's error types: one per bad argument, naming it, what was given and what it takes.
INVALID = {
    "missing": "{name} is required",
    "literal_error": "{where} is {given}; it takes {expected}",
    "greater_than_equal": "{where} is {given}; the least it takes is {ge}",
    "less_than_equal": "{where} is {given}; the most it takes is {le}",
    "string_too_long": "{where} is {given}; it takes at most {max_length} characters",
    "int_parsing": "{where} is {given}; it takes a whole number", "int_type": "{where} is {given}; it takes a whole "
    "number", "int_from_float": "{where} is {given}; it takes a whole number",
    "float_parsing": "{where} is {given}; it takes a number", "float_type": "{where} is {given}; it takes a number",
    "bool_parsing": "{where} is {given}; it takes true or false", "bool_type": "{where} is {given}; it takes true "
    "or false", "string_type": "{where} is {given}; it takes text", "list_type": "{where} is {given}; it takes a "
    "list", "dict_type": "{where} is {given}; it takes an object", "value_error": "{where} is {given}; it {message}",
}


def explain_invalid(error: ValidationError) -> str:
    """pydantic's report, as one sentence per bad argument."""
    sentences = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        name = str(loc[0]) if loc else "the arguments"
        value = item.get("input")
        given = (f"a {len(value)}-character text" if isinstance(value, str) and len(value) > 60
                 else _text(repr(value), 80))
        message = re.sub(r"^Value error, ", "", item["msg"])
        template = INVALID.get(item["type"], "{where} is {given}: {message}")
        limits = {key: int(v) if isinstance(v, float) and v.is_integer() else v for key, v in item.get("ctx", {}).items()}
        sentences.append(template.format_map(collections.defaultdict(str, {
            **limits, "name": name, "where": name + "".join(f"[{part}]" for part in loc[1:]),
            "given": given, "message": message[:1].lower() + message[1:]})) + ".")
    return " ".join(sentences)


class LenientTool(Tool):
    """A tool whose arguments are met halfway before the SDK validates them (see `lenient_arguments`), and whose
    validation errors read as one sentence per bad argument instead of pydantic's report."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            arguments = lenient_arguments(self.name, arguments, self.parameters)
        except DoubaoError as error:
            raise DoubaoError(f"Error executing tool {self.name}: {error}") from None
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as error:
            if isinstance(error.__cause__, ValidationError):
                raise ToolError(f"Error executing tool {self.name}: {explain_invalid(error.__cause__)}"
                                ) from error.__cause__
            raise


def _lean_schema(node: Any, defs: dict[str, Any] | None = None) -> Any:
    """Drop pydantic's generated titles, the `anyOf: [T, null]` wrapper of optional arguments, and `$defs`
    (each is used once, and none is recursive: inlined, the reference costs more than it saves).

    Every conversation pays for tools/list in tokens; these parts make it a third longer and tell a
    model nothing that the property name and `required` do not.
    """
    if isinstance(node, list):
        return [_lean_schema(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    defs = node.get("$defs", defs)
    if "$ref" in node and defs:
        return _lean_schema(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    lean = {key: ({name: _lean_schema(s, defs) for name, s in value.items()} if key == "properties"
                  else _lean_schema(value, defs))
            for key, value in node.items() if key not in ("title", "$defs")}
    if lean.get("additionalProperties") is True and "properties" not in lean:
        del lean["additionalProperties"]  # a bare {"type": "object"} already allows any keys
    variants = lean.get("anyOf", [])
    if len(variants) == 2 and {"type": "null"} in variants and "default" in lean and lean["default"] is None:
        del lean["anyOf"], lean["default"]
        lean.update(next(v for v in variants if v != {"type": "null"}))
    return lean


@functools.cache
def published_tools() -> tuple[Tool, ...]:
    """The tools as the SDK publishes them, built once for every server in this process (the schemas are the costly
    part): arguments met halfway, lean schemas, and `answered` around each."""
    tools = []
    for fn, viewer, new_work, spent, hints in TOOL_SPECS:
        registered = LenientTool.from_function(answered(fn, new_work, spent), description=" ".join((fn.__doc__ or "").split()),
                                               annotations=ToolAnnotations(open_world_hint=True, **hints),
                                               meta={"ui": {"resourceUri": VIEWER_URI}} if viewer else None)
        registered.parameters = _lean_schema(registered.parameters)
        registered.fn_metadata.output_schema = _lean_schema(registered.fn_metadata.output_schema)
        tools.append(registered)
    return tuple(tools)


def answered(fn: Callable[..., Awaitable[Any]], new_work: bool, spent: str = ""
             ) -> Callable[..., Awaitable[CallToolResult]]:
    """A tool as the SDK calls it: refuse new work while stopping (a query is answered: its wait ends at once with
    what is known); give the result as compact JSON text in the order of the structured content, with previews;
    make Ark's advice fit this call; turn an unexpected failure into a clear error."""
    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> CallToolResult:
        app = app_of(kwargs["ctx"])
        if app.stopping.is_set and new_work:
            raise DoubaoError("This server is stopping: call again in a moment.")
        try:
            result = await fn(*args, **kwargs)
            text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
            shown = [ImageContent(type="image", data=base64.b64encode(jpeg).decode(), mime_type="image/jpeg")
                     for jpeg in await previews(app, result)]
            return CallToolResult(content=[TextContent(type="text", text=text), *shown], structured_content=result)
        except ArkAPIError as error:
            error.hint = advice(error, bool(app.config.caller_key(kwargs["ctx"].headers))) or error.hint
            raise
        except DoubaoError:
            raise
        except Exception as error:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise DoubaoError(f"{fn.__name__} failed unexpectedly ({type(error).__name__}); the server's log has the "
                              f"details.{spent}") from error
    return guarded


async def serve_stdio(server: MCPServer) -> None:
    """The SDK's stdio transport, with an answer for a line that is not JSON-RPC: mcp 2.3 drops such a line
    silently, so its client waits for its own timeout, while over HTTP the same line gets -32700 at once. The
    transport hands such lines on as exceptions; they are answered here and the server keeps serving."""
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage
    from mcp.types import ErrorData, JSONRPCError

    async with stdio_server() as (read_stream, write_stream):
        inbox_writer, inbox = anyio.create_memory_object_stream[Any](0)

        async def sort() -> None:
            async with inbox_writer:
                async for item in read_stream:
                    if not isinstance(item, Exception):
                        await inbox_writer.send(item)
                        continue
                    parse = isinstance(item, ValidationError) and any(e["type"] == "json_invalid" for e in item.errors())
                    error = ErrorData(code=-32700, message="Parse error: the line is not JSON.") if parse else \
                        ErrorData(code=-32600, message="Invalid request: the line is JSON but not a JSON-RPC message.")
                    await write_stream.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error)))

        lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async runs, fed the sorted stream
        async with anyio.create_task_group() as group:
            group.start_soon(sort)
            await lowlevel.run(inbox, write_stream, lowlevel.create_initialization_options())
            group.cancel_scope.cancel()


# --- Hosting: streamable HTTP for many callers, treated as hostile ------------------------------------------------


def is_loopback(host: str) -> bool:
    """localhost, every 127.0.0.0/8 address, and ::1."""
    host = host.strip("[]").lower()
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """The name in a Host header, without its port, lower case: `[::1]:8000` is `::1`, `LOCALHOST:80` `localhost`."""
    value = value.strip().lower()
    return value[1:value.index("]")] if value.startswith("[") and "]" in value else value.rsplit(":", 1)[0]


class HttpGuard:
    """What a hosted server checks before the SDK sees a request, in one place: the method (a stateless server has
    no stream to GET and no session to DELETE: 405), Host and Origin against DNS rebinding (421, 403; on for
    loopback binds and with allowed hosts), and the body's size (413) and pace (408). Refusals are JSON-RPC errors
    with a sentence saying why, never a bare status."""

    def __init__(self, app: Any, bind: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str],
                 limits: Limits):
        self.app, self.limits = app, limits
        self.loopback = is_loopback(bind)
        self.hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self.origins = {o.strip().lower().rstrip("/") for o in allowed_origins if o.strip()}
        self.checked = self.loopback or bool(self.hosts)
        self.holding = 0  # bytes of the request bodies in flight, on the event loop

    def _host_allowed(self, host: str) -> bool:
        return (self.loopback and is_loopback(_host_name(host))) or bool({_host_name(host), host.lower()} & self.hosts)

    def _origin_allowed(self, origin: str) -> bool:
        return (self.loopback and is_loopback(urlsplit(origin).hostname or "")) or origin.lower().rstrip("/") in self.origins

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        limit = _size(self.limits.max_body)
        if scope["method"] != "POST":
            return await _reject(send, 405, "This stateless MCP server answers POST only: it keeps no event stream to "
                                 "GET and no session to DELETE.", [(b"allow", b"POST")])
        if self.checked and not self._host_allowed(headers.get("host", "")):
            return await _reject(send, 421, "Host not allowed: the operator lists the names clients use in "
                                 "--allowed-hosts.")
        if self.checked and headers.get("origin") and not self._origin_allowed(headers["origin"]):
            return await _reject(send, 403, "Origin not allowed: the operator lists browser origins in "
                                 "--allowed-origins.")
        too_big = (413, f"The request body is over {limit}, the most this server takes (Ark's own limit is 64 MB of "
                        "base64): pass large files as https URLs or asset:// ids.")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_body:
            return await _reject(send, *too_big)
        held = int(declared) if declared.isdigit() else 0  # reserved before a byte is read, when declared
        if not self._hold(held):
            return await self._busy(send)
        await self._pass_on(scope, receive, send, held, too_big)

    async def _pass_on(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]], held: int, too_big: tuple[int, str]) -> None:
        """Read the whole body within its deadline, then hand it to the SDK, its bytes (`held` of them already)
        held in the budget until the answer is sent."""
        chunks: list[bytes] = []
        size, more = 0, True
        try:
            try:
                with anyio.fail_after(self.limits.body_timeout):  # a body trickled in slowly holds nothing for long
                    while more:
                        message = await receive()
                        if message["type"] != "http.request":
                            return  # the client left
                        chunks.append(message.get("body", b""))
                        size += len(chunks[-1])
                        more = message.get("more_body", False)
                        if size > self.limits.max_body:
                            return await _reject(send, *too_big)
                        if size > held:  # a body of no declared length, held as it comes
                            if not self._hold(size - held):
                                return await self._busy(send)
                            held = size
            except TimeoutError:
                return await _reject(send, 408, f"The request body did not arrive within {self.limits.body_timeout:g} "
                                     "s.")
            body = [b"".join(chunks)]
            chunks.clear()  # one copy of the body, handed over whole

            async def replay() -> dict[str, Any]:
                if body:
                    return {"type": "http.request", "body": body.pop(), "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.holding -= held

    def _hold(self, size: int) -> bool:
        """Take `size` bytes of the budget for request bodies in flight, if it has room."""
        if size and self.holding + size > self.limits.max_bodies_in_flight:
            return False
        self.holding += size
        return True

    async def _busy(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        await _reject(send, 503, f"The server is holding {_size(self.holding)} of other requests, the most it holds "
                      "at once: try again in a few seconds, or pass large files as https URLs.",
                      [(b"retry-after", b"5")])


async def _reject(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, message: str,
                  headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def http_server(server: MCPServer, host: str, port: int, allowed_hosts: Iterable[str], allowed_origins: Iterable[str],
                log_level: str, limits: Limits, stopping: Stopping) -> Any:
    """A uvicorn server for `server` over stateless streamable HTTP, with every limit of `limits` applied."""
    import uvicorn  # only hosting needs it: keeps stdio start-up lean
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11(H11Protocol):
        """uvicorn closes idle kept-alive connections, but not one that sends its request head slowly or never:
        every request head gets `header_timeout` to arrive whole."""

        head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a whole request head arrived
                self._disarm()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()
            if self.cycle is cycle and not self.transport.is_closing():  # no pipelined request started at once
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.head_timer = self.loop.call_later(limits.header_timeout, self.transport.close)

        def _disarm(self) -> None:
            if self.head_timer:
                self.head_timer.cancel()
                self.head_timer = None

    class Server(uvicorn.Server):
        """uvicorn's graceful stop (no new connections, calls in flight finish within the grace period), which
        first tells the tools to stop: waits then end early with what they know, and new calls are refused."""

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.loop.call_soon_threadsafe(stopping.set)
            super().handle_exit(sig, frame)

    # Stateless: no session lives in this process, so any replica can answer any request. The SDK's own Host and
    # body checks are left to HttpGuard, which also knows 127.0.0.0/8, case and the pace of a body.
    app = server.streamable_http_app(stateless_http=True, host=host, max_request_body_size=limits.max_body + 1,
                                     transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    # log_config=None: uvicorn's records go to our stderr handler, never to stdout.
    return Server(uvicorn.Config(
        HttpGuard(app, host, allowed_hosts, allowed_origins, limits), host=host, port=port, log_config=None,
        log_level=log_level, http=TimedH11, timeout_keep_alive=int(limits.keep_alive),
        timeout_graceful_shutdown=int(limits.grace), limit_concurrency=limits.max_connections))


def _stop_quietly(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM once uvicorn has stopped gracefully (it raises the signal again): unwind through the
    clean-up in main(), with no traceback."""
    sys.exit(0)


def _exit_at_once(signum: int, frame: Any) -> None:
    """Ctrl-C or SIGTERM on stdio: unfinished downloads' .part files removed, then exit. A graceful stop would wait
    forever for the SDK's stdin reader, a thread blocked on a read that returns only when the client (or a
    terminal) sends more; stop here instead.

    Touch no stream: the signal may land while the main thread is inside a stderr write, and a flush
    from here would be a reentrant call that raises. stderr is line-buffered, so whole lines are out."""
    remove_live_parts()
    os._exit(0)


# --- The viewer (MCP Apps) ----------------------------------------------------------------------------------------
# One self-contained page a host that speaks MCP Apps renders beside the results of generate_image,
# generate_video and query_video_task: no external script, no build step. It talks JSON-RPC to the host over
# postMessage (SEP-1865), builds its DOM with textContent only, and loads media only from http(s) and data:.

VIEWER_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="color-scheme" content="light dark"><title>doubao-mcp</title>
<style>
:root { --bg: var(--color-background-primary, #ffffff); --fg: var(--color-text-primary, #171717);
  --muted: var(--color-text-secondary, #5c5c5c); --line: var(--color-border-primary, #d4d4d4);
  --bad: var(--color-text-danger, #b42318); --radius: var(--border-radius-md, 8px);
  font-family: var(--font-sans, system-ui, sans-serif); font-size: 14px; }
:root[data-theme=dark] { --bg: var(--color-background-primary, #171717); --fg: var(--color-text-primary, #fafafa);
  --muted: var(--color-text-secondary, #a3a3a3); --line: var(--color-border-primary, #3d3d3d);
  --bad: var(--color-text-danger, #f97066); }
body { margin: 0; padding: 12px; background: var(--bg); color: var(--fg); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.grid img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: var(--radius);
  border: 1px solid var(--line); display: block; }
video { width: 100%; max-height: 70vh; border-radius: var(--radius); background: #000; }
h1 { font-size: 15px; margin: 0 0 8px; } .muted { color: var(--muted); } .error { color: var(--bad); }
code { font-family: var(--font-mono, ui-monospace, monospace); } ul { margin: 6px 0; padding-left: 18px; }
button { font: inherit; color: var(--fg); background: transparent; border: 1px solid var(--line);
  border-radius: var(--radius); padding: 4px 12px; cursor: pointer; margin-top: 8px; }
</style></head>
<body><main id="view"><p class="muted">Waiting for the result…</p></main>
<script>
"use strict";
const view = document.getElementById("view");
const pending = new Map();
let nextId = 1, ticking = null, polling = null;

function send(message) { parent.postMessage(Object.assign({ jsonrpc: "2.0" }, message), "*"); }
function request(method, params) {
  const id = nextId++;
  send({ id, method, params });
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}
addEventListener("message", (event) => {
  const message = event.data || {};
  if (message.method === undefined && pending.has(message.id)) {
    const { resolve, reject } = pending.get(message.id);
    pending.delete(message.id);
    return message.error ? reject(new Error(message.error.message || "failed")) : resolve(message.result);
  }
  if (message.method === "ui/notifications/tool-result") render(message.params);
  else if (message.method === "ui/notifications/host-context-changed") applyContext(message.params);
  else if (message.method === "ui/resource-teardown") { stop(); send({ id: message.id, result: {} }); }
});

function applyContext(context) {
  if (!context) return;
  if (context.theme) document.documentElement.dataset.theme = context.theme;
  const variables = (context.styles && context.styles.variables) || {};
  for (const [name, value] of Object.entries(variables)) {
    if (name.startsWith("--") && value) document.documentElement.style.setProperty(name, value);
  }
}
if (matchMedia("(prefers-color-scheme: dark)").matches) document.documentElement.dataset.theme = "dark";

function safe(url) { return typeof url === "string" && /^(https?:|data:image\\/)/.test(url) ? url : ""; }
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) if (value) node.setAttribute(name, value);
  for (const child of children) if (child) node.append(child);
  return node;
}
function stop() { clearInterval(ticking); clearInterval(polling); ticking = polling = null; }

function render(result) {
  stop();
  const data = result && result.structuredContent;
  const thumbs = ((result && result.content) || []).filter((c) => c.type === "image")
    .map((c) => "data:" + c.mimeType + ";base64," + c.data);
  if (!data || result.isError) {
    const text = ((result && result.content) || []).map((c) => c.text || "").join(" ") || "No result.";
    return view.replaceChildren(el("p", { class: "error" }, text));
  }
  view.replaceChildren(...(Array.isArray(data.images) ? images(data, thumbs) : task(data, thumbs)));
}

function images(data, thumbs) {
  const grid = el("div", { class: "grid" });
  data.images.forEach((image, i) => {
    const img = el("img", { src: safe(image.url) || thumbs[i], alt: image.name || "image " + (image.index + 1) });
    img.onerror = () => { if (thumbs[i] && img.src !== thumbs[i]) img.src = thumbs[i]; };
    grid.append(el("a", { href: safe(image.url), target: "_blank", rel: "noopener" }, img));
  });
  const errors = (data.errors || []).map((e) => el("li", { class: "error" }, "Image " + (e.index + 1) + ": " + e.message));
  return [el("h1", {}, data.images.length + " image" + (data.images.length === 1 ? "" : "s") +
            (data.model ? " by " + data.model : "")), grid, errors.length ? el("ul", {}, ...errors) : null,
          ...files(data), el("p", { class: "muted" }, "Links expire 24 hours after generation.")].filter(Boolean);
}

function task(data, thumbs) {
  const parts = [el("h1", {}, el("code", {}, data.task_id), " · " + data.status)];
  if (data.status === "succeeded" && safe(data.video_url)) {
    parts.push(el("video", { controls: "controls", src: safe(data.video_url),
                             poster: safe(data.last_frame_url) || thumbs[0] }));
    parts.push(el("p", { class: "muted" }, "The video link expires 24 hours after generation."));
  } else if (data.status === "queued" || data.status === "running") {
    const elapsed = el("p", { class: "muted" });
    const started = Date.parse(data.created_at || "") || Date.now();
    const estimate = typeof data.estimate_seconds === "number" ? data.estimate_seconds : 0;
    const tick = () => {  // the server's estimate, grown as the server grows it: progress never goes back
      const age = Math.round((Date.now() - started) / 1000);
      elapsed.textContent = estimate ? age + " s of about " + Math.round(Math.max(estimate, age * 1.2 + 1)) + " s"
                                     : "Elapsed " + age + " s";
    };
    tick();
    ticking = setInterval(tick, 1000);
    const button = el("button", { type: "button" }, "Check again");
    button.onclick = () => check(data.task_id, button);
    polling = setInterval(() => check(data.task_id, button), 30000);  // gently, while the view is open
    parts.push(elapsed, el("p", { class: "muted" }, "Videos take from 30 s to several minutes; this view checks " +
                              "again every 30 s while it is open."), button);
  }
  if (data.error_code || data.error_message) {  // next_step is advice for the model: a person reads the error
    parts.push(el("p", { class: "error" }, [data.error_code, data.error_message].filter(Boolean).join(": ")));
  }
  return parts.concat(files(data));
}

function files(data) {
  const saved = (data.saved_files || []).map((f) => el("li", {}, el("code", {}, f.path)));
  const failed = (data.save_errors || []).map((f) => el("li", { class: "error" }, f.error));
  return [saved.length ? el("p", {}, "Saved:") : null, saved.length ? el("ul", {}, ...saved) : null,
          failed.length ? el("ul", {}, ...failed) : null].filter(Boolean);
}

async function check(taskId, button) {
  button.disabled = true;
  try {
    render(await request("tools/call", { name: "query_video_task", arguments: { task_id: taskId } }));
  } catch (error) {
    button.disabled = false;
    button.after(el("p", { class: "error" }, "Checking failed: " + error.message));
  }
}

new ResizeObserver(() => send({ method: "ui/notifications/size-changed", params: {
  width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight } }))
  .observe(document.body);
request("ui/initialize", { appInfo: { name: "doubao-mcp viewer", version: "1" }, appCapabilities: {},
                           protocolVersion: "2026-01-26" })
  .then((result) => { applyContext(result && result.hostContext); send({ method: "ui/notifications/initialized", params: {} }); });
</script></body></html>
"""

if __name__ == "__main__":
    main()
