"""doubao-mcp: an MCP server for ByteDance Doubao Seedream images and Seedance videos.

It talks to the Volcengine Ark v3 API (or BytePlus ModelArk) and offers six tools:
generate_image, generate_video, query_video_task, list_video_tasks, cancel_video_task and list_models; with the
asset library's keys, four more: add_asset, list_assets, remove_asset and verify_person.

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
  DOUBAO_DAILY_LIMIT     the most a day's calls may cost, in the region's currency (CNY, or USD on BytePlus), per
                         key; off for none (default: 200 CNY or 30 USD).
  DOUBAO_CONFIRM_ABOVE   ask the person before a call estimated above this amount (default: never).
  DOUBAO_PRICES          a JSON file of prices that replace or extend the built-in table (docs/cost.md).
  DOUBAO_UPLOADS         s3://bucket/prefix: local videos (and images or audios too large to send inline) are
                         uploaded there for Ark to fetch; needs the uploads extra. Endpoint, region and
                         credentials: boto3's own AWS_ENDPOINT_URL_S3, AWS_DEFAULT_REGION (or AWS_REGION),
                         AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE (docs/uploads.md).
  VOLCENGINE_ACCESS_KEY, VOLCENGINE_SECRET_KEY
                         the account's access keys (not the Ark API key), for the asset library's tools (real
                         people, recurring characters; stdio only): BYTEPLUS_ACCESS_KEY and BYTEPLUS_SECRET_KEY on
                         BytePlus, and the legacy VOLC_ACCESSKEY and VOLC_SECRETKEY, are read too (docs/assets.md).
  DOUBAO_ASSET_PROJECT   the Ark project the assets belong to, default default.
  DOUBAO_ASSET_API_URL, DOUBAO_ASSET_REGION
                         the asset API's address and signing region; default: from ARK_BASE_URL's region.
  DOUBAO_ASSET_CREATES_PER_MINUTE
                         assets made a minute at most (the tier's CreateAsset rate), default 3.
  DOUBAO_ASSET_ALLOW_REMOVE
                         1: remove_asset removes without asking, where the client cannot ask the person.
  DOUBAO_MCP_TRANSPORT, DOUBAO_MCP_HOST, DOUBAO_MCP_PORT, DOUBAO_MCP_ALLOWED_HOSTS,
  DOUBAO_MCP_ALLOWED_ORIGINS, DOUBAO_MCP_LOG_LEVEL: defaults for the command-line options.

Run it over stdio with `doubao-image-video-mcp` (alias `doubao-mcp`, or `python3 -m doubao_mcp`), or
host it with `doubao-image-video-mcp --transport streamable-http --host 0.0.0.0 --port 8000`.

A call reads downward through this file: what the server knows (tables, models, errors, settings), then a tool
call in the order it happens (its arguments, the tool, its rules and request, the studio that makes the images or
follows the video task, the result), then the wiring, then the machinery, one section per concern.
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
import hmac
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
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urljoin, urlsplit
from urllib.request import url2pathname

try:
    # .part files are locked while written (POSIX)
    import fcntl
# Windows.
except ImportError:
    fcntl = None  # type: ignore[assignment]

import anyio
import anyio.to_thread
import requests
from mcp.server.apps import Apps, ResourceCsp
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    with_config,
)
from pydantic.json_schema import SkipJsonSchema as Unlisted
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from typing_extensions import NotRequired, TypedDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__version__ = "0.1.0"

log = logging.getLogger("doubao_mcp")

T = TypeVar("T")

Kind = Literal["image", "video"]

# A task as this server passes it around: the shape of VideoTask (see Results), with fields added as a call goes.
Task = dict[str, Any]


# --- Tables: the numbers that shape behaviour (each with its unit), the names Ark uses, the messages ------------------
# The limits a host tunes (threads, deadlines, sizes of what callers send) are in Limits, under Settings; what each
# model takes is under Models. Everything else that is a number or a fixed text is here.

DEFAULT_BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"
TASKS_PATH = "/contents/generations/tasks"
IMAGES_PATH = "/images/generations"
API_KEY_ENV = ("ARK_API_KEY", "DOUBAO_API_KEY")
IMAGE_MODEL_ENV = ("DOUBAO_IMAGE_MODEL", "DOUBAO_IMAGE_ENDPOINT_ID")
VIDEO_MODEL_ENV = ("DOUBAO_VIDEO_MODEL", "DOUBAO_VIDEO_ENDPOINT_ID")
# http: the same as streamable-http.
TRANSPORTS = ("stdio", "streamable-http", "http")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# What things cost (the prices themselves are under Models, beside the models).
# Video output tokens: width x height x frames / 1024, at 24 frames a second plus one.
VIDEO_FPS = 24
PIXELS_PER_TOKEN = 1024
# What Ark makes when a call says nothing: 5 s at 720p, and 16:9 (also the estimate for ratio adaptive).
DEFAULT_VIDEO_SECONDS = 5
DEFAULT_VIDEO_RESOLUTION = "720p"
DEFAULT_VIDEO_RATIO = "16:9"
# service_tier flex, as a fraction of the price.
FLEX_PRICE_FACTOR = 0.5
# A layer split bills its base image and each layer (up to 16).
LAYER_SPLIT_IMAGES = 17
# The day's limit when DOUBAO_DAILY_LIMIT is unset, in the region's currency (see docs/cost.md for why).
DEFAULT_DAILY_LIMIT = {"CNY": 200.0, "USD": 30.0}
# How long a call waits for another process's reservation before it says the limit cannot be checked.
LEDGER_WAIT_SECONDS = 5.0
# A task whose creation timed out is looked for among the tasks Ark made this long before or after it was sent.
UNKNOWN_MATCH_SECONDS = 300.0
# Uploads (DOUBAO_UPLOADS): Ark fetches a reference video of up to 200 MB from its link.
VIDEO_INPUT_MAX_BYTES = 200 * 2**20
# A link lives 6 h on the default tier; a flex task may wait 48 h (execution_expires_after) before Ark fetches it.
UPLOAD_LINK_SECONDS = 6 * 3600.0
FLEX_EXPIRES_SECONDS = 48 * 3600.0
# The longest a SigV4 presigned link may live.
SIGV4_MAX_SECONDS = 7 * 24 * 3600.0
# Multipart above this, in parts of this size (boto3's own default threshold).
UPLOAD_PART_BYTES = 8 * 2**20
# The most an upload may take, retries included (a download's deadline, the other way).
UPLOAD_DEADLINE_SECONDS = 600.0
# Parts in flight at once: what an upload holds in memory is this many parts, whatever the file's size.
UPLOAD_PARTS_AT_ONCE = 8
# Silence from the storage before a request is given up (boto3 retries it).
UPLOAD_READ_TIMEOUT_SECONDS = 60.0
# The most boxes of an MP4 read to find its movie header (a real file has a handful at each level).
MOVIE_BOXES_READ = 1000
# The largest DOUBAO_PRICES file read.
PRICES_MAX_BYTES = 2**20
# The shortest reference video Ark takes, and the shortest a Seedance 2.5 edit takes.
REFERENCE_VIDEO_MIN_SECONDS = 2.0
EDIT_VIDEO_MIN_SECONDS = 4.0
# The asset library (ARK_API.md, Asset library): a signed OpenAPI beside Ark's, with an access key and a secret key.
ASSET_API_VERSION = "2024-01-01"
ASSET_API_SERVICE = "ark"
# The library's address and signing region, by what ARK_BASE_URL's host names; else by the region's first.
ASSET_HOSTS = {
    "cn-beijing": ("https://ark.cn-beijing.volcengineapi.com", "cn-beijing"),
    "ap-southeast": ("https://ark.ap-southeast-1.byteplusapi.com", "ap-southeast-1"),
    "eu-west": ("https://ark.eu-west-1.byteplusapi.com", "eu-west-1"),
}
# The vendors' SDKs' names for the keys (access, secret), the region's own first; the legacy pair last.
ASSET_KEY_ENV = {
    "volcengine": ("VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY"),
    "byteplus": ("BYTEPLUS_ACCESS_KEY", "BYTEPLUS_SECRET_KEY"),
    "legacy": ("VOLC_ACCESSKEY", "VOLC_SECRETKEY"),
}
# CreateAsset's rate at the entry tier; a rate limit halves the pace, down to one a minute.
DEFAULT_ASSET_CREATES_PER_MINUTE = 3.0
# A rate-limited CreateAsset is tried again this many times (each at the slower pace) before the call says so.
ASSET_RATE_LIMIT_TRIES = 4
# An asset's processing, and a liveness check's result, are asked about this often (GetAsset allows 100 a second).
ASSET_POLL_SECONDS = 2.0
# add_asset waits this long for Active unless told otherwise.
ASSET_WAIT_SECONDS = 60
# A liveness check's token lives 30 minutes.
VERIFY_TOKEN_SECONDS = 30 * 60.0
# Lists are read in pages of this many, at most this many pages (a list that never ends is cut, and says so).
ASSET_PAGE = 100
ASSET_PAGES_MAX = 20
# A listing shows at most this many assets (a result a model reads; the entry tier holds 50).
ASSETS_SHOWN_MAX = 200
# Group ids in one ListAssets filter.
ASSET_GROUPS_PER_LIST = 20
# A subject is named by a person: a short name, kept as given.
SUBJECT_MAX_CHARS = 64
ASSET_ID_PATTERN = r"[\w.:-]{1,200}"
# A code that names a flow or rate limit slows the pace; it is not a failure.
ASSET_RATE_LIMITED = re.compile(
    r"flow|rate|throttl|toomanyrequests|requestlimit", re.IGNORECASE
)
# A code of Ark's that refuses a real person in an input.
REAL_PERSON_CODE = re.compile(
    r"^Input[\w.]*(RealPerson|Person|Human|Face)", re.IGNORECASE
)
# The first protocol revision that carries a question to the person in a tool's result (both transports).
INPUT_REQUIRED_VERSION = "2026-07-28"
# Talking to Ark: deadlines and retries.
# A set of 15 4K images can take minutes; Ark's SDKs wait 600 s.
DEFAULT_IMAGE_TIMEOUT_SECONDS = 300.0
CONNECT_TIMEOUT_SECONDS = 10.0
# Task create, get, list and delete answer in well under a second when Ark is healthy.
TASK_READ_TIMEOUT_SECONDS = 15.0
# One call plus up to three retries of a transient failure.
MAX_ATTEMPTS = 4
# Doubled each retry, as in the official SDKs; each delay grows by up to RETRY_JITTER of itself, so that the
# retries of many callers spread out.
RETRY_FIRST_DELAY_SECONDS = 0.5
RETRY_MAX_DELAY_SECONDS = 8.0
RETRY_JITTER = 0.25
# A longer Retry-After is reported to the caller, not slept through.
MAX_RETRY_AFTER_SECONDS = 30.0
# No retry starts unless its deadline leaves it at least this long.
MIN_ATTEMPT_SECONDS = 1.0
# Downloads only: API calls never follow a redirect.
MAX_REDIRECTS = 5
# The watchdog never sleeps shorter than this, so that a deadline just past costs no busy loop.
WATCHDOG_MIN_SLEEP_SECONDS = 0.01
# What a caller may send, whatever the model (each model's own limits are under Models).
# Far above what Ark uses (about 500 characters for a video): it stops a pasted file from going upstream.
PROMPT_MAX_CHARS = 5000
# Or -1, the model chooses.
ANY_DURATION_SECONDS = (1, 600)
# Frames are 25 + 4n.
FRAMES_BASE, FRAMES_STEP = 25, 4
# The longest duration at 24 fps.
MAX_FRAMES = 24 * ANY_DURATION_SECONDS[1] + 1
MAX_REFERENCES_PER_LIST = 50
# WIDTHxHEIGHT, each side.
SIZE_SIDE_PIXELS = (64, 16384)
# WIDTHxHEIGHT at most 16:1.
MAX_ASPECT = 16
# Ark's own limit for sequential_image_generation: reference images plus outputs.
MAX_SET_IMAGES = 15
MAX_SEED = {"image": 2147483647, "video": 4294967295}
IMAGE_INPUT_MAX_BYTES = 10 * 2**20
# Video frames and reference images.
VIDEO_FRAME_MAX_BYTES = 30 * 2**20
AUDIO_INPUT_MAX_BYTES = 15 * 2**20
# Ark's whole request body, base64 inputs included.
REQUEST_MAX_BYTES = 64 * 2**20
# In one list_video_tasks call, as Ark's largest page.
MAX_TASK_IDS = 500
MAX_PAGE = 500
# Waiting for a video.
MAX_WAIT_SECONDS = 600
# generate_video's wait: its reply, with the new task's id, must beat a 60 s client timeout.
START_WAIT_SECONDS = 55
# takes: independent versions of one idea in one call.
MAX_TAKES = 4
# The densest polls (around and after a task's estimate), and the sparsest (early).
POLL_INTERVALS_SECONDS = (1.5, 10.0)
# The sparsest poll of a wait timed by a prior, not by tasks seen: the prior may be far off.
PRIOR_POLL_SECONDS = 4.0
# The sparsest poll of a task past its estimate, until it has run twice as long.
OVERRUN_POLL_SECONDS = 3.5
# Past its estimate, a poll is this much later for each second over.
OVERRUN_POLL_SLOPE = 1 / 15
# Before its estimate, a poll comes after this share of the time left.
EARLY_POLL_SHARE = 1 / 3
# A task past its estimate: the estimate grows to its age times this, plus this much.
OVERRUN_GROWTH, OVERRUN_MARGIN_SECONDS = 1.2, 1.0
# A prior's scale, by resolution (720p is 1), and the duration it is given for.
RESOLUTION_COST = {"480p": 0.6, "720p": 1.0, "1080p": 1.8, "4k": 4.0}
PRIOR_RESOLUTION, PRIOR_DURATION_SECONDS = "720p", 5
# How long a task takes when nothing is known of its model: an endpoint id, or a model newer than this table.
UNKNOWN_MODEL_SECONDS = 90.0
# An estimate is the median of this many recent tasks of the kind; with fewer than ESTIMATE_MIN_SAMPLES, the
# kind is widened (family only), then the family's prior is used.
ESTIMATE_SAMPLES = 20
ESTIMATE_MIN_SAMPLES = 3
# The most recent task times kept per key, and read from the record at start.
ESTIMATE_HISTORY = 500
# Task ids already learnt from, so that a list repeating a task counts it once.
ESTIMATE_TASKS_KEPT = 5000
# A wait reports progress at least this often, between its polls.
PROGRESS_EVERY_SECONDS = 3.0
# A batch wait reports its count at each task done, and else at most this often.
BATCH_PROGRESS_SECONDS = 1.0
# Polls of one key within this of each other share one request.
POLL_BATCH_SECONDS = 0.1
# Tasks asked about in one list request (Ark's pages hold up to 500).
LIST_PAGE_TASKS = 100
# Polls fall on this grid of the clock, so that waits' polls meet.
POLL_GRID_SECONDS = 0.5
# Ark's longest execution_expires_after: no running task is older.
MAX_TASK_RUN_SECONDS = 259_200
# Progress while a long image generation runs, for clients that time out at 60 s.
HEARTBEAT_EVERY_SECONDS = 10.0
# Keys: over HTTP every caller brings one. What is kept per key (the models it cannot use, its estimates, its
# shared polls, and the keys redacted from every answer) is kept for this many at most, the least recent dropped.
KEYS_KEPT = 256
# Worker threads.
# A worker thread with no work for this long ends.
THREAD_IDLE_SECONDS = 30.0
# Downloads and files.
DEFAULT_MAX_DOWNLOAD_BYTES = 2 * 2**30
# The longest silence tolerated mid-download.
DOWNLOAD_SILENCE_SECONDS = 60.0
DOWNLOAD_DEADLINE_SECONDS = 600.0
# A .part file this old belongs to no live download (where there are no locks: Windows).
STALE_PART_SECONDS = DOWNLOAD_DEADLINE_SECONDS + 60
DOWNLOAD_CHUNK_BYTES = 64 * 2**10
# A file's kind is read from its first bytes (see FILE_SIGNATURES).
SNIFF_BYTES = 16
# A video's last frame is saved as <task id>-last-frame.png, and known by it.
LAST_FRAME_NAME = "-last-frame"
# A task's result URLs, and the kind of file saved from each.
FILE_KINDS = {"video_url": "video", "last_frame_url": "last_frame"}
# How many files of one name (name-1, name-2, ...) a folder may have before saving there fails.
MAX_SAME_NAME = 1000
# The longest file name stem made from a task id.
STEM_MAX_CHARS = 100
# At exit, how long the clean-up waits for a download about to make its .part file (it may run in a signal handler).
EXIT_LOCK_SECONDS = 1.0
# What goes into a result.
# Ids and codes, messages, URLs.
NAME_MAX_CHARS, MESSAGE_MAX_CHARS, URL_MAX_CHARS = 200, 1000, 4096
# A value or path of the caller's, quoted back in an error.
QUOTE_MAX_CHARS = 200
# An object of numbers from Ark (usage, a bounding box): at most this many keys, and lists of at most this many.
NUMBERS_MAX_KEYS, NUMBERS_MAX_LIST = 32, 8
# A body Ark cannot have sent: how much of it an error shows.
EXCERPT_SCAN_CHARS, EXCERPT_CHARS = 2000, 160
# An image preview in a result: its longest side, its size, and the steps tried until it fits.
PREVIEW_SIDE_PIXELS, PREVIEW_MAX_BYTES = 512, 100 * 2**10
PREVIEW_STEPS = (
    (PREVIEW_SIDE_PIXELS, 80),
    (PREVIEW_SIDE_PIXELS, 60),
    (PREVIEW_SIDE_PIXELS * 3 // 4, 60),
    (256, 50),
)
# The most of an image or frame read to make a preview.
PREVIEW_SOURCE_MAX_BYTES = 40 * 2**20
# Previews are made within this after the result is ready, or left out.
PREVIEW_DEADLINE_SECONDS = 15.0
# The largest Seedream image is 16.78 MP (4096x4096): a bigger one is not decoded.
PREVIEW_MAX_PIXELS = 18_000_000
# Redaction: a key shorter than this is never redacted (it would mangle ordinary words); one as long as the second
# is redacted wherever any REDACT_RUN_CHARS of it stand (a key cut short too); those between, as whole words.
SHORT_SECRET_CHARS, LONG_SECRET_CHARS = 8, 20
REDACT_RUN_CHARS = 12
# The blocks a run is first looked at in (see Redactor)
ANCHOR_CHARS = REDACT_RUN_CHARS // 2
# The task record.
# PRAGMA user_version of its schema; older versions of ours are migrated.
RECORD_VERSION = 2
# PRAGMA application_id "DBMC": the file is doubao-mcp's own.
RECORD_APP_ID = 0x44424D43
# The start of a prompt, kept to tell tasks apart.
PROMPT_KEPT_CHARS = 200
# The longest a call waits for the record's write lock; then its write is queued.
LOCK_WAIT_SECONDS = 0.2
# A claim to save a video may wait longer: it is what keeps a video from being saved twice.
CLAIM_WAIT_SECONDS = 2.0
# Queued writes are tried again this often, on a thread of their own.
RETRY_WRITES_SECONDS = 5.0
# Past this, the oldest queued writes are dropped (with a warning)
MAX_QUEUED_WRITES = 10_000
# A failing disk must not flood the log.
RECORD_WARN_EVERY_SECONDS = 60.0
# What this process last wrote of each task, for this many tasks.
RECORD_CACHE_TASKS = 10_000
# Ids in one SQL statement.
SQL_CHUNK_IDS = 500
# How often a watching process stamps its tasks as watched.
WATCH_BEAT_SECONDS = 30.0
# A watcher that has not stamped them for this long is gone (a download may hold it up: then a second process may
# watch too, and the claim still saves each video once).
WATCH_STALE_SECONDS = 120.0
# A video and its last frame, each within its deadline.
SAVE_STALE_SECONDS = 2 * DOWNLOAD_DEADLINE_SECONDS + 60
LINK_LIFETIME_SECONDS = 24 * 3600.0
# Ark forgets a task after 7 days: an older one is closed without asking.
ARK_RETENTION_SECONDS = 7 * 24 * 3600.0
# The watcher: at least this long between two of its requests, so that a large record floods nobody; resumed
# tasks are named one by one in the log up to RESUME_LOG_LINES, the rest counted; its interval grows this much.
WATCH_GAP_SECONDS = 0.5
RESUME_LOG_LINES = 20
WATCH_BACKOFF = 1.5
# A shared poll may take a task call's deadline and this much more.
WATCH_SHARED_GRACE_SECONDS = 5.0
# Hosting and the viewer.
VIEWER_URI = "ui://doubao-mcp/viewer.html"
# Where Ark's result files live (Volcengine's and BytePlus's object storage): the viewer may load media from them.
MEDIA_DOMAINS = ("https://*.volces.com", "https://*.bytepluses.com")
# A 503 for bodies in flight: when to try again.
BUSY_RETRY_AFTER_SECONDS = 5
# Patterns.
# Model, endpoint and task ids alike: never a path.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
# What an HTTP header value can carry.
KEY_CHARACTERS = re.compile(r"[\x20-\x7e\xa0-\xff]+")
# Control characters, zero-width characters and bidi overrides: never passed from upstream into a result.
UNSAFE_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)
PART_FILE = re.compile(r"\..+\.[0-9a-f]{8}\.part")
BASE64_RUN = re.compile(r"[A-Za-z0-9+/_=-]+")


class Signature(NamedTuple):
    """How a kind of file begins: files are recognised by content, never by name."""

    offset: int
    magic: bytes
    mime: str
    extension: str


FILE_SIGNATURES = (
    Signature(offset=0, magic=b"\xff\xd8\xff", mime="image/jpeg", extension=".jpeg"),
    Signature(offset=0, magic=b"\x89PNG\r\n\x1a\n", mime="image/png", extension=".png"),
    Signature(offset=8, magic=b"WEBP", mime="image/webp", extension=".webp"),
    Signature(offset=0, magic=b"GIF8", mime="image/gif", extension=".gif"),
    Signature(offset=0, magic=b"BM", mime="image/bmp", extension=".bmp"),
    Signature(offset=0, magic=b"II*\x00", mime="image/tiff", extension=".tiff"),
    Signature(offset=0, magic=b"MM\x00*", mime="image/tiff", extension=".tiff"),
    # Before mp4: QuickTime is an ftyp file with the brand "qt  ".
    Signature(offset=4, magic=b"ftypqt", mime="video/quicktime", extension=".mov"),
    Signature(offset=4, magic=b"ftyp", mime="video/mp4", extension=".mp4"),
    Signature(offset=8, magic=b"WAVE", mime="audio/wav", extension=".wav"),
    Signature(offset=0, magic=b"ID3", mime="audio/mpeg", extension=".mp3"),
    Signature(offset=0, magic=b"\xff\xfb", mime="audio/mpeg", extension=".mp3"),
    Signature(offset=0, magic=b"\xff\xf3", mime="audio/mpeg", extension=".mp3"),
    Signature(offset=0, magic=b"\xff\xf2", mime="audio/mpeg", extension=".mp3"),
)


class MediaKind(NamedTuple):
    """What a kind of media argument takes: the largest inline file, and how to name the files it reads."""

    # The MIME type's first part.
    mime: str
    # 0: never inline (Ark fetches reference videos itself)
    max_bytes: int
    described: str


MEDIA = {
    "image": MediaKind(
        mime="image",
        max_bytes=IMAGE_INPUT_MAX_BYTES,
        described="a JPEG, PNG, WebP, BMP, TIFF or GIF image",
    ),
    "frame": MediaKind(
        mime="image",
        max_bytes=VIDEO_FRAME_MAX_BYTES,
        described="a JPEG, PNG, WebP, BMP, TIFF or GIF image",
    ),
    "audio": MediaKind(
        mime="audio",
        max_bytes=AUDIO_INPUT_MAX_BYTES,
        described="a WAV or MP3 file",
    ),
    "video": MediaKind(mime="video", max_bytes=0, described="an MP4 or MOV video"),
}


class VideoInput(NamedTuple):
    """A media argument of generate_video, and how Ark takes it: a content item of `item` type, with `role`."""

    argument: str
    # A MEDIA kind.
    media: str
    item: Literal["image", "video", "audio"]
    role: str


VIDEO_INPUTS = (
    VideoInput(argument="first_frame", media="frame", item="image", role="first_frame"),
    VideoInput(argument="last_frame", media="frame", item="image", role="last_frame"),
    VideoInput(
        argument="reference_images", media="frame", item="image", role="reference_image"
    ),
    VideoInput(
        argument="reference_videos", media="video", item="video", role="reference_video"
    ),
    VideoInput(
        argument="reference_audios", media="audio", item="audio", role="reference_audio"
    ),
)
TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})
UNFINISHED_STATUSES = frozenset({"queued", "running"})
# A task asked for that Ark did not describe: it does not know it, or checking it failed.
UNKNOWN_STATUS = "unknown"
Resolution = Literal["480p", "720p", "1080p", "4k"]
Ratio = Literal["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]
ServiceTier = Literal["default", "flex"]
# What a user should do about an Ark error: the first key found in the error code wins, else the HTTP status
# decides (see `table_hint`).
HINTS_BY_CODE = {
    "ModelNotOpen": "Activate the model in the Ark console or set {model_env}.",
    "TaskRunningCannotCancel": "The task is running: Ark cannot cancel it now. Wait until it finishes, then call "
    "cancel_video_task again to delete its record.",
    "SetLimitExceeded": "The account's Safe Experience Mode limit for this model is used up: raise it, or turn the "
    "mode off, in the Ark console (the model's page under Model activation), then call again.",
    "EndpointRPMExceeded": "This endpoint's requests-per-minute limit is reached: wait a minute, or raise its RPM in "
    "the Ark console.",
    "EndpointTPMExceeded": "This endpoint's tokens-per-minute limit is reached: wait a minute, or raise its TPM in "
    "the Ark console.",
    "VideoSensitiveContentDetected.PolicyViolation": "Ark's moderation blocked the result as a likely copyright "
    "or policy violation: change the prompt or the references (a known character, brand or artwork).",
    "InvalidResolutionParameter": "This model does not make this resolution for this kind of task (Seedance 2.5 "
    "premium renders 4k only; a final from a 2.5 draft, 1080p): change resolution.",
    "LastFrameNotSupported": "This model takes no last frame: leave last_frame out, or use Seedance 2.0 or 2.5.",
    "RefImageNotSupported": "This model takes no reference images: use first_frame, or a Seedance 2.x model.",
    "RequestBodyTooLarge": "The request is over Ark's 64 MB: pass large inputs as links, or set DOUBAO_UPLOADS to "
    "upload local files first (docs/uploads.md).",
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
    "TaskTypeConstraint": "This kind of task does not take {param}: leave it out, or change the inputs, and call "
    "again.",
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
UNNAMED_PARAM = "one of the parameters given (Ark's message names it)"
WRONG_ADDRESS_HINT = (
    "Nothing at this address is Ark's API: check ARK_BASE_URL ({base_url}). Ark's address ends in /api/v3, as "
    f"{DEFAULT_BASE_URL} does."
)
CALLER_KEY_REFUSED = (
    "Ark refused the key this request sent (X-API-Key or Authorization: Bearer): check it in the Ark console "
    "(API Key management), for the region this server uses."
)
UNAVAILABLE_HINT = (
    "Activate {model} in the Ark console (Model activation), or {instead} a model or endpoint id your account "
    "has."
)
NOT_CANCELLABLE = {
    "running": "The task is running: Ark cannot cancel or delete it now. Wait until it finishes, then call "
    "cancel_video_task again to delete its record.",
    "cancelled": "The task is cancelled: Ark cannot cancel or delete it now. Ark keeps cancelled tasks for 7 days.",
}
ASSETS_ON_SEEDANCE_ONLY = (
    "asset:// ids work on Seedance 2.x videos only; Seedream refuses them: "
    "pass the image as a URL or a file."
)
# A real person in an input (REAL_PERSON_CODE): the path through the asset library, with its tools when the keys are
# set, else the settings that give them.
REAL_PERSON_HINTS = {
    True: "Ark takes a real person's face only from its asset library: verify the person with verify_person, add "
    "the photo or video with add_asset, then pass the asset:// id it returns instead of the file.",
    False: "Ark takes a real person's face only from its asset library. Set VOLCENGINE_ACCESS_KEY and "
    "VOLCENGINE_SECRET_KEY (BYTEPLUS_ACCESS_KEY and BYTEPLUS_SECRET_KEY on BytePlus) in this server's settings to "
    "verify the person and add the photo from here (docs/assets.md), or add it in the Ark console's asset library, "
    "then pass its asset:// id instead of the file.",
}
TASK_NOT_FOUND_HINT = "No task with this id: use the task_id generate_video returned (Ark keeps tasks 7 days)."
URL_LIFETIME_NOTE = (
    "Result URLs expire 24 hours after generation: download what you want to keep."
)
NOT_FINISHED = (
    "Not finished yet. Videos take 30 s to several minutes: call query_video_task with task_id "
    "{task_id!r} and wait_seconds=50 (again while it runs) rather than polling rapidly."
)
CHECK_FAILED = (
    "Checking the task failed ({reason}); it may still be running. Call query_video_task with task_id "
    "{task_id!r} and wait_seconds=50 later."
)
NEXT_STEP = {
    "queued": NOT_FINISHED,
    "running": NOT_FINISHED,
    "succeeded": URL_LIFETIME_NOTE,
    "failed": "Generation failed; read error_message, adjust the request and call generate_video again.",
    "cancelled": "The task was cancelled before it started.",
    "expired": "The task waited too long in Ark's queue and expired; call generate_video again.",
}
LATER_STEP = "Call query_video_task again later."
STOPPED_WAITING = (
    "This server is stopping, so it stopped waiting; the task goes on at Ark. Call query_video_task with task_id "
    "{task_id!r} later."
)
STOPPED_SAVING = (
    "This server is stopping, so the video was not saved: call query_video_task with task_id {task_id!r} and "
    "save_dir again (its link lasts 24 hours)."
)
BEING_SAVED = (
    "It is being saved right now, by this server's watcher or another server process: ask again in a moment to "
    "see its saved_files."
)
WATCHED_STEP = (
    " It is saved into {folder} when it finishes, even if nobody asks again (at the next start, if this server "
    "stops first)."
)
SAVE_LATER_STEP = " Pass save_dir again to save it."
# Top-level fields the tools build, and what to use instead of setting them through `extra`; the tools' own
# argument names are reserved the same way. None: a field this server cannot handle at all.
BUILT_FIELDS = {
    "model": "use the model argument",
    "prompt": "use the prompt argument",
    "image": "use the images argument",
    "content": "use prompt and the image, video and audio arguments",
    "tools": "use the web_search argument",
    "sequential_image_generation": "use max_images",
    "sequential_image_generation_options": "use max_images",
    "stream": None,
    "response_format": None,
}
# Argument names models reach for, and the real one each means ("a|b": whichever the tool has). Keys are
# compared without case, spaces, dashes or underscores, so imageUrl and image-url are image_url.
ARGUMENT_ALIASES = {
    "aspect_ratio": "ratio",
    "image": "images|first_frame|reference_images",
    "image_url": "images|first_frame",
    "input_image": "images|first_frame",
    "init_image": "images|first_frame",
    "reference_image": "images|reference_images",
    "n": "max_images",
    "num_images": "max_images",
    "count": "max_images",
    "width": "size",
    "height": "size",
    "dimensions": "size",
    "resolution": "size",
    "quality": "resolution|size",
    "length": "duration",
    "seconds": "duration",
    "video_length": "duration",
    "start_frame": "first_frame",
    "first_image": "first_frame",
    "end_frame": "last_frame",
    "last_image": "last_frame",
    "video": "reference_videos",
    "video_url": "reference_videos",
    "reference_video": "reference_videos",
    "audio": "reference_audios|generate_audio",
    "audio_url": "reference_audios",
    "reference_audio": "reference_audios",
    "sound": "generate_audio",
    "output_dir": "save_dir",
    "output_path": "save_dir",
    "save_path": "save_dir",
    "download_dir": "save_dir",
    "folder": "save_dir",
    "wait": "wait_seconds",
    "timeout": "wait_seconds",
    "id": "task_id",
    "task": "task_id",
    "ids": "task_ids",
    "endpoint": "model",
    "endpoint_id": "model",
    "model_id": "model",
    "text": "prompt",
    "description": "prompt",
}
# Sentences for pydantic's error types: one per bad argument, naming it, what was given and what it takes.
WHOLE_NUMBER, A_NUMBER, TRUE_OR_FALSE = (
    "it takes a whole number",
    "it takes a number",
    "it takes true or false",
)
INVALID = {
    "missing": "{name} is required",
    "literal_error": "{where} is {given}; it takes {expected}",
    "greater_than_equal": "{where} is {given}; the least it takes is {ge}",
    "less_than_equal": "{where} is {given}; the most it takes is {le}",
    "string_too_long": "{where} is {given}; it takes at most {max_length} characters",
    "int_parsing": "{where} is {given}; " + WHOLE_NUMBER,
    "int_type": "{where} is {given}; " + WHOLE_NUMBER,
    "int_from_float": "{where} is {given}; " + WHOLE_NUMBER,
    "float_parsing": "{where} is {given}; " + A_NUMBER,
    "float_type": "{where} is {given}; " + A_NUMBER,
    "bool_parsing": "{where} is {given}; " + TRUE_OR_FALSE,
    "bool_type": "{where} is {given}; " + TRUE_OR_FALSE,
    "string_type": "{where} is {given}; it takes text",
    "list_type": "{where} is {given}; it takes a list",
    "dict_type": "{where} is {given}; it takes an object",
    "value_error": "{where} is {given}; it {message}",
}
INVALID_OTHERWISE = "{where} is {given}: {message}"
# A given text longer than this is described by its length, not quoted.
QUOTED_INPUT_CHARS = 60


# --- Models: what each family accepts, and where it stands ------------------------------------------------------------
# The one place that knows a model's limits and lifecycle (sources: ../shared/ARK_API.md, the Ark docs and SDKs;
# see the model table in docs/models.md). A family is an id without its `doubao-` / `dreamina-` / `dola-` prefix and
# `-YYMMDD` date stamp, so the China and BytePlus ids of one model share a row. An id the table does not know (an
# `ep-...` endpoint, a model newer than this release) goes to Ark with only the universal checks, and Ark decides.
# A capability marked None is unclear: an explicit model is never refused for it, and a default never relies on it.

# Regions: the same models under other ids on Volcengine Ark (China) and BytePlus ModelArk.
CHINA, BYTEPLUS = 0, 1


class Regional(NamedTuple):
    """One model's id in each region, or one list per region; indexed by CHINA or BYTEPLUS."""

    china: Any
    byteplus: Any


# The defaults, best first, per region. A call that names no model (and no DOUBAO_*_MODEL is set) goes to the first
# that is known to take it, and on to the next while Ark answers that the account cannot use one. Current, widely
# served models first; a retired one last, since our dates can be wrong and trying it costs nothing.
DEFAULT_MODELS = {
    "image": Regional(
        china=(
            "doubao-seedream-4-5-251128",
            "doubao-seedream-5-0-pro-260628",
            "doubao-seedream-5-0-flash-260915",
            "doubao-seedream-5-5-261028",
            "doubao-seedream-4-0-250828",
            "doubao-seedream-5-0-260128",
        ),
        # 5.0 lite last: BytePlus deactivated it in eu-west-1 on 2026-09-10, so it is no longer the one model every
        # BytePlus region serves.
        byteplus=(
            "seedream-4-5-251128",
            "dola-seedream-5-0-pro-260628",
            "dola-seedream-5-0-flash-260915",
            "dola-seedream-5-5-261028",
            "seedream-4-0-250828",
            "seedream-5-0-260128",
        ),
    ),
    "video": Regional(
        china=(
            "doubao-seedance-2-0-260128",
            "doubao-seedance-2-5-260628",
            "doubao-seedance-2-0-fast-260128",
            "doubao-seedance-2-0-mini-260615",
            "doubao-seedance-1-5-pro-251215",
        ),
        # 1.5 pro last: shut down on BytePlus since 2026-11-11; 2.0 mini is its named replacement.
        byteplus=(
            "dreamina-seedance-2-0-260128",
            "dreamina-seedance-2-5-260628",
            "dreamina-seedance-2-0-fast-260128",
            "dreamina-seedance-2-0-mini-260615",
            "dreamina-seedance-2-5-premium-260915",
            "seedance-1-5-pro-251215",
        ),
    ),
}


@dataclass(frozen=True)
class Lifecycle:
    """A family Ark has retired or is retiring. Never a reason to refuse a call (BytePlus may still serve an id
    China retired, and these dates come from notes that can be wrong): it explains Ark's refusal, names the
    successor, and adds a note to a result the model still made."""

    name: str
    # "being retired", "retired in China since 2026-11-24".
    status: str
    successor: Regional
    # What the successor cannot do, or does otherwise.
    caveat: str
    # False: deprecated, still served.
    retired: bool = True
    # Where it holds.
    regions: tuple[int, ...] = (CHINA, BYTEPLUS)

    def advice(self, region: int) -> str:
        return f"{self.name} is {self.status}: use {self.successor[region]} ({self.caveat})."


SEEDREAM_4_5 = Regional(
    china="doubao-seedream-4-5-251128", byteplus="seedream-4-5-251128"
)
SEEDREAM_5_PRO = Regional(
    china="doubao-seedream-5-0-pro-260628",
    byteplus="dola-seedream-5-0-pro-260628",
)
SEEDANCE_2_0 = Regional(
    china="doubao-seedance-2-0-260128", byteplus="dreamina-seedance-2-0-260128"
)
SEEDANCE_2_5 = Regional(
    china="doubao-seedance-2-5-260628", byteplus="dreamina-seedance-2-5-260628"
)


class Refs(NamedTuple):
    """The most reference media a video family takes."""

    images: int = 0
    videos: int = 0
    audios: int = 0


NO_REFS = Refs()


@dataclass(frozen=True)
class VideoFamily:
    # Seconds.
    durations: tuple[int, int]
    # Duration -1: the model chooses.
    auto_duration: bool
    resolutions: tuple[str, ...]
    refs: Refs = NO_REFS
    total_refs: int | None = None
    # Reference audios without a reference image or video beside them.
    audio_alone: bool = True
    # Text-to-video, with no image at all.
    text_only: bool = True
    first_frame: bool = True
    last_frame: bool = True
    # The prompt may be left out when images, videos or audios are given.
    prompt_optional: bool = False
    frames: bool = False
    # The resolutions a draft may have; (): no drafts, and no draft_task_id.
    drafts: tuple[str, ...] = ()
    # generate_audio.
    audio: bool = False
    web_search: Literal["no", "text-to-video", "yes"] = "no"
    # Seedance 2.5: frames at ratio adaptive, extra.omni_reference_task_type, mov output.
    omni: bool = False
    lifecycle: Lifecycle | None = None
    # How long a 5 s 720p video takes, before any is seen (the prior)
    seconds: float = UNKNOWN_MODEL_SECONDS
    # The most seconds of reference video a call may hold (billed as input).
    reference_seconds: float = 15.2


@dataclass(frozen=True)
class ImageFamily:
    # Named sizes.
    sizes: tuple[str, ...]
    # WIDTHxHEIGHT with this many pixels; None: named sizes only.
    pixels: tuple[int, int] | None
    # Fewest and most reference images.
    refs: tuple[int, int] = (0, 10)
    # max_images above 1.
    sets: bool | None = True
    web_search: bool | None = False
    # Background: transparent or opaque (Seedream 5.5)
    background: bool | None = False
    # asset:// images: Seedream 5.0 pro answers 400 [C]; other Seedream models are sent them, and Ark decides.
    assets: bool | None = None
    lifecycle: Lifecycle | None = None


RESOLUTIONS_480_1080 = ("480p", "720p", "1080p")
SEEDANCE_2 = VideoFamily(
    durations=(4, 15),
    auto_duration=True,
    resolutions=(*RESOLUTIONS_480_1080, "4k"),
    refs=Refs(images=9, videos=3, audios=3),
    total_refs=12,
    audio_alone=False,
    prompt_optional=True,
    audio=True,
    web_search="text-to-video",
)
SEEDANCE_2_5_FAMILY = replace(
    SEEDANCE_2,
    durations=(4, 30),
    resolutions=RESOLUTIONS_480_1080,
    refs=Refs(images=30, videos=10, audios=10),
    total_refs=None,
    audio_alone=True,
    web_search="yes",
    drafts=("480p",),
    omni=True,
    seconds=120.0,
    reference_seconds=30.2,
)
RETIRED_1_0 = Lifecycle(
    name="Seedance 1.0",
    status="retired since 2026-07-17",
    successor=SEEDANCE_2_0,
    caveat="or 2.0 fast; 4-15 s",
)
RETIRED_1_0_LITE = replace(
    RETIRED_1_0, name="Seedance 1.0 lite", status="retired since 2026-05-13"
)
SEEDANCE_1_0 = VideoFamily(
    durations=(2, 12),
    auto_duration=False,
    resolutions=RESOLUTIONS_480_1080,
    frames=True,
)
# What a quote assumes of a model the table does not know (an endpoint priced with `as` something unknown): the
# longest durations and references of Seedance 2.0.
UNKNOWN_VIDEO_FAMILY = SEEDANCE_2
VIDEO_MODELS: dict[str, VideoFamily] = {
    "seedance-2-5": SEEDANCE_2_5_FAMILY,
    # Renders 4k only, drafts at 480p: a premium final at 1080p was refused live (InvalidResolutionParameter).
    "seedance-2-5-premium": replace(SEEDANCE_2_5_FAMILY, resolutions=("4k",)),
    "seedance-2-0": SEEDANCE_2,
    "seedance-2-0-fast": replace(
        SEEDANCE_2, resolutions=("480p", "720p"), seconds=45.0
    ),
    "seedance-2-0-mini": replace(
        SEEDANCE_2, resolutions=("480p", "720p"), seconds=40.0
    ),
    "seedance-1-5-pro": VideoFamily(
        durations=(4, 12),
        auto_duration=True,
        resolutions=RESOLUTIONS_480_1080,
        drafts=RESOLUTIONS_480_1080,
        audio=True,
        # China: being retired; BytePlus shut it down on 2026-11-11 and names 2.0 mini [C].
        lifecycle=Lifecycle(
            name="Seedance 1.5 pro",
            status="being retired (on BytePlus, shut down since 2026-11-11)",
            successor=Regional(
                china=SEEDANCE_2_5.china, byteplus="dreamina-seedance-2-0-mini-260615"
            ),
            caveat="Seedance 2.5 makes drafts too, at 480p; 2.0 mini makes none",
            retired=False,
        ),
    ),
    "seedance-1-0-pro": replace(SEEDANCE_1_0, lifecycle=RETIRED_1_0),
    "seedance-1-0-pro-fast": replace(SEEDANCE_1_0, last_frame=False),
    "seedance-1-0-lite-i2v": replace(
        SEEDANCE_1_0,
        refs=Refs(images=4),
        text_only=False,
        lifecycle=RETIRED_1_0_LITE,
    ),
    "seedance-1-0-lite-t2v": replace(
        SEEDANCE_1_0,
        first_frame=False,
        last_frame=False,
        lifecycle=RETIRED_1_0_LITE,
    ),
}
# The docs give no range: the universal side limits apply.
ANY_PIXELS = (0, 2**31)
# Seedream 5.0 pro and flash custom sizes, with no multiple-of-16 rule (a live 1500x1000 returned 200) [K][P][C].
SEEDREAM_5_PIXELS = (921_600, 4_624_220)
SEEDREAM_5_LITE = ImageFamily(
    sizes=("2K", "3K", "4K"),
    pixels=ANY_PIXELS,
    refs=(0, 14),
    web_search=True,
    background=None,
    lifecycle=Lifecycle(
        name="Seedream 5.0 lite",
        status="retired in China since 2026-11-24",
        successor=SEEDREAM_5_PRO,
        caveat="it makes no sets, no web search and no 3K or 4K",
        regions=(CHINA,),
    ),
)
IMAGE_MODELS: dict[str, ImageFamily] = {
    "seedream-5-5": ImageFamily(
        sizes=("1K", "1.5K", "2K"),
        pixels=ANY_PIXELS,
        sets=False,
        web_search=None,
        background=True,
    ),
    "seedream-5-0": SEEDREAM_5_LITE,
    "seedream-5-0-lite": SEEDREAM_5_LITE,
    "seedream-5-0-pro": ImageFamily(
        sizes=("1K", "1.5K", "2K", "auto"),
        pixels=SEEDREAM_5_PIXELS,
        sets=False,
        background=None,
        assets=False,
    ),
    # No sets, no fast mode, no thinking toggle [C][P].
    "seedream-5-0-flash": ImageFamily(
        sizes=("1K", "1.5K", "2K"),
        pixels=SEEDREAM_5_PIXELS,
        sets=False,
        web_search=True,
        background=None,
    ),
    "seedream-4-5": ImageFamily(
        sizes=("2K", "4K"), pixels=(3_686_400, 16_777_216), refs=(0, 14)
    ),
    "seedream-4-0": ImageFamily(sizes=("1K", "2K", "4K"), pixels=(921_600, 16_777_216)),
    "seedream-3-0-t2i": ImageFamily(
        sizes=(),
        pixels=(262_144, 4_194_304),
        refs=(0, 0),
        sets=False,
        lifecycle=Lifecycle(
            name="Seedream 3.0",
            status="retired since 2026-05-13",
            successor=SEEDREAM_4_5,
            caveat="sizes 2K, 4K or 3.69 MP and up",
        ),
    ),
    "seededit-3-0-i2i": ImageFamily(
        sizes=("adaptive",), pixels=None, refs=(1, 1), sets=False
    ),
}


@dataclass(frozen=True)
class Price:
    """What one family costs in one region. Videos are billed by output tokens (see VIDEO_FPS), at a rate per
    million that depends on the resolution and on whether the input holds a video; images by the image. A
    resolution or size without a rate has no price: never one made up. DOUBAO_PRICES replaces any of it."""

    # Per million output tokens, by resolution; with a reference video in the input; with generate_audio false.
    per_million_tokens: Mapping[str, float] = field(default_factory=dict)
    with_video_input: Mapping[str, float] = field(default_factory=dict)
    without_audio: Mapping[str, float] = field(default_factory=dict)
    # service_tier flex: this fraction of the rate.
    flex: float = FLEX_PRICE_FACTOR
    # Per image generated: one price, or by size ("1K", "2K").
    per_image: float | Mapping[str, float] | None = None
    # Per image generated, for each reference image beyond the first.
    per_extra_reference: float = 0.0
    # Where the figures come from, and when they were read.
    source: str = ""
    date: str = ""


# The fields a DOUBAO_PRICES entry may give, and "as" (price an endpoint like a family or model).
PRICE_FIELDS = ("as", *Price.__dataclass_fields__)


def by_resolution(low: float, high: float | None = None) -> dict[str, float]:
    """One rate at 480p and 720p, another (or the same) at 1080p."""
    return {"480p": low, "720p": low, "1080p": low if high is None else high}


def up_to_720p(rate: float) -> dict[str, float]:
    return {"480p": rate, "720p": rate}


CHINA_RESELLERS = (
    "resellers' billing code, consistent with each other [R] (ARK_API.md, Billing)"
)
BYTEPLUS_COMFY = "ComfyUI's BytePlus price list [C], maybe 1.43x BytePlus's own: an upper bound (ARK_API.md, Billing)"
BYTEPLUS_IMAGES = "ComfyUI's and resellers' lists [C][R] (ARK_API.md, Billing)"
SEEDREAM_5_LITE_PRICE = Price(per_image=0.035, source=BYTEPLUS_IMAGES, date="2026-11")
# By region and family (see family_key). China's image prices, and Seedance 2.5, 2.0 mini and 1.5 pro in CNY,
# were not found: those have no price until DOUBAO_PRICES gives one.
PRICES = Regional(
    china={
        "seedance-2-0": Price(
            per_million_tokens=by_resolution(46, 51),
            with_video_input=by_resolution(28, 31),
            source=CHINA_RESELLERS,
            date="2026-11",
        ),
        "seedance-2-0-fast": Price(
            per_million_tokens=up_to_720p(37),
            with_video_input=up_to_720p(22),
            source=CHINA_RESELLERS,
            date="2026-11",
        ),
        "seedance-1-0-pro": Price(
            per_million_tokens=by_resolution(15), source=CHINA_RESELLERS, date="2026-11"
        ),
        "seedance-1-0-pro-fast": Price(
            per_million_tokens=by_resolution(4.2),
            source=CHINA_RESELLERS,
            date="2026-11",
        ),
    },
    byteplus={
        "seedance-2-5": Price(
            per_million_tokens=by_resolution(15.301, 16.731),
            with_video_input=by_resolution(9.152, 10.01),
            source=BYTEPLUS_COMFY,
            date="2026-11",
        ),
        "seedance-2-0": Price(
            per_million_tokens=by_resolution(10.01, 11.011),
            with_video_input=by_resolution(6.149, 6.721),
            source=BYTEPLUS_COMFY,
            date="2026-11",
        ),
        "seedance-2-0-fast": Price(
            per_million_tokens=up_to_720p(8.008),
            with_video_input=up_to_720p(4.719),
            source=BYTEPLUS_COMFY,
            date="2026-11",
        ),
        "seedance-2-0-mini": Price(
            per_million_tokens=up_to_720p(5.005),
            with_video_input=up_to_720p(3.003),
            source=BYTEPLUS_COMFY,
            date="2026-11",
        ),
        "seedance-1-5-pro": Price(
            per_million_tokens=by_resolution(2.4),
            without_audio=by_resolution(1.2),
            source="resellers' notes [R] (ARK_API.md, Billing)",
            date="2026-11",
        ),
        "seedream-5-0-pro": Price(
            per_image={"1K": 0.045, "2K": 0.09},
            per_extra_reference=0.003,
            source=BYTEPLUS_IMAGES,
            date="2026-11",
        ),
        "seedream-5-0-flash": Price(
            per_image=0.02574, source=BYTEPLUS_IMAGES, date="2026-11"
        ),
        # 5.0 lite, under both of its family names (as IMAGE_MODELS has it).
        "seedream-5-0": SEEDREAM_5_LITE_PRICE,
        "seedream-5-0-lite": SEEDREAM_5_LITE_PRICE,
        "seedream-4-5": Price(per_image=0.04, source=BYTEPLUS_IMAGES, date="2026-11"),
        "seedream-4-0": Price(per_image=0.03, source=BYTEPLUS_IMAGES, date="2026-11"),
    },
)
CURRENCIES = Regional(china="CNY", byteplus="USD")
# Output sizes by resolution and ratio (4k: twice 1080p's sides).
VIDEO_SIZES: dict[str, dict[str, tuple[int, int]]] = {
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
VIDEO_SIZES["4k"] = {
    ratio: (2 * width, 2 * height)
    for ratio, (width, height) in VIDEO_SIZES["1080p"].items()
}
# Named image sizes, in pixels, to price a WxH size by the smallest named one that holds it.
IMAGE_SIZE_PIXELS = {
    "1K": 1024**2,
    "1.5K": 1536**2,
    "2K": 2048**2,
    "3K": 3072**2,
    "4K": 4096**2,
}

# --- Errors: what a call can fail with, and the one place an error's advice is decided --------------------------------


class DoubaoError(ToolError):
    """Every failure this server anticipates. The SDK turns it into an `isError` result with this text."""


class ConfigError(ValueError):
    """A setting in the environment that cannot work: start-up stops with this one line on stderr."""


class ArkConnectionError(DoubaoError):
    """No usable answer arrived: DNS, refused or dropped connection, timeout, or an unreadable 2xx body."""


class NotListed(DoubaoError):
    """A list request left the task out: Ark may have forgotten it. The watcher asks about it alone, at its pace."""


@dataclass
class CallFacts:
    """What a call knows of an Ark error beyond Ark's own answer, each told by the layer that knows it: the model it
    went to and where that came from (the fall-through), the task's status (a cancel), whose key it was (the tool)."""

    kind: Kind = "video"
    model: str | None = None
    # "argument", "setting" or "default".
    model_source: str | None = None
    lifecycle: Lifecycle | None = None
    region: int = CHINA
    task_status: str | None = None
    caller_key: bool = False
    # An image call with asset:// inputs, which Seedream refuses.
    asset_images: bool = False
    # The asset tools are offered (the tool): a real person's refusal names them.
    assets: bool = False


class ArkAPIError(DoubaoError):
    """Ark (or a proxy in front of it) answered with a non-2xx status. Its advice is decided when it is shown (see
    `decide_hint`), from Ark's answer and the `facts` the call added on the way up."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        param: str | None = None,
        request_id: str | None = None,
        path: str = "",
        base_url: str = DEFAULT_BASE_URL,
    ):
        self.status, self.code, self.message, self.param, self.request_id = (
            status,
            code,
            message,
            param,
            request_id,
        )
        self.path, self.base_url = path, base_url
        self.facts = CallFacts()
        super().__init__(str(self))

    @property
    def hint(self) -> str | None:
        return decide_hint(self)

    def __str__(self) -> str:
        where = []
        if self.param:
            where.append(f"param {self.param}")
        if self.request_id:
            where.append(f"request id {self.request_id}")
        text = f"Ark API error {self.status}"
        if self.code:
            text += f" {self.code}"
        text += f": {self.message}"
        text += f" ({', '.join(where)})." if where else "."
        hint = self.hint
        return f"{text} {hint}" if hint else text


def model_unavailable(error: ArkAPIError) -> bool:
    """Ark's answer that this account cannot use the model: retired, or never activated. It bills nothing, so the next
    default may be tried. Any other answer, a timeout or a dropped connection may mean the work was done."""
    code = error.code or ""
    refused = 400 <= error.status < 500 and error.status != 429
    return refused and (
        "ModelNotOpen" in code or code.startswith("InvalidEndpointOrModel")
    )


def decide_hint(error: ArkAPIError) -> str | None:
    """What to do about an Ark error: decided here, once, from Ark's answer and what the call knows of it."""
    facts = error.facts
    refused = 400 <= error.status < 500
    if error.status == 401 and facts.caller_key:
        return CALLER_KEY_REFUSED
    if refused and facts.task_status in NOT_CANCELLABLE:
        return NOT_CANCELLABLE[facts.task_status]
    if error.status == 400 and facts.asset_images:
        return ASSETS_ON_SEEDANCE_ONLY
    hint = unavailable_hint(error) or table_hint(
        error.status,
        error.code,
        error.param,
        error.path,
        error.base_url,
        facts.assets,
    )
    if facts.lifecycle and refused and error.status not in (401, 429):
        return " ".join(filter(None, [facts.lifecycle.advice(facts.region), hint]))
    return hint


def unavailable_hint(error: ArkAPIError) -> str | None:
    """A model the caller chose (or set) that the account cannot use: activate it (Ark says it is not activated), or
    name another; one this server does not know and that looks like one it does is a typo."""
    facts = error.facts
    if facts.model_source not in ("argument", "setting") or not model_unavailable(
        error
    ):
        return None
    instead = (
        "pass"
        if facts.model_source == "argument"
        else f"set DOUBAO_{facts.kind.upper()}_MODEL to"
    )
    meant = did_you_mean(facts.kind, facts.model or "", facts.region)
    if meant and "has not activated" not in error.message:
        return f"No model {facts.model} is known here: did you mean {meant}? Or {instead} another model or endpoint id."
    return UNAVAILABLE_HINT.format(model=facts.model, instead=instead)


def did_you_mean(kind: Kind, model: str, region: int) -> str | None:
    """The region's known id that a model id not in the table was likely meant to be (4.5 for 4-5, a missing date
    stamp), or None."""
    if not model or model.startswith("ep-") or family_row(kind, model) is not None:
        return None
    known = [*DEFAULT_MODELS[kind][region]]
    close = difflib.get_close_matches(
        model.replace(".", "-").lower(), known, n=1, cutoff=0.8
    )
    return close[0] if close else None


def table_hint(
    status: int,
    code: str | None,
    param: str | None,
    path: str,
    base_url: str,
    assets: bool = False,
) -> str | None:
    """What the tables say of an error: by its code, else by its status."""
    model_env = (
        "DOUBAO_IMAGE_MODEL" if path.startswith(IMAGES_PATH) else "DOUBAO_VIDEO_MODEL"
    )
    # Ark's own 404s say why in its JSON, and its API lives under /v3: a bare 404, or any 404 from a root that does
    # not end in /v3 (the host alone, say), means the address is wrong, whatever the model.
    under_v3 = urlsplit(base_url).path.rstrip("/").endswith("/v3")
    if status == 404 and (not code or not under_v3):
        return WRONG_ADDRESS_HINT.format(base_url=base_url)
    hint = code_hint(code, model_env, param, assets)
    if hint is None and status == 404 and path.startswith(TASKS_PATH + "/"):
        hint = TASK_NOT_FOUND_HINT
    if hint is None:
        hint = HINTS_BY_STATUS.get(min(status, 500), "").format(model_env=model_env)
    return hint or None


def code_hint(
    code: str | None,
    model_env: str = "DOUBAO_VIDEO_MODEL",
    param: str | None = None,
    assets: bool = False,
) -> str | None:
    """What to do about an Ark error code, in an error answer or a failed task alike; `assets`: the asset tools are
    offered."""
    if not code:
        return None
    if REAL_PERSON_CODE.match(code):
        return REAL_PERSON_HINTS[assets]
    hint = hint_in(HINTS_BY_CODE, code)
    if hint is None:
        return None
    return hint.format(model_env=model_env, param=param or UNNAMED_PARAM)


def hint_in(table: Mapping[str, str], code: str) -> str | None:
    """A hint table's text for an error code: the first key found in the code wins."""
    return next((text for key, text in table.items() if key in code), None)


# --- Settings: Limits and Config, read once from the environment ------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """How much the server takes on at once, and how long and how large anything may be: one place (tests shrink it).

    Blocking work runs on two fixed sets of threads, so that quick calls stay quick whatever long generations
    do; their sum bounds the threads, and so the requests in flight upstream."""

    # Task queries, lists and cancels, folder checks.
    quick_threads: int = 8
    # Image generations, task creation (uploads), downloads, reading input files.
    slow_threads: int = 31
    # and one more: the watcher, which saves videos on its own
    # Longest wait for a free thread before a call is told the server is busy.
    slot_wait: float = 20.0
    # A task call, retries included.
    task_deadline: float = 30.0
    download_deadline: float = DOWNLOAD_DEADLINE_SECONDS
    # Bytes per second, over every rate_window of a download.
    download_min_rate: float = 64 * 2**10
    rate_window: float = 30.0
    # An API answer; Ark's are a few KB, a list of 500 tasks about 1 MB.
    max_answer_bytes: int = 8 * 2**20
    # Hosting over HTTP:
    # A request: Ark's 64 MB of base64 inputs, and the JSON-RPC around them.
    max_body: int = 70 * 2**20
    # All request bodies held at once, received and not yet answered: parsing and checking one takes about seven
    # times its size (the SDK's copies), so this bounds the server's memory, not only the sockets.
    max_bodies_in_flight: int = 100 * 2**20
    # For a whole request body to arrive.
    body_timeout: float = 120.0
    # For a request's head to arrive.
    header_timeout: float = 10.0
    # An idle kept-alive connection is closed after this.
    keep_alive: float = 5.0
    # At SIGTERM/SIGINT, for calls in flight to finish.
    grace: float = 20.0
    # More at once get 503.
    max_connections: int = 256

    @property
    def threads(self) -> int:
        return self.quick_threads + self.slow_threads + 1


def first_setting(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first of these variables that is set to something, stripped."""
    return next(
        (env[name].strip() for name in names if env.get(name, "").strip()), None
    )


@dataclass(frozen=True)
class Config:
    """Everything the server reads from its environment, read once in `from_env`."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    # DOUBAO_IMAGE_MODEL; None: the region's DEFAULT_MODELS.
    image_model: str | None = None
    video_model: str | None = None
    image_timeout: float = DEFAULT_IMAGE_TIMEOUT_SECONDS
    output_dir: str | None = None
    allowed_dir: Path | None = None
    # Set by main(): over HTTP, callers bring keys and the disk is not theirs.
    serving_http: bool = False
    poll_intervals: tuple[float, float] = POLL_INTERVALS_SECONDS
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    limits: Limits = field(default_factory=Limits)
    # The client's folder, where it started the server.
    working_dir: Path = field(default_factory=Path.cwd)
    # Image previews in results; DOUBAO_PREVIEWS=0 for clients that pay per image token.
    previews: bool = True
    # The task record's folder; None: no record (DOUBAO_STATE_DIR=off)
    state_dir: Path | None = None
    # Hosts the viewer may load images and videos from.
    media_domains: tuple[str, ...] = MEDIA_DOMAINS
    # DOUBAO_UPLOADS: where local media is uploaded for Ark to fetch; None: nowhere.
    uploads: UploadTarget | None = None
    # The asset library's keys and address (VOLCENGINE_ACCESS_KEY and the rest); None: no asset tools.
    assets: AssetSettings | None = None
    # DOUBAO_PRICES: entries by family, model or endpoint id, checked (see read_prices).
    price_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # DOUBAO_DAILY_LIMIT in the region's currency; None: off. limit_set: the person set it (not the default).
    daily_limit: float | None = None
    limit_set: bool = False
    # DOUBAO_CONFIRM_ABOVE: calls estimated above it are asked about first; None: never.
    confirm_above: float | None = None
    # From base_url, in __post_init__: CHINA or BYTEPLUS.
    region: int = field(init=False, default=CHINA)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        check_model_settings(env)
        try:
            api_key = usable_key(first_setting(env, API_KEY_ENV), "ARK_API_KEY")
        except DoubaoError as error:
            raise ConfigError(str(error)) from None
        allowed_dir = read_allowed_dir(env)
        base_url = read_base_url(env)
        currency = CURRENCIES[region_of(base_url)]
        daily_limit, limit_set = read_daily_limit(env, currency)
        return cls(
            assets=read_assets(env, base_url),
            uploads=read_uploads(env),
            price_overrides=read_prices(env, currency),
            daily_limit=daily_limit,
            limit_set=limit_set,
            confirm_above=read_amount(env, "DOUBAO_CONFIRM_ABOVE", currency),
            state_dir=read_state_dir(env),
            previews=env.get("DOUBAO_PREVIEWS", "1").strip().lower()
            not in ("0", "false", "no", "off"),
            media_domains=MEDIA_DOMAINS + read_media_domains(env),
            api_key=api_key,
            base_url=base_url,
            image_model=first_setting(env, IMAGE_MODEL_ENV),
            video_model=first_setting(env, VIDEO_MODEL_ENV),
            image_timeout=read_image_timeout(env),
            output_dir=first_setting(env, ("DOUBAO_OUTPUT_DIR",)),
            allowed_dir=allowed_dir and allowed_dir.resolve(),
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "region", region_of(self.base_url))


@dataclass(frozen=True)
class AssetSettings:
    """The asset library's keys, where it lives and how it is signed, the project its assets belong to, and how
    fast assets may be made (see read_assets)."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    url: str
    region: str
    project: str = "default"
    creates_per_minute: float = DEFAULT_ASSET_CREATES_PER_MINUTE
    # How often an asset's processing, and a liveness check, are asked about (tests shrink it).
    poll_seconds: float = ASSET_POLL_SECONDS
    # DOUBAO_ASSET_ALLOW_REMOVE=1: the person lets remove_asset remove without asking (a client that cannot ask).
    allow_remove: bool = False


def offers_assets(config: Config) -> bool:
    """The asset tools are listed: the keys are set, and the server runs on stdio. Over HTTP every caller would act
    on the operator's one library, with the operator's keys: they are not offered there."""
    return config.assets is not None and not config.serving_http


def read_assets(env: Mapping[str, str], base_url: str) -> AssetSettings | None:
    """The asset library's settings, when a pair of keys is set (the region's own names first); None without keys.
    DOUBAO_ASSET_API_URL and DOUBAO_ASSET_REGION follow from ARK_BASE_URL unless set."""
    region = region_of(base_url)
    names = [ASSET_KEY_ENV["byteplus" if region == BYTEPLUS else "volcengine"]]
    names += [pair for pair in ASSET_KEY_ENV.values() if pair not in names]
    keys = None
    for access_name, secret_name in names:
        access, secret = (
            first_setting(env, (access_name,)),
            first_setting(env, (secret_name,)),
        )
        if bool(access) != bool(secret):
            missing = secret_name if access else access_name
            raise ConfigError(
                f"{missing} is not set: the asset library needs both {access_name} and {secret_name}"
            )
        if access and secret:
            keys = (access, secret)
            break
    if keys is None:
        return None
    url = first_setting(env, ("DOUBAO_ASSET_API_URL",))
    parts = urlsplit(url or "")
    if url and (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path.strip("/")
    ):
        raise ConfigError(
            f"DOUBAO_ASSET_API_URL must be the asset API's address, such as {ASSET_HOSTS['ap-southeast'][0]}, got "
            f"{url[:100]!r}"
        )
    # The asset API's own host names its region, else Ark's does.
    hosts = f"{parts.hostname or ''} {urlsplit(base_url).hostname or ''}"
    derived = next(
        (found for name, found in ASSET_HOSTS.items() if name in hosts),
        ASSET_HOSTS["ap-southeast" if region == BYTEPLUS else "cn-beijing"],
    )
    signing_region = first_setting(env, ("DOUBAO_ASSET_REGION",)) or derived[1]
    if not re.fullmatch(r"[a-z]{2,}-[a-z]+(-\d+)?", signing_region):
        raise ConfigError(
            f"DOUBAO_ASSET_REGION must be a region such as ap-southeast-1 or cn-beijing, got {signing_region[:40]!r}"
        )
    rate = first_setting(env, ("DOUBAO_ASSET_CREATES_PER_MINUTE",))
    try:
        per_minute = float(rate) if rate else DEFAULT_ASSET_CREATES_PER_MINUTE
    except ValueError:
        per_minute = 0.0
    if not (math.isfinite(per_minute) and 0 < per_minute <= 6000):
        raise ConfigError(
            f"DOUBAO_ASSET_CREATES_PER_MINUTE must be a number from 0.1 to 6000 (your tier's CreateAsset rate; the "
            f"entry tier's is 3), got {rate!r}"
        )
    project = first_setting(env, ("DOUBAO_ASSET_PROJECT",)) or "default"
    if not re.fullmatch(r"[\w.-]{1,64}", project):
        raise ConfigError(
            f"DOUBAO_ASSET_PROJECT must be a project name such as default, got {project[:70]!r}"
        )
    return AssetSettings(
        access_key=keys[0],
        secret_key=keys[1],
        url=(url or derived[0]).rstrip("/"),
        region=signing_region,
        project=project,
        creates_per_minute=per_minute,
        allow_remove=first_setting(env, ("DOUBAO_ASSET_ALLOW_REMOVE",))
        in ("1", "true", "yes", "on"),
    )


def region_of(base_url: str) -> int:
    """BYTEPLUS on a BytePlus ModelArk host (the same models under other ids, billed in USD), else CHINA."""
    host = urlsplit(base_url).hostname or ""
    return BYTEPLUS if host.endswith(".bytepluses.com") else CHINA


def read_base_url(env: Mapping[str, str]) -> str:
    base_url = (first_setting(env, ("ARK_BASE_URL",)) or DEFAULT_BASE_URL).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"ARK_BASE_URL must be an http(s) URL such as {DEFAULT_BASE_URL}, got {base_url!r}"
        )
    return base_url


def read_image_timeout(env: Mapping[str, str]) -> float:
    given = first_setting(env, ("ARK_TIMEOUT",))
    try:
        seconds = float(given) if given else DEFAULT_IMAGE_TIMEOUT_SECONDS
    except ValueError:
        seconds = 0
    if not 0 < seconds <= 3600:
        raise ConfigError(
            f"ARK_TIMEOUT must be a number of seconds between 1 and 3600, got {given!r}"
        )
    return seconds


def read_allowed_dir(env: Mapping[str, str]) -> Path | None:
    given = first_setting(env, ("DOUBAO_ALLOWED_DIR",))
    if not given:
        return None
    folder = Path(given).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"DOUBAO_ALLOWED_DIR must be an existing folder, got {given!r}"
        )
    return folder


def check_model_settings(env: Mapping[str, str]) -> None:
    for names, example in (
        (IMAGE_MODEL_ENV, SEEDREAM_4_5.china),
        (VIDEO_MODEL_ENV, SEEDANCE_2_0.china),
    ):
        model = first_setting(env, names)
        if model and not re.fullmatch(ID_PATTERN, model):
            name = next(n for n in names if env.get(n, "").strip())
            raise ConfigError(
                f"{name} must be a model id such as {example} or an endpoint id (ep-...), got {model[:100]!r}"
            )


def read_media_domains(env: Mapping[str, str]) -> tuple[str, ...]:
    given = env.get("DOUBAO_MEDIA_DOMAINS", "").split(",")
    domains = tuple(d.strip().rstrip("/") for d in given if d.strip())
    for domain in domains:
        if not re.fullmatch(r"https?://(\*\.)?[\w.-]+(:\d+)?", domain):
            raise ConfigError(
                "DOUBAO_MEDIA_DOMAINS entries are origins such as https://media.example.com or "
                f"https://*.example.com, got {domain!r}"
            )
    return domains


def read_state_dir(env: Mapping[str, str]) -> Path | None:
    given = first_setting(env, ("DOUBAO_STATE_DIR",))
    if not given:
        return default_state_dir(env)
    if given.lower() == "off":
        return None
    # A relative one is under home, as DOUBAO_OUTPUT_DIR is.
    return Path.home() / Path(given).expanduser()


def read_uploads(env: Mapping[str, str]) -> UploadTarget | None:
    """DOUBAO_UPLOADS=s3://bucket/prefix, with boto3 installed (the uploads extra)."""
    given = first_setting(env, ("DOUBAO_UPLOADS",))
    if not given:
        return None
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", given)
    if not match:
        raise ConfigError(
            f"DOUBAO_UPLOADS must be an S3 bucket and an optional prefix, such as s3://my-bucket/doubao, got "
            f"{given[:100]!r}"
        )
    import importlib.util

    if importlib.util.find_spec("boto3") is None:
        raise ConfigError(
            "DOUBAO_UPLOADS needs the uploads extra: install doubao-image-video-mcp[uploads] (with uvx: uvx --from "
            "'doubao-image-video-mcp[uploads]' doubao-image-video-mcp)"
        )
    prefix = (match[2] or "").strip("/")
    return UploadTarget(bucket=match[1], prefix=f"{prefix}/" if prefix else "")


def read_daily_limit(
    env: Mapping[str, str], currency: str
) -> tuple[float | None, bool]:
    """DOUBAO_DAILY_LIMIT, and whether the person set it: unset, the default for the currency; off, none."""
    given = first_setting(env, ("DOUBAO_DAILY_LIMIT",))
    if given is None:
        return DEFAULT_DAILY_LIMIT[currency], False
    return read_amount(env, "DOUBAO_DAILY_LIMIT", currency), True


def read_amount(env: Mapping[str, str], name: str, currency: str) -> float | None:
    """An amount of money in the region's currency, or None for unset or off. Anything else stops start-up: a
    limit that does not parse is never read as no limit."""
    given = first_setting(env, (name,))
    if given is None or given.lower() == "off":
        return None
    try:
        amount = float(given.upper().removesuffix(currency).strip())
    except ValueError:
        amount = -1.0
    if not (math.isfinite(amount) and amount >= 0):
        raise ConfigError(
            f"{name} must be an amount in {currency} (this Ark bills in {currency}) such as 50, or off, got "
            f"{given[:40]!r}"
        )
    return amount


def read_prices(env: Mapping[str, str], currency: str) -> dict[str, dict[str, Any]]:
    """DOUBAO_PRICES: a JSON file of prices that replace or extend the built-in table, each entry checked (see
    docs/cost.md). Keys are lower-cased, as family_key makes them."""
    given = first_setting(env, ("DOUBAO_PRICES",))
    if not given:
        return {}
    where = f"DOUBAO_PRICES ({given[:200]})"
    try:
        with open(Path(given).expanduser(), "rb") as file:
            raw = file.read(PRICES_MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(
            f"{where} cannot be read: {error.strerror or error}"
        ) from None
    if len(raw) > PRICES_MAX_BYTES:
        raise ConfigError(
            f"{where} is over {size_text(PRICES_MAX_BYTES)}: a price file is a few KB"
        )
    try:
        document = json.loads(raw.decode("utf-8"))
    # UnicodeDecodeError is a ValueError too.
    except ValueError as error:
        raise ConfigError(f"{where} is not JSON: {error}") from None
    if not isinstance(document, dict) or set(document) - {"currency", "models"}:
        raise ConfigError(
            f'{where} must be an object with "currency" and "models", such as {{"currency": "{currency}", '
            '"models": {"doubao-seedance-2-0": {"per_million_tokens": {"720p": 46}}}}'
        )
    if document.get("currency") != currency:
        raise ConfigError(
            f'{where} must say "currency": "{currency}": this Ark (ARK_BASE_URL) bills in {currency}, and '
            f"its prices are given in {currency} (got {str(document.get('currency'))[:20]!r})"
        )
    models = document.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f'{where}: "models" must be an object of entries by model')
    entries = {
        price_key(str(key)): check_price_entry(f"{where} models.{key}", entry)
        for key, entry in models.items()
    }
    for key, entry in entries.items():
        target = entry.get("as", "")
        if "as" in entry and not (
            price_key(target) in entries
            or family_key(target) in {*PRICES.china, *PRICES.byteplus}
        ):
            raise ConfigError(
                f"{where} models.{key}.as names {target!r}, which has no price here or in the built-in table"
            )
    return entries


def check_price_entry(where: str, entry: Any) -> dict[str, Any]:
    """One DOUBAO_PRICES entry, every field checked."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object of prices")
    for name, value in entry.items():
        if name not in PRICE_FIELDS:
            raise ConfigError(
                f"{where} has an unknown field {name!r}: allowed are {', '.join(PRICE_FIELDS)}"
            )
        at = f"{where}.{name}"
        if name in ("as", "source", "date"):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{at} must be a string")
        elif name in ("per_million_tokens", "with_video_input", "without_audio"):
            check_rates(at, value, VIDEO_SIZES, "resolutions")
        elif name == "per_image" and isinstance(value, dict):
            check_rates(at, value, IMAGE_SIZE_PIXELS, "sizes")
        elif not is_amount(value) or (name == "flex" and value > 1):
            allowed = (
                "a fraction from 0 to 1" if name == "flex" else "an amount of 0 or more"
            )
            raise ConfigError(f"{at} must be {allowed}, got {str(value)[:40]!r}")
    return entry


def check_rates(where: str, rates: Any, known: Mapping[str, Any], what: str) -> None:
    if not isinstance(rates, dict):
        raise ConfigError(
            f'{where} must be an object of amounts by {what[:-1]}, such as {{"{next(iter(known))}": 1}}'
        )
    for name, amount in rates.items():
        if name not in known:
            raise ConfigError(
                f"{where} has an unknown {what[:-1]} {name!r}: allowed are {', '.join(known)}"
            )
        if not is_amount(amount):
            raise ConfigError(
                f"{where}.{name} must be an amount of 0 or more, got {str(amount)[:40]!r}"
            )


def is_amount(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


# --- Arguments: met halfway, then checked, before anything is sent ----------------------------------------------------
# A call's arguments pass here first: unknown ones are refused naming the real one, unambiguous slips are mended,
# then pydantic checks each against the types below, and a refusal reads as one sentence per bad argument.


class LenientTool(Tool):
    """A tool whose arguments are met halfway before the SDK validates them (see `lenient_arguments`), and whose
    validation errors read as one sentence per bad argument instead of pydantic's report."""

    async def run(
        self,
        arguments: dict[str, Any],
        context: Any,
        convert_result: bool = False,
    ) -> Any:
        try:
            arguments = lenient_arguments(self.name, arguments, self.parameters)
        except DoubaoError as error:
            raise DoubaoError(f"Error executing tool {self.name}: {error}") from None
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as error:
            if not isinstance(error.__cause__, ValidationError):
                raise
            explained = explain_invalid(error.__cause__)
            raise ToolError(
                f"Error executing tool {self.name}: {explained}"
            ) from error.__cause__


def lenient_arguments(
    tool: str,
    arguments: dict[str, Any],
    schema: dict[str, Any],
) -> dict[str, Any]:
    """Meet a model halfway before validation: refuse unknown arguments, naming the real one meant, and coerce
    where the meaning is unambiguous (surrounding whitespace, the case of an enum value, one string for a list;
    numeric strings pydantic already takes)."""
    properties = schema.get("properties", {})
    unknown = [key for key in arguments if key not in properties]
    if unknown:
        raise DoubaoError(
            " ".join(unknown_argument(key, tool, properties) for key in unknown)
        )
    return {key: coerce(value, properties[key]) for key, value in arguments.items()}


def plain_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


ALIASES = {plain_name(name): meant for name, meant in ARGUMENT_ALIASES.items()}


def unknown_argument(key: str, tool: str, properties: Mapping[str, Any]) -> str:
    """The sentence for an argument the tool does not have: the one meant, or the tool's arguments."""
    meant = [
        name
        for name in ALIASES.get(plain_name(key), "").split("|")
        if name in properties
    ]
    meant = meant or difflib.get_close_matches(key, list(properties), n=1, cutoff=0.6)
    instead = (
        f"use {' or '.join(meant)}"
        if meant
        else f"its arguments are {', '.join(properties)}"
    )
    return f"{clean_text(key, 60)!r} is not an argument of {tool}: {instead}."


def coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """A value mended where its meaning is unambiguous."""
    if isinstance(value, list):
        return [coerce(item, schema.get("items", {})) for item in value]
    if not isinstance(value, str):
        return value
    value = value.strip()
    if "enum" in schema:
        return next(
            (
                choice
                for choice in schema["enum"]
                if str(choice).lower() == value.lower()
            ),
            value,
        )
    # "[...]" is JSON, which the SDK parses itself.
    if schema.get("type") == "array" and not value.startswith("["):
        return [value]
    return value


def explain_invalid(error: ValidationError) -> str:
    """pydantic's report, as one sentence per bad argument."""
    return " ".join(explain_one(item) for item in error.errors(include_url=False))


def explain_one(item: Any) -> str:
    loc = item["loc"]
    name = str(loc[0]) if loc else "the arguments"
    value = item.get("input")
    if isinstance(value, str) and len(value) > QUOTED_INPUT_CHARS:
        given = f"a {len(value)}-character text"
    else:
        given = clean_text(repr(value), 80) or ""
    message = re.sub(r"^Value error, ", "", item["msg"])
    limits = {
        key: int(v) if isinstance(v, float) and v.is_integer() else v
        for key, v in item.get("ctx", {}).items()
    }
    words = {
        **limits,
        "name": name,
        "where": name + "".join(f"[{part}]" for part in loc[1:]),
        "given": given,
        "message": message[:1].lower() + message[1:],
    }
    template = INVALID.get(item["type"], INVALID_OTHERWISE)
    return template.format_map(collections.defaultdict(str, words)) + "."


def check_nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain text")
    return value


def check_model_id(value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value):
        raise ValueError(
            "must be an Ark model id (e.g. doubao-seedream-4-5-251128) or endpoint id (ep-...)"
        )
    return value


def check_task_id(value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value) or ".." in value:
        raise ValueError(
            "must be a task id returned by generate_video, e.g. cgt-20250331175019-6htr8"
        )
    return value


def check_image_size(value: str) -> str:
    """Any size some model could take, in Ark's spelling (2K, 1.5K, auto, 2048x2048); the table checks the model's."""
    value = value.strip()
    if re.fullmatch(r"\d(\.5)?[kK]", value):
        return value.upper()
    if value.lower() in ("auto", "adaptive"):
        return value.lower()
    match = re.fullmatch(r"(\d{1,5}) ?[xX\u00d7*] ?(\d{1,5})", value)
    if not match:
        raise ValueError(
            "must be a named size such as 2K, 1.5K, auto or adaptive, or WIDTHxHEIGHT such as 2048x2048"
        )
    width, height = int(match[1]), int(match[2])
    low, high = SIZE_SIDE_PIXELS
    sides_fit = low <= width <= high and low <= height <= high
    if not sides_fit or max(width / height, height / width) > MAX_ASPECT:
        raise ValueError(
            f"WIDTHxHEIGHT needs sides of {low} to {high} pixels and an aspect ratio within {MAX_ASPECT}:1"
        )
    return f"{width}x{height}"


def check_duration(value: int) -> int:
    low, high = ANY_DURATION_SECONDS
    if value != -1 and not low <= value <= high:
        raise ValueError(
            f"must be seconds ({low}-{high}; each model takes its own range), or -1 to let the model choose"
        )
    return value


def check_frames(value: int) -> int:
    if (
        value - FRAMES_BASE
    ) % FRAMES_STEP or not FRAMES_BASE + FRAMES_STEP <= value <= MAX_FRAMES:
        raise ValueError("must be of the form 25 + 4n: 29, 33, ... 289")
    return value


def check_callback_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL")
    return value


def check_at_most(most: int) -> Callable[[list[Any]], list[Any]]:
    """A sanity bound validated but not published: it tells a model nothing the tool description does not."""

    def check(values: list[Any]) -> list[Any]:
        if len(values) > most:
            raise ValueError(f"takes at most {most} items")
        return values

    return check


def optional(check: Any) -> AfterValidator:
    """Run `check` on a given value; None means the argument was left out."""
    return AfterValidator(lambda value: value if value is None else check(value))


Prompt = Annotated[
    str, Field(max_length=PROMPT_MAX_CHARS), AfterValidator(check_nonblank)
]
ModelId = Annotated[str | None, optional(check_model_id)]
TaskId = Annotated[
    str,
    Field(description="Task id from generate_video."),
    AfterValidator(check_task_id),
]
MEDIA_FORMS = "https URL, data URL, asset:// id or file path"
MediaArg = Annotated[str | None, Field(description=MEDIA_FORMS + ".")]
MediaList = Annotated[
    list[str] | None, optional(check_at_most(MAX_REFERENCES_PER_LIST))
]
SaveDir = Annotated[
    str | None,
    Field(description="Folder to save results in (default DOUBAO_OUTPUT_DIR)."),
]
WaitSeconds = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for the video, with progress.",
    ),
]
# A reply must arrive before the 60 s timeout of many clients, or the new task's id is never seen.
StartWait = Annotated[
    float,
    Field(
        ge=0,
        le=START_WAIT_SECONDS,
        description="Seconds to wait for the video, with progress; then query_video_task.",
    ),
]
EXTRA = "Other Ark fields, sent as is, e.g. {examples}."
Extra = dict[str, Any] | None
# Each tool argument's type, as its schema publishes it.
ImagePrompt = Annotated[
    Prompt, Field(description="What to draw, or how to edit the reference images.")
]
ImageModel = Annotated[
    ModelId,
    Field(
        description="Model or endpoint id (default DOUBAO_IMAGE_MODEL, or best fit)."
    ),
]
ImageImages = Annotated[
    MediaList, Field(description=f"Images to edit or combine: {MEDIA_FORMS}.")
]
ImageSize = Annotated[
    str | None,
    optional(check_image_size),
    Field(
        description="Per model: 1K, 1.5K, 2K, 3K, 4K, auto, adaptive or WIDTHxHEIGHT."
    ),
]
ImageMaxImages = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_SET_IMAGES,
        description="Above 1: a set of up to this many related images.",
    ),
]
ImageSeed = Annotated[int | None, Field(ge=-1, le=MAX_SEED["image"])]
ImageGuidanceScale = Annotated[
    float | None, Field(ge=1, le=10, description="Seedream 3.0, SeedEdit.")
]
ImageWebSearch = Annotated[
    bool | None, Field(description="Let the model search the web (Seedream 5.0).")
]
ImageBackground = Annotated[
    Literal["auto", "transparent", "opaque"] | None, Field(description="Seedream 5.5.")
]
ImageExtra = Annotated[
    Extra,
    Field(
        description=EXTRA.format(
            examples="optimize_prompt_options, layer_decomposition"
        )
    ),
]
VideoPrompt = Annotated[
    Prompt | None,
    Field(
        description="Scene and motion, best under 500 chars; cite references as @Image1, @Video1, @Audio1."
    ),
]
VideoModel = Annotated[
    ModelId,
    Field(
        description="Model or endpoint id (default DOUBAO_VIDEO_MODEL, or best fit)."
    ),
]
VideoLastFrame = Annotated[
    MediaArg, Field(description="Image to end on; needs first_frame.")
]
VideoReferenceImages = Annotated[
    MediaList, Field(description="Images to draw on; not with first/last frames.")
]
VideoReferenceVideos = Annotated[
    MediaList, Field(description="Videos to follow, edit or extend (URL, asset://).")
]
VideoReferenceAudios = Annotated[
    MediaList, Field(description="WAV/MP3 audio (Seedance 2.x).")
]
VideoDraftTaskId = Annotated[
    str | None,
    optional(check_task_id),
    Field(description="Render the final video of this draft task."),
]
VideoDuration = Annotated[
    int | None,
    optional(check_duration),
    Field(description="Seconds (2-30 by model), or -1: model decides."),
]
VideoFrames = Annotated[
    int | None,
    Field(description="25+4n frames, instead of duration (Seedance 1.0)."),
    optional(check_frames),
]
VideoSeed = Annotated[int | None, Field(ge=-1, le=MAX_SEED["video"])]
Takes = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_TAKES,
        description="Independent versions, each its own request; seed+i each.",
    ),
]
VideoDraft = Annotated[
    bool | None,
    Field(description="480p preview to render later with draft_task_id (2.5)."),
]
VideoWebSearch = Annotated[
    bool | None, Field(description="Let the model search the web.")
]
VideoServiceTier = Annotated[
    ServiceTier | None, Field(description="flex: cheaper, slower.")
]
VideoCallbackUrl = Annotated[
    str | None,
    optional(check_callback_url),
    Field(description="Ark POSTs task updates here."),
]
VideoExtra = Annotated[
    Extra,
    Field(
        description=EXTRA.format(
            examples="output_format, omni_reference_task_type, priority"
        )
    ),
]
ListingModel = Annotated[ModelId, Field(description="Only this model or endpoint id.")]
ListingTaskIds = Annotated[
    list[Annotated[str, AfterValidator(check_task_id)]] | None,
    Field(max_length=MAX_TASK_IDS, description="Only these tasks."),
]
ListingPageNum = Annotated[int | None, Field(ge=1, le=MAX_PAGE)]
ListingPageSize = Annotated[int | None, Field(ge=1, le=MAX_PAGE)]
ListingWaitSeconds = Annotated[
    float,
    Field(
        ge=0,
        le=START_WAIT_SECONDS,
        description="With task_ids: wait for all, with progress.",
    ),
]


# --- Tools: each published, its arguments checked, its work handed to the studio, its result wrapped ------------------
# Each tool is an `async def` below, published with `@tool`: it checks its arguments, builds the request, and hands
# it to the studio. What the SDK calls is `answered` around it: new work is refused while the server stops, the
# result goes back as compact JSON with image previews beside it, the caller's part in an Ark error is told to it,
# and an unexpected failure becomes a clear sentence. Relative paths start where `Config.relative_base` says; every
# blocking step runs in the studio's lanes.


class ToolSpec(NamedTuple):
    function: Callable[..., Awaitable[Any]]
    # The MCP Apps viewer shows its results.
    viewer: bool
    # Refused while the server stops.
    new_work: bool
    # What an unexpected failure may have cost at Ark, and where to look.
    spent: str
    # Its annotations.
    hints: dict[str, Any]
    # Listed only where the asset library is offered (see offers_assets).
    assets: bool = False


TOOL_SPECS: list[ToolSpec] = []


def tool(
    viewer: bool = False,
    new_work: bool = False,
    spent: str = "",
    assets: bool = False,
    **hints: Any,
) -> Callable[[T], T]:
    """Publish a tool. Its `hints` are its annotations, all four always stated (some clients read a missing one as
    unknown)."""

    def register(function: T) -> T:
        spec = ToolSpec(
            function=cast(Any, function),
            viewer=viewer,
            new_work=new_work,
            spent=spent,
            hints=hints,
            assets=assets,
        )
        TOOL_SPECS.append(spec)
        return function

    return register


def answered(spec: ToolSpec) -> Callable[..., Awaitable[CallToolResult]]:
    """A tool as the SDK calls it: refuse new work while stopping (a query is answered: its wait ends at once with
    what is known); give the result as compact JSON text in the order of the structured content, with previews; tell
    an Ark error whose key it was; turn an unexpected failure into a clear error."""

    @functools.wraps(spec.function)
    async def guarded(*args: Any, **kwargs: Any) -> CallToolResult:
        ctx: Context = kwargs["ctx"]
        studio = studio_of(ctx)
        if studio.stopping.is_set and spec.new_work:
            raise DoubaoError("This server is stopping: call again in a moment.")
        try:
            result = await spec.function(*args, **kwargs)
        except ArkAPIError as error:
            error.facts.caller_key = bool(caller_key(ctx.headers))
            error.facts.assets = studio.library is not None
            raise
        except DoubaoError:
            raise
        except Exception as error:
            log.exception("%s failed unexpectedly", spec.function.__name__)
            raise DoubaoError(
                f"{spec.function.__name__} failed unexpectedly ({type(error).__name__}); the server's log has the "
                f"details.{spec.spent}"
            ) from error
        return await wrap_result(studio, result)

    return guarded


def studio_of(ctx: Context) -> Studio:
    """The studio of the server this call came to (the SDK hands it over as the lifespan context)."""
    return cast(Studio, ctx.request_context.lifespan_context)


# Progress to the caller: (progress, total or None, message).
Report = Callable[[float, float | None, str], Awaitable[None]]


@tool(
    viewer=True,
    new_work=True,
    spent=" Ark may have made (and billed) the images.",
    title="Generate images",
    read_only_hint=False,
    destructive_hint=False,
    idempotent_hint=False,
)
async def generate_image(
    ctx: Context,
    prompt: ImagePrompt,
    plan: ImagePlan,
    consent: ImageConsent,
    model: ImageModel = None,
    images: ImageImages = None,
    size: ImageSize = None,
    max_images: ImageMaxImages = None,
    seed: ImageSeed = None,
    guidance_scale: ImageGuidanceScale = None,
    watermark: bool | None = None,
    output_format: Literal["jpeg", "png"] | None = None,
    web_search: ImageWebSearch = None,
    background: ImageBackground = None,
    extra: ImageExtra = None,
    takes: Takes = 1,
    save_dir: SaveDir = None,
) -> ImageResult:
    """Generate images with Doubao Seedream from a prompt, optionally editing or combining reference images.
    Returns image URLs (valid 24 h), per-image errors, and saved file paths with save_dir. Relative paths: the
    server's folder."""
    studio = studio_of(ctx)
    config = studio.config
    check_consent(config, plan.quote, consent)
    api_key = api_key_for(config, ctx.headers)
    save_to = await studio.lanes.quick.run(choose_folder, save_dir, config)
    refs = [
        MediaRef(argument="images", media="image", given=given)
        for given in images or []
    ]
    # Images that would take the request past Ark's cap are uploaded, where uploads are set.
    uploading = uploading_for(studio, plan)
    loaded = await studio.lanes.slow.run(load_inputs, refs, config, uploading)
    body = image_request(
        prompt,
        plan.choice.models[0],
        loaded,
        max_images,
        web_search,
        plan.extra,
        size=size,
        seed=seed,
        guidance_scale=guidance_scale,
        watermark=watermark,
        output_format=output_format,
        background=background,
    )
    if takes > 1:
        return await image_takes(
            studio, plan, body, api_key, save_to, ctx.report_progress, takes
        )
    return cast(
        ImageResult,
        await make_images(studio, plan, body, api_key, save_to, ctx.report_progress),
    )


class Plan(NamedTuple):
    """What a generation will do, decided before anything is sent: the models it may go to, each one's quote, the
    call's quote (the dearest), and its arguments as checked."""

    choice: Choice
    quotes: Mapping[str, Quote]
    quote: Quote
    extra: dict[str, Any]
    given: Mapping[str, list[str]] = {}
    fields: Mapping[str, Any] = {}


def plan_images(
    ctx: Context,
    model: str | None,
    images: list[str] | None,
    size: str | None,
    max_images: int | None,
    web_search: bool | None,
    background: str | None,
    extra: dict[str, Any] | None,
    takes: int,
) -> Plan:
    """generate_image's plan (a resolver: it runs before the body, and before the question it may need)."""
    ask = ImageAsk(
        images=len(images or []),
        assets=sum(image.strip().startswith("asset://") for image in images or []),
        size=size,
        max_images=max_images,
        web_search=bool(web_search),
        background=background,
    )
    studio = studio_of(ctx)
    choice = candidates("image", ask, studio.config, model)
    extra = check_extra(extra, tool_arguments("generate_image"))
    book = studio.spend.book
    plan = priced(
        studio.spend, choice, extra, lambda m: quote_images(book, m, ask, extra)
    )
    return plan._replace(quote=times(plan.quote, takes))


def priced(
    spend: Spend,
    choice: Choice,
    extra: dict[str, Any],
    quote_of: Callable[[str], Quote],
    given: Mapping[str, list[str]] = {},
    fields: Mapping[str, Any] = {},
) -> Plan:
    """The call quoted on each model it may go to. Under a limit the person set, defaults without a price are passed
    over: the limit holds only for what it can count."""
    quotes = {model: quote_of(model) for model in choice.models}
    if spend.strict and spend.limit is not None and choice.source == "default":
        kept = tuple(
            model for model in choice.models if quotes[model].amount is not None
        )
        choice = choice._replace(models=kept or choice.models)
    quote = call_quote(quotes[model] for model in choice.models)
    return Plan(choice, quotes, quote, extra, given, fields)


class SpendConsent(BaseModel):
    """The question's one field."""

    spend: bool = Field(
        default=True,
        title="Go ahead",
        description="Yes: send it and spend about this much",
    )


class Unasked(NamedTuple):
    """A resolver's answer when it asks nothing: no question needed, or why the call is refused without one."""

    refusal: str | None = None


def ask_before_images(ctx: Context, plan: ImagePlan) -> Elicit[SpendConsent] | Unasked:
    """generate_image's question to the person, when its quote needs one."""
    return consent_question(ctx, plan.quote)


ImagePlan = Annotated[Plan, Resolve(plan_images)]
ImageConsent = Annotated[ElicitationResult[SpendConsent], Resolve(ask_before_images)]


@tool(
    viewer=True,
    new_work=True,
    spent=" A video task may have been created: see list_video_tasks.",
    title="Generate a video",
    read_only_hint=False,
    destructive_hint=False,
    idempotent_hint=False,
)
async def generate_video(
    ctx: Context,
    plan: VideoPlan,
    consent: VideoConsent,
    prompt: VideoPrompt = None,
    model: VideoModel = None,
    first_frame: MediaArg = None,
    last_frame: VideoLastFrame = None,
    reference_images: VideoReferenceImages = None,
    reference_videos: VideoReferenceVideos = None,
    reference_audios: VideoReferenceAudios = None,
    draft_task_id: VideoDraftTaskId = None,
    resolution: Resolution | None = None,
    ratio: Ratio | None = None,
    duration: VideoDuration = None,
    frames: VideoFrames = None,
    seed: VideoSeed = None,
    camera_fixed: bool | None = None,
    watermark: bool | None = None,
    generate_audio: bool | None = None,
    return_last_frame: bool | None = None,
    draft: VideoDraft = None,
    web_search: VideoWebSearch = None,
    service_tier: VideoServiceTier = None,
    callback_url: VideoCallbackUrl = None,
    extra: VideoExtra = None,
    takes: Takes = 1,
    wait_seconds: StartWait = 0,
    save_dir: SaveDir = None,
) -> VideoTask:
    """Start a Doubao Seedance video task from text, frames, reference images, videos and audios, or a
    draft. Returns a task_id; with wait_seconds, waits for the video. If the call times out, find
    the task with list_video_tasks. Relative paths: the server's folder."""
    wait_until = time.monotonic() + wait_seconds
    studio = studio_of(ctx)
    config = studio.config
    check_consent(config, plan.quote, consent)
    api_key = api_key_for(config, ctx.headers)
    save_to = await studio.lanes.quick.run(choose_folder, save_dir, config)
    uploading = uploading_for(studio, plan)
    media = await load_content(studio, plan.given, uploading, ctx.report_progress)
    body = video_request(
        plan.choice.models[0],
        prompt,
        media,
        draft_task_id,
        web_search,
        plan.extra,
        plan.fields,
    )
    asked = VideoKind(resolution=resolution, duration=duration)
    follow = Following(
        until=wait_until,
        save_to=save_to,
        api_key=api_key,
        report=ctx.report_progress,
        asked=asked,
    )
    if takes > 1:
        task = await video_takes(studio, plan, body, follow, takes)
    else:
        task = await make_video(studio, plan, body, follow)
    if uploading and uploading.done:
        task = with_fields(task, uploads=[up._asdict() for up in uploading.done])
    return cast(VideoTask, task)


def uploading_for(studio: Studio, plan: Plan) -> Uploading | None:
    """Where a call's local media is uploaded, and for how long its links live (a video task's tier and kind decide;
    an image's links live the default time); None without DOUBAO_UPLOADS."""
    if studio.uploader is None:
        return None
    family = family_row("video", plan.choice.models[0])
    uploading = Uploading(
        studio.uploader,
        link_seconds(plan.fields, plan.extra),
        family.reference_seconds if family else None,
        studio.record,
    )
    if plan.extra.get("omni_reference_task_type") == "edit":
        uploading.shortest = EDIT_VIDEO_MIN_SECONDS
    return uploading


def plan_video(
    ctx: Context,
    prompt: str | None,
    model: str | None,
    first_frame: str | None,
    last_frame: str | None,
    reference_images: list[str] | None,
    reference_videos: list[str] | None,
    reference_audios: list[str] | None,
    draft_task_id: str | None,
    resolution: str | None,
    ratio: str | None,
    duration: int | None,
    frames: int | None,
    seed: int | None,
    camera_fixed: bool | None,
    watermark: bool | None,
    generate_audio: bool | None,
    return_last_frame: bool | None,
    draft: bool | None,
    web_search: bool | None,
    service_tier: str | None,
    callback_url: str | None,
    extra: dict[str, Any] | None,
    takes: int,
) -> Plan:
    """generate_video's plan (a resolver: it runs before the body, and before the question it may need)."""
    studio = studio_of(ctx)
    given = media_given(
        first_frame, last_frame, reference_images, reference_videos, reference_audios
    )
    # Ark's top-level fields, as given: Ark validates them strictly (those left out are not sent).
    fields = {
        "resolution": resolution,
        "ratio": ratio,
        "duration": duration,
        "frames": frames,
        "seed": seed,
        "camera_fixed": camera_fixed,
        "watermark": watermark,
        "generate_audio": generate_audio,
        "return_last_frame": return_last_frame,
        "draft": draft,
        "service_tier": service_tier,
        "callback_url": callback_url,
    }
    extra = check_extra(extra, tool_arguments("generate_video"))
    ask = video_ask(given, fields, extra, prompt, draft_task_id, web_search)
    choice = candidates("video", ask, studio.config, model)
    book = studio.spend.book
    plan = priced(
        studio.spend,
        choice,
        extra,
        lambda m: quote_video(book, m, ask, service_tier),
        given,
        fields,
    )
    return plan._replace(quote=times(plan.quote, takes))


def ask_before_video(ctx: Context, plan: VideoPlan) -> Elicit[SpendConsent] | Unasked:
    """generate_video's question to the person, when its quote needs one."""
    return consent_question(ctx, plan.quote)


VideoPlan = Annotated[Plan, Resolve(plan_video)]
VideoConsent = Annotated[ElicitationResult[SpendConsent], Resolve(ask_before_video)]


def media_given(
    first_frame: str | None,
    last_frame: str | None,
    *lists: list[str] | None,
) -> dict[str, list[str]]:
    """generate_video's media arguments, each as a list (a frame is one item or none)."""
    given = {
        "first_frame": [first_frame] if first_frame else [],
        "last_frame": [last_frame] if last_frame else [],
    }
    for spec, values in zip(VIDEO_INPUTS[2:], lists, strict=True):
        given[spec.argument] = values or []
    return given


def tool_arguments(name: str) -> frozenset[str]:
    """A tool's argument names, which `extra` may not override."""
    found = next(t for t in published_tools() if t.name == name)
    return frozenset(found.parameters["properties"])


@tool(
    viewer=True,
    title="Check a video task",
    read_only_hint=True,
    destructive_hint=False,
    idempotent_hint=True,
)
async def query_video_task(
    task_id: TaskId,
    ctx: Context,
    wait_seconds: WaitSeconds = 0,
    save_dir: SaveDir = None,
) -> VideoTask:
    """Get a video task's status and, once done, its video URL (valid 24 h). With wait_seconds, waits for it;
    with save_dir, saves the video. Relative paths: the server's folder."""
    wait_until = time.monotonic() + wait_seconds
    studio = studio_of(ctx)
    api_key = api_key_for(studio.config, ctx.headers)
    save_to = await studio.lanes.quick.run(choose_folder, save_dir, studio.config)
    follow = Following(
        until=wait_until, save_to=save_to, api_key=api_key, report=ctx.report_progress
    )
    task = await look_at(studio, task_id, api_key)
    return cast(VideoTask, await follow_task(studio, task, follow))


@tool(
    title="List video tasks",
    read_only_hint=True,
    destructive_hint=False,
    idempotent_hint=True,
)
async def list_video_tasks(
    ctx: Context,
    status: TaskStatus | None = None,
    model: ListingModel = None,
    service_tier: ServiceTier | None = None,
    task_ids: ListingTaskIds = None,
    page_num: ListingPageNum = None,
    page_size: ListingPageSize = None,
    wait_seconds: ListingWaitSeconds = 0,
    save_dir: SaveDir = None,
) -> TaskList:
    """List video tasks of the last 7 days, newest first. With task_ids, can wait for them and save each finished
    video."""
    wait_until = time.monotonic() + wait_seconds
    studio = studio_of(ctx)
    if (wait_seconds or save_dir) and not task_ids:
        raise DoubaoError(
            "wait_seconds and save_dir need task_ids: the tasks to wait for and save."
        )
    if task_ids and (page_num or page_size):
        raise DoubaoError(
            "page_num and page_size page through all tasks; with task_ids every task asked for comes back, however "
            "many: leave them out."
        )
    api_key = api_key_for(studio.config, ctx.headers)
    filters = Filters(status=status, model=model, service_tier=service_tier)
    if not task_ids:
        return cast(
            TaskList, await list_page(studio, filters, page_num, page_size, api_key)
        )
    save_to = await studio.lanes.quick.run(choose_folder, save_dir, studio.config)
    follow = Following(
        until=wait_until, save_to=save_to, api_key=api_key, report=ctx.report_progress
    )
    tasks = await tasks_asked_for(
        studio, list(dict.fromkeys(task_ids)), api_key, filters
    )
    if not (wait_seconds or save_to):
        return listing(tasks, waited=False)
    return listing(await follow_all(studio, tasks, follow), waited=True)


@tool(
    title="Cancel a video task",
    read_only_hint=False,
    destructive_hint=True,
    idempotent_hint=False,
)
async def cancel_video_task(task_id: TaskId, ctx: Context) -> CancelResult:
    """Cancel a queued video task, or delete the record of a finished one. A running task cannot be
    cancelled."""
    studio = studio_of(ctx)
    api_key = api_key_for(studio.config, ctx.headers)
    status = await cancel_task(studio, task_id, api_key)
    if status == "queued":
        return CancelResult(
            task_id=task_id,
            previous_status=status,
            outcome="cancelled",
            message="The task was cancelled before it started.",
        )
    return CancelResult(
        task_id=task_id,
        previous_status=status,
        outcome="deleted",
        message=f"The {status} task's record was deleted; its URLs stop working.",
    )


@tool(
    title="List the models",
    read_only_hint=True,
    destructive_hint=False,
    idempotent_hint=True,
)
async def list_models(
    ctx: Context, kind: Literal["image", "video"] | None = None
) -> ModelCatalog:
    """The image and video models: ids here, what each takes, lifecycle, price, default order, and whether
    this key was refused one."""
    studio = studio_of(ctx)
    # No key is needed to read the catalog; with one, it says which models Ark refused it.
    key = caller_key(ctx.headers) or studio.config.api_key or ""
    refused = studio.memory.refused(key)
    kinds: tuple[Kind, ...] = (kind,) if kind else ("image", "video")
    return ModelCatalog(
        region="BytePlus ModelArk"
        if studio.config.region == BYTEPLUS
        else "Volcengine Ark (China)",
        currency=studio.spend.book.currency,
        models=[
            catalog_entry(studio, one, family, row, refused)
            for one in kinds
            for family, row in distinct_families(one)
        ],
    )


def distinct_families(kind: Kind) -> list[tuple[str, Any]]:
    """The table's families, an alias (5.0 lite for 5.0) shown once."""
    table: Mapping[str, Any] = IMAGE_MODELS if kind == "image" else VIDEO_MODELS
    seen: set[int] = set()
    found = []
    for family, row in table.items():
        if id(row) not in seen:
            seen.add(id(row))
            found.append((family, row))
    return found


def catalog_entry(
    studio: Studio, kind: Kind, family: str, row: Any, refused: set[str]
) -> dict[str, Any]:
    """One family as the catalog shows it: compact, for a model to read (docs/models.md holds the prose)."""
    region = studio.config.region
    defaults = models_for(studio.config, kind)
    ids = [
        m for m in (*DEFAULT_MODELS[kind][region], *defaults) if family_key(m) == family
    ]
    entry: dict[str, Any] = {"kind": kind, "family": family}
    if ids:
        entry["ids"] = list(dict.fromkeys(ids))
    entry["takes"] = takes_of(row)
    lifecycle = lifecycle_of(kind, ids[0] if ids else family, region)
    if lifecycle:
        entry["lifecycle"] = f"{lifecycle.status}: use {lifecycle.successor[region]}"
    price = studio.spend.book.price(ids[0] if ids else family)
    if price:
        entry["price"] = price_text(price, studio.spend.book.currency)
    position = next(
        (i for i, m in enumerate(defaults, 1) if family_key(m) == family), None
    )
    if position:
        entry["default"] = position
    if refused & set(ids):
        entry["refused"] = "Ark said this key cannot use it"
    return entry


def takes_of(row: Any) -> str:
    """What a family takes, in a line."""
    if isinstance(row, VideoFamily):
        low, high = row.durations
        parts = [
            f"{low}-{high} s{' or -1' if row.auto_duration else ''}",
            "/".join(row.resolutions),
        ]
        if row.refs != NO_REFS:
            parts.append(f"refs {row.refs.images}/{row.refs.videos}/{row.refs.audios}")
        if row.drafts:
            parts.append(f"drafts {'/'.join(row.drafts)}")
        if row.audio:
            parts.append("audio")
        if row.web_search != "no":
            parts.append("web search")
        return ", ".join(parts)
    parts = ["/".join(row.sizes)] if row.sizes else []
    if row.pixels and row.pixels != ANY_PIXELS:
        parts.append(f"WxH {row.pixels[0] / 1e6:.2g}-{row.pixels[1] / 1e6:.3g} MP")
    elif row.pixels:
        parts.append("WxH")
    parts.append(f"refs {row.refs[0]}-{row.refs[1]}")
    if row.sets:
        parts.append("sets")
    if row.web_search:
        parts.append("web search")
    if row.background:
        parts.append("background")
    return ", ".join(parts)


def price_text(price: Price, currency: str) -> str:
    """A family's price, in a line: the rates by resolution (per million tokens), or per image."""
    if price.per_million_tokens:
        rates = ", ".join(f"{r} {v:g}" for r, v in price.per_million_tokens.items())
        return f"{rates} {currency}/M tokens"
    if isinstance(price.per_image, Mapping):
        sizes = ", ".join(f"{s} {v:g}" for s, v in price.per_image.items())
        return f"{sizes} {currency}/image"
    return (
        f"{price.per_image:g} {currency}/image"
        if price.per_image is not None
        else "none known"
    )


# --- Rules: which model a call goes to, and what it may ask of it -----------------------------------------------------
# Every rule reads the model table; nothing else knows a model's limits. A call is first held to the checks every
# model shares, then to its model's row: an explicit model (or a DOUBAO_*_MODEL setting) is the only one, and the
# defaults are those known to take the call, best first.


def check_extra(
    extra: dict[str, Any] | None, arguments: Iterable[str]
) -> dict[str, Any]:
    """Other official Ark fields, sent as given; never one that would override what the tool builds."""
    extra = extra or {}
    reserved: dict[str, str | None] = {
        **BUILT_FIELDS,
        **{name: f"use the {name} argument" for name in arguments},
    }
    clashes = []
    for key in extra:
        if key not in reserved:
            continue
        if reserved[key]:
            clashes.append(f"{key!r} is built by this tool: {reserved[key]}")
        else:
            clashes.append(
                f"{key!r} is not supported: this server reads Ark's whole answer, with URLs"
            )
    if clashes:
        raise DoubaoError(f"extra: {'; '.join(clashes)}.")
    return extra


def video_ask(
    given: Mapping[str, list[str]],
    fields: Mapping[str, Any],
    extra: Mapping[str, Any],
    prompt: str | None,
    draft_task_id: str | None,
    web_search: bool | None,
) -> VideoAsk:
    """What a generate_video call asks, from its media, its top-level fields and its extra ones."""
    return VideoAsk(
        media={argument: len(values) for argument, values in given.items()},
        prompt=bool(prompt),
        draft_task_id=bool(draft_task_id),
        duration=fields["duration"],
        frames=fields["frames"],
        resolution=fields["resolution"],
        ratio=fields["ratio"],
        draft=bool(fields["draft"]),
        generate_audio=fields["generate_audio"],
        web_search=bool(web_search),
        task_type=string_of(extra.get("omni_reference_task_type")),
        output_format=string_of(extra.get("output_format")),
    )


def string_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


def candidates(kind: Kind, ask: Any, config: Config, model: str | None) -> Choice:
    """The models this call may go to, after refusing what none of them could take. An explicit model or a
    DOUBAO_*_MODEL setting is the only one; else the region's defaults known to take the call, best first."""
    if kind == "image":
        check_any_image(ask)
    else:
        check_any_video(ask)
    allowed = (model,) if model else models_for(config, kind)
    if len(allowed) == 1:
        check_model(kind, allowed[0], ask, config.region)
        return Choice(models=allowed, source="argument" if model else "setting")
    fitting = tuple(m for m in allowed if not problems(kind, m, ask, sure=True))
    if not fitting:
        # What the first default would say, with where to go instead.
        check_model(kind, allowed[0], ask, config.region)
        raise DoubaoError(
            f"No default {kind} model is known to take this call: pass model, or set DOUBAO_{kind.upper()}_MODEL, "
            "to one that does."
        )
    return Choice(models=fitting, source="default")


def check_any_video(ask: VideoAsk) -> None:
    """The rules every video model shares, known to the table or not."""
    if ask.media["last_frame"] and not ask.media["first_frame"]:
        raise DoubaoError(
            "last_frame needs first_frame: Seedance animates from a first frame to a last one."
        )
    if ask.frames_given and ask.references:
        raise DoubaoError(
            "Use either first_frame/last_frame or reference images, videos and audios, not both."
        )
    if ask.duration is not None and ask.frames is not None:
        raise DoubaoError(
            "Give duration or frames, not both (frames overrides duration at Ark)."
        )
    if ask.draft_task_id and (ask.frames_given or ask.references or ask.draft):
        raise DoubaoError(
            "draft_task_id renders an existing draft: give no images, videos, audios or draft with it."
        )
    if not ask.prompt and not (ask.draft_task_id or ask.frames_given or ask.references):
        raise DoubaoError(
            "prompt is required: describe the video, or give images, videos or a draft_task_id to work from."
        )


@dataclass(frozen=True)
class VideoAsk:
    """What a generate_video call asks of a model, as the table's rules read it."""

    # How many items each media argument (first_frame, reference_images, ...) has.
    media: Mapping[str, int]
    prompt: bool = True
    draft_task_id: bool = False
    duration: int | None = None
    frames: int | None = None
    resolution: str | None = None
    ratio: str | None = None
    draft: bool = False
    # None: not given (Ark's default: with audio where the model makes it).
    generate_audio: bool | None = None
    web_search: bool = False
    # extra.omni_reference_task_type.
    task_type: str = ""
    # extra.output_format.
    output_format: str = ""

    @property
    def frames_given(self) -> int:
        return self.media["first_frame"] + self.media["last_frame"]

    @property
    def references(self) -> int:
        return (
            self.media["reference_images"]
            + self.media["reference_videos"]
            + self.media["reference_audios"]
        )


@dataclass(frozen=True)
class ImageAsk:
    """What a generate_image call asks of a model, as the table's rules read it."""

    images: int = 0
    size: str | None = None
    max_images: int | None = None
    web_search: bool = False
    background: str | None = None
    # Images given as asset:// ids.
    assets: int = 0


class Rule(NamedTuple):
    """A rule of a family, for one call."""

    # What another model would have to take for the call to work there, or None where no other model is the answer.
    takes: str | None
    # Whether this call breaks it.
    broken: Any
    message: str


def check_any_image(ask: ImageAsk) -> None:
    """The rules every image model shares, known to the table or not."""
    in_set = ask.max_images and ask.max_images > 1
    if in_set and ask.images + (ask.max_images or 0) > MAX_SET_IMAGES:
        raise DoubaoError(
            f"images plus max_images may total {MAX_SET_IMAGES} at most, got {ask.images} + {ask.max_images}."
        )


def models_for(config: Config, kind: Kind) -> tuple[str, ...]:
    """The models a call that names none may go to, in order: the DOUBAO_*_MODEL setting alone (never replaced),
    else the region's defaults."""
    setting = config.image_model if kind == "image" else config.video_model
    if setting:
        return (setting,)
    return DEFAULT_MODELS[kind][config.region]


def check_model(kind: Kind, model: str, ask: Any, region: int = CHINA) -> None:
    """Refuse a call its model's row rules out, naming for each broken rule a current model that takes it."""
    broken = problems(kind, model, ask)
    if broken:
        current = DEFAULT_MODELS[kind][region]
        raise DoubaoError(
            " ".join(
                with_elsewhere(kind, model, ask, rule, current, region)
                for rule in broken
            )
        )


def problems(kind: Kind, model: str, ask: Any, sure: bool = False) -> list[Rule]:
    """Each table rule this call breaks on `model`; none for a model the table does not know. `sure`: an unclear
    capability counts as missing (a default is chosen only where the table is sure; an explicit model is refused
    only where it is sure)."""
    family = family_row(kind, model)
    if family is None:
        return []
    shown = family_name(model)
    rules = (
        image_rules(ask, family, shown, sure)
        if kind == "image"
        else video_rules(ask, family, shown)
    )
    return [rule for rule in rules if rule.broken]


def family_row(kind: Kind, model: str) -> Any:
    """The model's VideoFamily or ImageFamily, or None for an id the table does not know: an endpoint id, or a model
    newer than this release."""
    table: Mapping[str, Any] = IMAGE_MODELS if kind == "image" else VIDEO_MODELS
    return table.get(family_key(model))


def family_key(model: Any) -> str:
    """A model's family: its id without its `doubao-` / `dreamina-` / `dola-` prefix and `-YYMMDD` date stamp (none
    for what is not an id)."""
    undated = re.sub(r"-\d{6}$", "", model).lower() if isinstance(model, str) else ""
    return re.sub(r"^(doubao|dreamina|dola)-", "", undated)


def family_name(model: str) -> str:
    """The model's name for messages: its id without the date stamp."""
    return re.sub(r"-\d{6}$", "", model)


def with_elsewhere(
    kind: Kind,
    model: str,
    ask: Any,
    rule: Rule,
    current: Iterable[str],
    region: int,
) -> str:
    """A refusal, with a known current model of another family that takes what this one does not: where a model
    looks when it has to change something."""
    other = rule.takes and next(
        (m for m in current if takes_instead(kind, model, m, ask, rule, region)), None
    )
    if other:
        return f"{rule.message.rstrip('.')}; {other} takes {rule.takes}."
    return rule.message


def takes_instead(
    kind: Kind,
    model: str,
    candidate: str,
    ask: Any,
    rule: Rule,
    region: int,
) -> bool:
    """Whether `candidate`, of another family and not being retired, is sure to take what `rule` asks."""
    own, theirs = family_row(kind, model), family_row(kind, candidate)
    if theirs in (None, own) or lifecycle_of(kind, candidate, region):
        return False
    return rule.takes not in {
        broken.takes for broken in problems(kind, candidate, ask, sure=True)
    }


def video_rules(ask: VideoAsk, family: VideoFamily, shown: str) -> list[Rule]:
    """Every rule of a VIDEO_MODELS row, for this call. No video capability is unclear."""
    return [
        *timing_rules(ask, family, shown),
        *media_rules(ask, family, shown),
        *omni_rules(ask, family, shown),
    ]


def timing_rules(ask: VideoAsk, family: VideoFamily, shown: str) -> list[Rule]:
    """Duration, resolution, frames, drafts, audio and web search."""
    low, high = family.durations
    seconds = ask.duration if ask.duration not in (None, -1) else None
    longer = (seconds or 0) > high
    # One label: "takes" means takes it all.
    draft = "draft" + (f" at {ask.resolution}" if ask.resolution else "")
    web_search = "web_search" + (
        " with references" if ask.frames_given or ask.references else ""
    )
    draft_resolution = (
        ask.draft
        and family.drafts
        and ask.resolution
        and ask.resolution not in family.drafts
    )
    return [
        Rule(
            takes="duration -1",
            broken=ask.duration == -1 and not family.auto_duration,
            message=f"duration -1 (the model chooses) is not something {shown} takes: give {low}-{high} s.",
        ),
        Rule(
            takes=f"duration {seconds}",
            broken=seconds is not None and not low <= seconds <= high,
            message=f"duration {seconds} is {'over' if longer else 'under'} {shown}'s {low}-{high} s.",
        ),
        Rule(
            takes=f"resolution {ask.resolution}",
            broken=ask.resolution
            and ask.resolution not in family.resolutions
            and not (ask.draft and ask.resolution in family.drafts),
            message=f"resolution {ask.resolution} is not one {shown} makes: {', '.join(family.resolutions)}.",
        ),
        Rule(
            takes="frames",
            broken=ask.frames is not None and not family.frames,
            message=f"frames: {shown} takes duration, not frames.",
        ),
        Rule(
            takes=draft,
            broken=ask.draft and not family.drafts,
            message=f"draft: {shown} makes no drafts.",
        ),
        Rule(
            takes="draft_task_id",
            broken=ask.draft_task_id and not family.drafts,
            message=f"draft_task_id: {shown} makes no drafts.",
        ),
        Rule(
            takes=draft,
            broken=draft_resolution,
            message=f"draft: {shown} makes drafts at {', '.join(family.drafts)} only, not {ask.resolution}.",
        ),
        Rule(
            takes="generate_audio",
            broken=bool(ask.generate_audio) and not family.audio,
            message=f"generate_audio: {shown} makes silent videos.",
        ),
        Rule(
            takes=web_search,
            broken=ask.web_search and family.web_search == "no",
            message=f"web_search: {shown} cannot search the web.",
        ),
        Rule(
            takes=web_search,
            broken=ask.web_search
            and family.web_search == "text-to-video"
            and (ask.frames_given or ask.references),
            message=f"web_search: {shown} searches the web only for text-to-video, with no images, videos or audios.",
        ),
    ]


def media_rules(ask: VideoAsk, family: VideoFamily, shown: str) -> list[Rule]:
    """Frames, references and the prompt."""
    media = ask.media
    images, videos, audios = (
        media["reference_images"],
        media["reference_videos"],
        media["reference_audios"],
    )
    no_image = not (
        ask.frames_given or ask.references or ask.draft_task_id or family.text_only
    )
    return [
        Rule(
            takes="first_frame",
            broken=ask.frames_given and not family.first_frame,
            message=f"first_frame: {shown} makes videos from text only.",
        ),
        Rule(
            takes="last_frame",
            broken=media["last_frame"] and family.first_frame and not family.last_frame,
            message=f"last_frame: {shown} takes a first frame but no last frame.",
        ),
        Rule(
            takes=None,
            broken=no_image,
            message=f"{shown} needs an image: give first_frame or reference_images.",
        ),
        too_many("reference_images", images, family.refs.images, "images", shown),
        too_many("reference_videos", videos, family.refs.videos, "videos", shown),
        too_many("reference_audios", audios, family.refs.audios, "audios", shown),
        Rule(
            takes=f"{ask.references} references",
            broken=family.total_refs and ask.references > family.total_refs,
            message=f"{ask.references} references in all is over {shown}'s {family.total_refs}.",
        ),
        Rule(
            takes="reference_audios alone",
            broken=audios and not (images or videos) and not family.audio_alone,
            message=f"reference_audios: {shown} needs a reference image or video beside them.",
        ),
        Rule(
            takes=None,
            broken=not ask.prompt
            and not ask.draft_task_id
            and not family.prompt_optional,
            message=f"prompt is required for {shown}.",
        ),
    ]


def too_many(argument: str, count: int, most: int, what: str, shown: str) -> Rule:
    if most == 0:
        message = f"{argument}: {shown} takes no {what}."
    else:
        message = f"{argument}: {count} {what} is over {shown}'s {most}."
    return Rule(takes=f"{count} {argument}", broken=count > most, message=message)


def omni_rules(ask: VideoAsk, family: VideoFamily, shown: str) -> list[Rule]:
    """Seedance 2.5's frames at ratio adaptive, its edits and extensions, and mov output."""
    editing = family.omni and ask.task_type.lower().startswith(("edit", "extend"))
    not_adaptive = ask.ratio not in (None, "adaptive")
    keeps_length = (
        editing
        and ask.task_type.lower().startswith("edit")
        and ask.duration not in (None, -1)
    )
    return [
        Rule(
            takes=None,
            broken=family.omni and ask.frames_given and not_adaptive,
            message=f"ratio: {shown} animates first and last frames at ratio adaptive only: pass adaptive or leave "
            "ratio out.",
        ),
        Rule(
            takes=None,
            broken=editing and not ask.media["reference_videos"],
            message=f"extra.omni_reference_task_type {ask.task_type}: {shown} needs the video in reference_videos.",
        ),
        Rule(
            takes=None,
            broken=editing and not_adaptive,
            message=f"ratio: {shown} edits and extends videos at ratio adaptive only: pass adaptive or leave ratio "
            "out.",
        ),
        Rule(
            takes=None,
            broken=keeps_length,
            message=f"duration: an edit keeps its video's length on {shown}: give -1 or leave duration out.",
        ),
        Rule(
            takes="output_format mov",
            broken=ask.output_format.lower() == "mov" and not family.omni,
            message=f"output_format mov: {shown} makes mp4 only.",
        ),
    ]


class Choice(NamedTuple):
    """The models a call may go to, in order, and where they come from."""

    models: tuple[str, ...]
    # Only defaults are ever replaced by the next one.
    source: Literal["argument", "setting", "default"]


def image_rules(
    ask: ImageAsk, family: ImageFamily, shown: str, sure: bool = False
) -> list[Rule]:
    """Every rule of an IMAGE_MODELS row, for this call. `sure`: an unclear capability counts as missing."""
    size = ask.size
    named = size is not None and "x" not in size
    pixels = math.prod(map(int, size.split("x"))) if size and not named else 0
    low, high = family.pixels or (0, 0)
    least, most = family.refs

    def lacks(capability: bool | None) -> bool:
        return capability is not True if sure else capability is False

    sizes = ", ".join(family.sizes) + (" or WIDTHxHEIGHT" if family.pixels else "")
    unknown_size = size and (
        size not in family.sizes if named else family.pixels is None
    )
    count = "exactly" if least == most else "at least"
    return [
        Rule(
            takes=f"size {size}",
            broken=unknown_size,
            message=f"size {size} is not one {shown} makes: {sizes}.",
        ),
        Rule(
            takes=f"size {size}",
            broken=pixels and family.pixels and not low <= pixels <= high,
            message=f"size {size} has {pixels / 1e6:.2f} MP; {shown} makes {low / 1e6:.2f}-{high / 1e6:.2f} MP "
            "(e.g. 2048x2048).",
        ),
        Rule(
            takes=None,
            broken=ask.images < least,
            message=f"images: {shown} needs {count} {least} reference image{'s' if least > 1 else ''}.",
        ),
        too_many("images", ask.images, most, "reference images", shown),
        Rule(
            takes=f"max_images {ask.max_images}",
            broken=ask.max_images and ask.max_images > 1 and lacks(family.sets),
            message=f"max_images: {shown} makes single images, not sets.",
        ),
        Rule(
            takes="web_search",
            broken=ask.web_search and lacks(family.web_search),
            message=f"web_search: {shown} cannot search the web.",
        ),
        Rule(
            takes=f"background {ask.background}",
            broken=ask.background and lacks(family.background),
            message=f"background: {shown} takes no background setting.",
        ),
        Rule(
            takes=None,
            broken=ask.assets and family.assets is False,
            message=f"images: {shown} refuses asset:// ids (Ark answers 400); pass the image as a URL or a file.",
        ),
    ]


# --- Keys: whose key a call spends ------------------------------------------------------------------------------------


def api_key_for(config: Config, headers: Mapping[str, str] | None) -> str:
    """The caller's own Ark key from its HTTP request headers, else the server's."""
    key = usable_key(caller_key(headers), "Your API key header") or config.api_key
    if key:
        return key
    if config.serving_http:
        raise DoubaoError(
            "No Ark API key: send yours with the request as 'Authorization: Bearer <Ark API key>' or "
            "'X-API-Key: <Ark API key>', or have the operator set ARK_API_KEY."
        )
    raise DoubaoError(
        'No Ark API key: set ARK_API_KEY in this server\'s environment (the "env" block of your MCP client '
        "config). Create a key in the Ark console under API Key management."
    )


def caller_key(headers: Mapping[str, str] | None) -> str:
    """The Ark key a caller sent with its HTTP request, or "". X-API-Key wins over Authorization: a gateway in
    front of the server may use Authorization for its own token."""
    headers = headers or {}
    key = headers.get("x-api-key", "").strip()
    bearer = headers.get("authorization", "")
    if not key and bearer[:7].lower() == "bearer ":
        key = bearer[7:].strip()
    return key


def usable_key(key: str | None, where: str) -> str | None:
    """A key as Ark takes it: a pasted "Bearer " prefix removed (else Ark would get "Bearer Bearer ..."), and one
    with a character HTTP cannot send refused here, by name, rather than failing inside a request with the key
    in the error."""
    if not key:
        return key
    key = re.sub(r"^bearer\s+", "", key.strip(), flags=re.IGNORECASE)
    if key and not KEY_CHARACTERS.fullmatch(key):
        raise DoubaoError(
            f"{where} contains a control character or a character outside Latin-1, which no HTTP header can carry: "
            "copy the key again from the Ark console."
        )
    return key


# --- Worker lanes: blocking work off the event loop, bounded ----------------------------------------------------------


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
        self.name, self.threads, self.slot_wait, self.busy = (
            name,
            threads,
            slot_wait,
            busy,
        )
        self.jobs: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]]
        ] = queue.SimpleQueue()
        # Threads alive; each ends after THREAD_IDLE_SECONDS without work.
        self.started = 0
        self.lock = threading.Lock()
        # Made in the event loop that first uses the lane.
        self.free: asyncio.Semaphore | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking work (HTTP, files) on one of this lane's threads, never on the event loop. A cancelled call
        returns at once; its job ends on its own, within its deadline, and only then frees its thread."""
        job = partial(function, *args)
        loop = asyncio.get_running_loop()
        free = self.free = self.free or asyncio.Semaphore(self.threads)
        await self.take_slot(free)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        waiter: asyncio.Future[T] = loop.create_future()

        def settle() -> None:
            # On the event loop: one wake-up frees the thread's place and hands over the outcome.
            free.release()
            # A waiter that is done is a caller that gave up.
            if waiter.done():
                return
            failure = future.exception()
            if failure is not None:
                waiter.set_exception(failure)
            else:
                waiter.set_result(future.result())

        def finished(_: Any) -> None:
            # The loop is gone: the server stopped, nobody waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        future.add_done_callback(finished)
        with self.lock:
            if self.started < self.threads:
                self.started += 1
                threading.Thread(
                    target=self.work, name=f"doubao-{self.name}", daemon=True
                ).start()
            self.jobs.put((future, job))
        try:
            return await waiter
        except asyncio.CancelledError:
            # A job not started yet never runs; one running ends on its own, then frees its place.
            future.cancel()
            raise

    async def take_slot(self, free: asyncio.Semaphore) -> None:
        """A place in the count, or the busy error after `slot_wait`."""
        # wait_for costs a task: only when there is something to wait for.
        if not free.locked():
            await free.acquire()
            return
        try:
            await asyncio.wait_for(free.acquire(), self.slot_wait)
        except asyncio.TimeoutError:
            raise DoubaoError(self.busy.format(threads=self.threads)) from None

    def work(self) -> None:
        while True:
            try:
                future, job = self.jobs.get(timeout=THREAD_IDLE_SECONDS)
            except queue.Empty:
                with self.lock:
                    # Else a job came just now: take it.
                    if self.jobs.empty():
                        self.started -= 1
                        return
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as error:
                    # Handed to the caller, who decides.
                    future.set_exception(error)


class Lanes(NamedTuple):
    quick: Lane
    slow: Lane


def make_lanes(limits: Limits) -> Lanes:
    """The quick lane (task queries, lists, cancels, folder checks) and the slow one (generations, uploads,
    downloads, reading input files): a flood of slow work never slows the quick calls."""
    quick_busy = (
        "The server is busy: all {threads} threads for task queries are taken (Ark may be slow). Try again in a "
        "minute."
    )
    slow_busy = (
        "The server is busy: {threads} generations, uploads and downloads are already running. Try again in a "
        "minute."
    )
    return Lanes(
        quick=Lane("quick", limits.quick_threads, limits.slot_wait, quick_busy),
        slow=Lane("slow", limits.slow_threads, limits.slot_wait, slow_busy),
    )


# --- Local files: paths as people give them, folders and inputs opened once and confined ------------------------------


def choose_folder(save_dir: str | None, config: Config) -> Folder | None:
    """The folder to save results in (the argument, else DOUBAO_OUTPUT_DIR), made when missing, checked and held
    open before anything is generated. Errors name where the folder came from."""
    argument = "save_dir" if save_dir else "DOUBAO_OUTPUT_DIR"
    save_dir = save_dir or config.output_dir
    if not save_dir:
        return None
    return open_folder(
        local_path(config, save_dir, argument), config.allowed_dir, argument
    )


def local_path(config: Config, value: str, argument: str) -> Path:
    """A path a tool may read or write, as a person typed or pasted it (quotes and shell escapes removed).

    On stdio the disk is the user's own, so any path will do; a relative one starts where `relative_base`
    says. Over HTTP the disk is not the caller's: nothing, unless DOUBAO_ALLOWED_DIR names a folder. A set
    DOUBAO_ALLOWED_DIR confines every path: `..` is resolved here, and the path is then opened from that folder
    down without following links (see `open_beneath`), or, where that cannot be done, resolved and checked."""
    if config.serving_http and config.allowed_dir is None:
        raise DoubaoError(no_local_files(argument))
    value = as_typed_path(value, argument)
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = relative_base(config, argument) / path
    if config.allowed_dir and WALK_BENEATH:
        path = Path(os.path.normpath(path))
    else:
        path = path.resolve()
    if config.allowed_dir is not None and not path.is_relative_to(config.allowed_dir):
        raise DoubaoError(
            f"{argument}: {value[:QUOTE_MAX_CHARS]!r} is outside the allowed folder {config.allowed_dir}."
        )
    return path


def as_typed_path(value: str, argument: str) -> str:
    """A path as a person typed or pasted it, made plain: "Copy as path" quotes and a shell's escapes removed."""
    value = value.strip()
    # No file system takes a NUL, and Python's file calls raise ValueError on it.
    if "\x00" in value:
        raise DoubaoError(
            f"{argument}: the path contains a NUL character (\\x00), which no file name can hold: give the path as "
            "the file manager or the shell shows it."
        )
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    if os.name != "nt" and re.match(r"[A-Za-z]:[\\/]|\\\\", value):
        raise DoubaoError(
            f"{argument}: {value[:QUOTE_MAX_CHARS]!r} is a Windows path, but this server runs on {platform.system()}: "
            "give a path on this machine, or an https URL."
        )
    if os.sep == "/":
        # A shell's escapes: My\ Pictures is My Pictures.
        value = re.sub(r"\\(.)", r"\1", value)
    return value


def no_local_files(argument: str) -> str:
    """Why a path is refused over HTTP without DOUBAO_ALLOWED_DIR."""
    if argument in ("save_dir", "DOUBAO_OUTPUT_DIR"):
        return (
            f"{argument}: saving is off because this server is used over HTTP and its disk is not yours; leave it "
            "out and download the result URLs yourself. The operator can allow a folder with DOUBAO_ALLOWED_DIR."
        )
    return (
        f"{argument}: local files are off because this server is used over HTTP and its disk is not yours; pass an "
        "https or data: URL. The operator can allow a folder with DOUBAO_ALLOWED_DIR."
    )


def relative_base(config: Config, argument: str) -> Path:
    """Where a relative path starts: the folder the client started the server in (Claude Code starts servers in
    the project, and its users mean project paths), or, where that is the filesystem root as with Claude
    Desktop, the home folder. DOUBAO_ALLOWED_DIR instead of home when set, and always over HTTP, where the
    server's folders mean nothing to the caller. DOUBAO_OUTPUT_DIR, a setting, is under home."""
    if config.serving_http and config.allowed_dir:
        return config.allowed_dir
    at_root = config.working_dir == Path(config.working_dir.anchor)
    if argument == "DOUBAO_OUTPUT_DIR" or at_root:
        return config.allowed_dir or Path.home()
    return config.working_dir


WALK_BENEATH = hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd
# A FIFO must not block the open; fstat refuses it after.
READ_FLAGS = os.O_RDONLY | getattr(
    os,
    "O_NONBLOCK",
    0,
)


def open_folder(path: Path, root: Path | None, argument: str = "save_dir") -> Folder:
    """The folder at `path`, made when missing (parents too), held open; refused when it is a file or cannot hold
    new files. `argument` is what to name in errors: save_dir, or the DOUBAO_OUTPUT_DIR setting."""
    try:
        if WALK_BENEATH:
            fd: int | None = open_beneath(
                path,
                root,
                os.O_RDONLY | os.O_DIRECTORY,
                argument,
                make_folders=True,
            )
        # Windows opens no folder: it is used by path.
        else:
            os.makedirs(path, exist_ok=True)
            fd = None
    except (NotADirectoryError, FileExistsError) as error:
        raise DoubaoError(
            f"{argument} {path} is a file (or inside one), not a folder."
        ) from error
    except OSError as error:
        raise DoubaoError(
            f"{argument} {path} cannot be made or opened as a folder: {error.strerror or error}."
        ) from error
    folder = Folder(path, fd)
    probe = f".doubao-write-test-{uuid.uuid4().hex[:8]}"
    try:
        os.close(folder.create(probe))
        folder.unlink(probe)
    except OSError as error:
        folder.close()
        raise DoubaoError(
            f"{argument} {path} cannot hold new files ({error.strerror or error}): choose another folder."
        ) from error
    return folder


def open_beneath(
    path: Path,
    root: Path | None,
    flags: int,
    argument: str,
    make_folders: bool = False,
) -> int:
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
            inner = os.open(
                part,
                (flags if last else os.O_RDONLY | os.O_DIRECTORY) | os.O_NOFOLLOW,
                dir_fd=fd,
            )
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR) and is_link(part, fd):
                raise DoubaoError(
                    f"{argument}: {path} is or passes through a symbolic link, and links are not "
                    "followed inside DOUBAO_ALLOWED_DIR."
                ) from error
            raise
        finally:
            os.close(fd)
        fd = inner
    return fd


def is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class Folder:
    """A folder to save into, held open from the moment it is checked. Files are created relative to this
    descriptor, so a folder swapped for a link mid-call still gets them and nothing lands anywhere else.

    It is closed when its last user lets go (the call, or a save job still running after its caller left), so
    never under a thread that is still writing into it."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd, self.swept = path, fd, False

    def create(self, name: str) -> int:
        """A new file, never an existing one and never through a link."""
        where, at = self._at(name)
        return os.open(
            where,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
            0o666,
            **at,
        )

    def _at(self, name: str) -> tuple[str, dict[str, int]]:
        return (
            (name, {"dir_fd": self.fd})
            if self.fd is not None
            else (str(self.path / name), {})
        )

    def unlink(self, name: str) -> None:
        where, at = self._at(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where, **at)

    def replace(self, source: str, target: str) -> None:
        if self.fd is None:
            os.replace(self.path / source, self.path / target)
        else:
            os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    __del__ = close


def read_input(
    path: Path, root: Path | None, argument: str, max_bytes: int, what: str
) -> bytes:
    """A local input's bytes (see `open_input`), read at most one byte past the limit, so a file grown after the
    check cannot flood memory."""
    file, _ = open_input(path, root, argument, max_bytes, what)
    too_big = DoubaoError(
        f"{argument}: {path} is over Ark's {size_text(max_bytes)} limit for this input."
    )
    try:
        with file:
            return b"".join(
                capped(
                    iter(partial(file.read, DOWNLOAD_CHUNK_BYTES), b""),
                    max_bytes,
                    lambda: too_big,
                )
            )
    except OSError as error:
        raise DoubaoError(
            f"{argument}: {path} cannot be read: {error.strerror or error}."
        ) from error


def open_input(
    path: Path, root: Path | None, argument: str, max_bytes: int, what: str
) -> tuple[io.FileIO, os.stat_result]:
    """A local input opened beneath `root`: a regular file of at most `max_bytes`, checked on the open file (so one
    swapped for a device or a folder is refused), and its stat."""
    try:
        fd = open_beneath(path, root, READ_FLAGS, argument)
    except FileNotFoundError as error:
        raise DoubaoError(f"{argument}: {path} does not exist.") from error
    except OSError as error:
        raise DoubaoError(
            f"{argument}: {path} cannot be read: {error.strerror or error}."
        ) from error
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise DoubaoError(
            f"{argument}: {path} is a folder, not {what}."
            if stat.S_ISDIR(info.st_mode)
            else f"{argument}: {path} is not a regular file."
        )
    if info.st_size > max_bytes:
        os.close(fd)
        raise DoubaoError(
            f"{argument}: {path} is {size_text(info.st_size)}, over Ark's {size_text(max_bytes)} limit for this "
            "input."
        )
    return os.fdopen(fd, "rb", buffering=0), info


# --- Requests: the inputs as Ark takes them, and the body it is sent --------------------------------------------------
# Everything a call sends is settled before anything is sent: each input as Ark takes it, and the body.


class MediaRef(NamedTuple):
    """One image, video or audio a call gave: the argument it came in, its MEDIA kind, and what was given."""

    argument: str
    media: str
    given: str


async def load_content(
    studio: Studio,
    given: Mapping[str, list[str]],
    uploading: Uploading | None = None,
    report: Report | None = None,
) -> list[ContentItem]:
    """generate_video's media as content items, each read as Ark takes it (a local file on the slow lane, uploaded
    where it must be, with progress in bytes). A call cancelled mid-upload ends the upload."""
    inputs = [
        (spec, MediaRef(argument=spec.argument, media=spec.media, given=ref))
        for spec in VIDEO_INPUTS
        for ref in given[spec.argument]
    ]
    refs = [ref for _, ref in inputs]
    work = studio.lanes.slow.run(load_inputs, refs, studio.config, uploading)
    try:
        if uploading and report:
            loaded = await with_heartbeat(report, uploading.progress, work)
        else:
            loaded = await work
    except BaseException:
        if uploading:
            uploading.cancelled.set()
        raise
    return [
        ContentItem(item=spec.item, role=spec.role, url=url)
        for (spec, _), url in zip(inputs, loaded, strict=True)
    ]


def load_inputs(
    refs: Iterable[MediaRef], config: Config, uploading: Uploading | None = None
) -> list[str]:
    """Each reference as Ark takes it (see `load_media`). A local file that would take the request past Ark's cap is
    uploaded instead, where uploads are set; else the call is refused. Runs on a worker thread."""
    loaded, inline = [], 0
    for ref in refs:
        url = load_media(ref, config, uploading)
        if url.startswith("data:") and inline + len(url) > REQUEST_MAX_BYTES:
            path = local_file(ref, ref.given.strip(), config)
            if uploading is None or path is None:
                raise DoubaoError(
                    f"The inline files add up to over {size_text(REQUEST_MAX_BYTES)} of base64, Ark's limit for a "
                    "whole request: pass some as https URLs or asset:// ids, or set DOUBAO_UPLOADS to upload them "
                    "(docs/uploads.md)."
                )
            url = uploading.put(ref, path, config)
        if url.startswith("data:"):
            inline += len(url)
        loaded.append(url)
    return loaded


def load_media(
    ref: MediaRef, config: Config, uploading: Uploading | None = None
) -> str:
    """One image, video or audio argument as Ark takes it: URLs and asset ids pass through, a data URL is checked,
    a local file becomes a data URL, or a link to its upload (a video: Ark takes no video inline). Runs on a worker
    thread: it reads files, where `config` allows."""
    given = ref.given.strip()
    parts = urlsplit(given)
    if parts.scheme in ("http", "https") and parts.netloc:
        return given
    if parts.scheme == "asset":
        if not re.fullmatch(r"asset://[\w.:-]{1,200}", given):
            raise DoubaoError(
                f"{ref.argument}: {given[:80]!r} is not an asset id such as asset://asset-2026..."
            )
        return given
    if ref.media == "video" and parts.scheme == "data":
        raise DoubaoError(
            f"{ref.argument}: Ark takes reference videos only as https URLs or asset:// ids, not as data URLs: give "
            "the file's path (with DOUBAO_UPLOADS set), or a link Ark can fetch."
        )
    if parts.scheme == "data":
        return checked_data_url(ref, given)
    path = local_file(ref, given, config)
    if path is None:
        raise DoubaoError(
            f"{ref.argument}: {given[:80]!r} is not an https URL, a data URL, an asset:// id or a file path."
        )
    if ref.media == "video":
        if uploading is None:
            raise DoubaoError(
                f"{ref.argument}: Ark takes reference videos only as https URLs or asset:// ids, so a local video "
                "is uploaded to your own object storage first: set DOUBAO_UPLOADS=s3://bucket/prefix and its "
                "credentials (see docs/uploads.md), or give a link Ark can fetch."
            )
        return uploading.put(ref, path, config)
    return file_as_data_url(ref, path, config)


def local_file(ref: MediaRef, given: str, config: Config) -> Path | None:
    """The local path an argument names (a path, or a file:// URL), confined as `local_path` says; None for what is
    not a path."""
    parts = urlsplit(given)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DoubaoError(
                f"{ref.argument}: {given[:QUOTE_MAX_CHARS]!r} points at another machine; use a local path."
            )
        given = url2pathname(unquote(parts.path))
    # One letter is a Windows drive (C:\...), not a scheme.
    elif len(parts.scheme) > 1:
        return None
    return local_path(config, given, ref.argument)


class Uploading:
    """One call's uploads: the target, how long its links live, the longest reference video its model takes in all,
    what it uploaded, and its cancel (checked as each chunk goes)."""

    def __init__(
        self,
        uploader: Uploader,
        seconds: float,
        longest: float | None,
        record: Record | None = None,
    ):
        self.uploader, self.seconds, self.longest, self.record = (
            uploader,
            seconds,
            longest,
            record,
        )
        self.done: list[Uploaded] = []
        self.video_seconds = 0.0
        # The shortest reference video the call may take (an edit needs more).
        self.shortest = REFERENCE_VIDEO_MIN_SECONDS
        self.cancelled = threading.Event()
        # Bytes sent of the file going up now, and by when it must be up.
        self.sent = self.size = 0
        self.deadline = 0.0

    def put(self, ref: MediaRef, path: Path, config: Config) -> str:
        """Upload the file (once: see Uploader.link), and a fresh link to it."""
        limit = (
            VIDEO_INPUT_MAX_BYTES
            if ref.media == "video"
            else MEDIA[ref.media].max_bytes
        )
        opened = open_for_upload(ref, path, config, limit, self.uploader.digests)
        with opened.file:
            if opened.seconds is not None:
                self.check_length(opened)
            self.sent, self.size = 0, opened.size
            self.deadline = time.monotonic() + UPLOAD_DEADLINE_SECONDS
            url, uploaded = self.uploader.link(opened, self.seconds, self.chunk_sent)
        self.done.append(uploaded)
        if self.record is not None:
            self.record.uploaded(self.uploader.target.bucket, uploaded)
        return url

    def check_length(self, opened: OpenedMedia) -> None:
        seconds = opened.seconds or 0.0
        if seconds < self.shortest:
            what = (
                "an edit's video"
                if self.shortest > REFERENCE_VIDEO_MIN_SECONDS
                else "reference videos"
            )
            raise DoubaoError(
                f"{opened.argument}: {opened.path.name} is {seconds:.1f} s long; Ark takes {what} of at least "
                f"{self.shortest:g} s."
            )
        self.video_seconds += seconds
        if self.longest is not None and self.video_seconds > self.longest:
            raise DoubaoError(
                f"{opened.argument}: the reference videos add up to {self.video_seconds:.1f} s; this model takes "
                f"at most {self.longest:g} s in all."
            )

    def chunk_sent(self, sent: int) -> None:
        """boto3's progress, after each chunk: the call's cancel and the upload's deadline end it here."""
        self.sent += sent
        if self.cancelled.is_set():
            raise UploadCancelled
        if time.monotonic() > self.deadline:
            raise UploadTooSlow

    def progress(self) -> str:
        return f"uploading, {size_text(self.sent)} of {size_text(self.size)} sent"


def checked_data_url(ref: MediaRef, given: str) -> str:
    kind = MEDIA[ref.media]
    if not re.match(rf"data:{kind.mime}/[\w.+-]+;base64,", given):
        example = "png" if kind.mime == "image" else "wav"
        raise DoubaoError(
            f"{ref.argument}: a data URL must look like data:{kind.mime}/{example};base64,...."
        )
    encoded = len(given) - given.index(",") - 1
    if encoded * 3 // 4 > kind.max_bytes:
        raise DoubaoError(
            f"{ref.argument}: the data URL's file is over Ark's {size_text(kind.max_bytes)} limit."
        )
    return given


def file_as_data_url(ref: MediaRef, path: Path, config: Config) -> str:
    kind = MEDIA[ref.media]
    data = read_input(
        path, config.allowed_dir, ref.argument, kind.max_bytes, kind.described
    )
    found = recognised(ref, path, data[:SNIFF_BYTES])
    return f"data:{found.mime};base64,{base64.b64encode(data).decode()}"


def recognised(ref: MediaRef, path: Path, head: bytes) -> Signature:
    """What a local input is, by its first bytes: the medium it is given as, or refused."""
    kind = MEDIA[ref.media]
    found = sniff(head)
    if not found or not found.mime.startswith(kind.mime + "/"):
        raise DoubaoError(f"{ref.argument}: {path} is not {kind.described}.")
    return found


def video_request(
    model: str,
    prompt: str | None,
    media: Iterable[ContentItem],
    draft_task_id: str | None,
    web_search: bool | None,
    extra: dict[str, Any],
    parameters: Mapping[str, Any],
) -> dict[str, Any]:
    """A task body: the prompt, each medium and a draft as content items, every parameter as a top-level field (Ark
    validates those strictly, unlike the old `--rs 720p` prompt flags)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}] if prompt else []
    for medium in media:
        content.append(
            {
                "type": f"{medium.item}_url",
                f"{medium.item}_url": {"url": medium.url},
                "role": medium.role,
            }
        )
    if draft_task_id:
        content.append({"type": "draft_task", "draft_task": {"id": draft_task_id}})
    tools = {"tools": [{"type": "web_search"}]} if web_search else {}
    return {"model": model, "content": content, **compact(parameters), **tools, **extra}


def compact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Ark treats an absent field as "use the model's default"; a null would be a 400."""
    return {k: v for k, v in mapping.items() if v is not None}


def image_request(
    prompt: str,
    model: str,
    images: list[str],
    max_images: int | None,
    web_search: bool | None,
    extra: dict[str, Any],
    **parameters: Any,
) -> dict[str, Any]:
    """An image generation's body: every parameter given, the images, a set, web search, then `extra` as is."""
    body = {"model": model, "prompt": prompt, **parameters}
    if images:
        # SeedEdit takes exactly one image as a string; Seedream 4.x and later take a list.
        body["image"] = images[0] if len(images) == 1 else images
    if max_images and max_images > 1:
        body["sequential_image_generation"] = "auto"
        body["sequential_image_generation_options"] = {"max_images": max_images}
    if web_search:
        body["tools"] = [{"type": "web_search"}]
    return {**compact(body), **extra}


class ContentItem(NamedTuple):
    """A medium as a video task's content item: of `item` type (image, video, audio), with its role and URL."""

    item: str
    role: str
    url: str


# --- Uploads: local media into the person's own object storage, as links Ark can fetch --------------------------------
# Ark takes reference videos only as web URLs, and a whole request only up to 64 MB. With DOUBAO_UPLOADS set, a local
# video (and an image or audio that would not fit in the request) is uploaded to the person's S3-compatible bucket
# (TOS, AWS S3, R2, MinIO), once: the object's key is the file's SHA-256, so the same clip is uploaded once and each
# use gets a fresh presigned link. boto3 is imported only here, only when uploads are set; it reads the endpoint,
# region and credentials from its own standard settings.


@dataclass(frozen=True)
class UploadTarget:
    """DOUBAO_UPLOADS: s3://bucket/prefix."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class Uploaded(NamedTuple):
    """What a result says of an upload: never the link, which opens the person's private object."""

    key: str
    bytes: int
    expires_at: str
    # False: the object was there already.
    sent: bool


class Uploader:
    """The person's bucket, through boto3 (made at first use, on a worker thread). Thread-safe: boto3 clients are."""

    def __init__(self, target: UploadTarget, env: Mapping[str, str] = os.environ):
        self.target = target
        self.env = env
        self.lock = threading.Lock()
        self.s3: Any = None
        # A file's SHA-256 by (device, inode, size, modification time): a clip used again is not read again.
        self.digests: collections.OrderedDict[tuple[int, ...], str] = (
            collections.OrderedDict()
        )

    def client(self) -> Any:
        with self.lock:
            if self.s3 is None:
                import boto3
                from botocore.config import Config as BotoConfig

                endpoint = first_setting(
                    self.env, ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
                )
                host = urlsplit(endpoint or "").hostname or ""
                # TOS wants virtual-hosted addressing; an IP or localhost (MinIO, moto) can only do path style.
                path_style = host == "localhost" or is_ip(host)
                self.s3 = boto3.session.Session().client(
                    "s3",
                    # Read here as boto3 reads it, so that the addressing style matches the endpoint.
                    endpoint_url=endpoint,
                    # botocore reads AWS_DEFAULT_REGION only: AWS_REGION is passed on.
                    # A blank one (a bundle's empty field) is AWS's first region, as boto3 would have it.
                    region_name=first_setting(
                        self.env, ("AWS_DEFAULT_REGION", "AWS_REGION")
                    )
                    or "us-east-1",
                    config=BotoConfig(
                        signature_version="s3v4",
                        s3={"addressing_style": "path" if path_style else "virtual"},
                        connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        read_timeout=UPLOAD_READ_TIMEOUT_SECONDS,
                        retries={"max_attempts": 3, "mode": "standard"},
                    ),
                )
            return self.s3

    def secrets(self) -> list[str]:
        """The storage credentials, redacted like the Ark key from every result, error and log line."""
        try:
            import boto3

            found = boto3.session.Session().get_credentials()
        except Exception:
            return []
        if found is None:
            return []
        frozen = found.get_frozen_credentials()
        return [s for s in (frozen.access_key, frozen.secret_key, frozen.token) if s]

    def link(
        self,
        opened: OpenedMedia,
        seconds: float,
        report: Callable[[int], None] | None = None,
    ) -> tuple[str, Uploaded]:
        """The object for this file (uploaded unless it is there already, whole), and a fresh link to it."""
        s3 = self.client()
        key = f"{self.target.prefix}{opened.digest}{opened.kind.extension}"
        sent = False
        try:
            try:
                there = s3.head_object(Bucket=self.target.bucket, Key=key)
                whole = there.get("ContentLength") == opened.size
            except Exception as error:
                if storage_code(error) not in ("404", "NoSuchKey", "NotFound"):
                    raise
                whole = False
            if not whole:
                opened.file.seek(0)
                s3.upload_fileobj(
                    opened.file,
                    self.target.bucket,
                    key,
                    ExtraArgs={"ContentType": opened.kind.mime},
                    Config=transfer_config(),
                    Callback=report,
                )
                sent = True
            url = s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.target.bucket, "Key": key},
                ExpiresIn=int(seconds),
            )
        except UploadCancelled:
            raise
        except Exception as error:
            raise DoubaoError(upload_failed(self.target, opened, error)) from None
        expires = utc_text(time.time() + seconds)
        return url, Uploaded(key=key, bytes=opened.size, expires_at=expires, sent=sent)

    def remove(self, keys: Iterable[str]) -> list[str]:
        """Delete these objects (the record's, never a listing of the bucket): those that went."""
        s3, gone = self.client(), []
        for key in keys:
            try:
                s3.delete_object(Bucket=self.target.bucket, Key=key)
                gone.append(key)
            except Exception as error:
                log.warning(
                    "Could not remove %s: %s",
                    key,
                    storage_code(error) or type(error).__name__,
                )
        return gone


def transfer_config() -> Any:
    """Multipart above UPLOAD_PART_BYTES, in parts of that size, UPLOAD_PARTS_AT_ONCE at a time, and as many held
    in memory: what an upload holds does not grow with the file."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        max_concurrency=UPLOAD_PARTS_AT_ONCE,
        multipart_threshold=UPLOAD_PART_BYTES,
        multipart_chunksize=UPLOAD_PART_BYTES,
    )
    # s3transfer's own setting, which boto3's constructor does not take.
    config.max_in_memory_upload_chunks = UPLOAD_PARTS_AT_ONCE
    return config


class UploadCancelled(Exception):
    """The call was cancelled mid-upload: boto3 aborts the multipart upload, and nothing is sent to Ark."""


class UploadTooSlow(Exception):
    """The upload passed its deadline (UPLOAD_DEADLINE_SECONDS): aborted like a cancel, and told as a failure."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def storage_code(error: BaseException) -> str:
    """The storage's error code (boto3's ClientError), never its message: a proxy may echo credentials there."""
    response = getattr(error, "response", None)
    code = (
        as_object(as_object(response).get("Error")).get("Code")
        if isinstance(response, dict)
        else None
    )
    return str(code)[:60] if code else ""


REFUSED_CREDENTIALS = "the storage refused the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)"
# What a storage error code means, for the person who set the storage up.
STORAGE_ERRORS = {
    "AccessDenied": REFUSED_CREDENTIALS,
    "403": REFUSED_CREDENTIALS,
    "InvalidAccessKeyId": "the storage does not know the access key (AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": "the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)",
    "ExpiredToken": "the credentials have expired: renew them",
    "NoSuchBucket": "the bucket does not exist",
    "EntityTooLarge": "the storage refused a file this large",
}


def upload_failed(
    target: UploadTarget, opened: OpenedMedia, error: BaseException
) -> str:
    if isinstance(error, UploadTooSlow):
        return (
            f"{opened.argument}: uploading {opened.path.name} to {target} took over "
            f"{UPLOAD_DEADLINE_SECONDS / 60:g} minutes and was stopped. Nothing was sent to Ark."
        )
    code = storage_code(error)
    why = STORAGE_ERRORS.get(code) or (
        f"the storage answered {code}"
        if code
        else f"the storage could not be reached or did not answer in time ({type(error).__name__})"
    )
    return (
        f"{opened.argument}: uploading {opened.path.name} to {target} failed: {why}. Nothing was sent to Ark. See "
        "docs/uploads.md."
    )


class OpenedMedia(NamedTuple):
    """A local file to upload, opened once (confined, checked) and hashed."""

    argument: str
    path: Path
    file: Any
    size: int
    kind: Signature
    digest: str
    # Seconds, when the file's own header says (an MP4 or MOV's movie header).
    seconds: float | None


def open_for_upload(
    ref: MediaRef,
    path: Path,
    config: Config,
    max_bytes: int,
    digests: collections.OrderedDict[tuple[int, ...], str] | None = None,
) -> OpenedMedia:
    """The file opened beneath the allowed folder, a regular file of at most `max_bytes`, recognised by its bytes
    as the medium it is given as, and hashed (the object's key). Runs on a worker thread."""
    kind = MEDIA[ref.media]
    file, info = open_input(
        path, config.allowed_dir, ref.argument, max_bytes, kind.described
    )
    try:
        found = recognised(ref, path, file.read(SNIFF_BYTES))
        same = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        digest = (digests.get(same) if digests is not None else None) or file_digest(
            file
        )
        if digests is not None:
            digests[same] = digest
            if len(digests) > RECORD_CACHE_TASKS:
                digests.popitem(last=False)
        seconds = movie_seconds(file) if ref.media == "video" else None
        return OpenedMedia(
            ref.argument, path, file, info.st_size, found, digest, seconds
        )
    except BaseException:
        file.close()
        raise


def file_digest(file: Any) -> str:
    file.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(partial(file.read, UPLOAD_PART_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()


def movie_seconds(file: Any) -> float | None:
    """An MP4 or MOV's length from its movie header (moov/mvhd), read box by box without a decoder; None when the
    header cannot be found or read."""
    file.seek(0, os.SEEK_END)
    end = file.tell()

    def boxes(start: int, stop: int) -> Iterator[tuple[bytes, int, int]]:
        at = start
        # A file of millions of tiny boxes is not walked to its end.
        for _ in range(MOVIE_BOXES_READ):
            if at + 8 > stop:
                return
            file.seek(at)
            head = file.read(16)
            size, name = int.from_bytes(head[:4], "big"), head[4:8]
            body = at + 8
            if size == 1:
                size, body = int.from_bytes(head[8:16], "big"), at + 16
            elif size == 0:
                size = stop - at
            if size < 8 or at + size > stop:
                return
            yield name, body, at + size
            at += size

    for name, body, stop in boxes(0, end):
        if name != b"moov":
            continue
        for inner, start, _ in boxes(body, stop):
            if inner == b"mvhd":
                file.seek(start)
                header = file.read(32)
                if header[:1] == b"\x01":
                    scale, length = (
                        int.from_bytes(header[20:24], "big"),
                        int.from_bytes(header[24:32], "big"),
                    )
                else:
                    scale, length = (
                        int.from_bytes(header[12:16], "big"),
                        int.from_bytes(header[16:20], "big"),
                    )
                return length / scale if scale else None
    return None


def link_seconds(fields: Mapping[str, Any], extra: Mapping[str, Any]) -> float:
    """How long an upload's link lives: 6 h on the default tier; on flex, at least the task's
    execution_expires_after (48 h by default); at most SigV4's 7 days."""
    if fields.get("service_tier") != "flex":
        return UPLOAD_LINK_SECONDS
    expires = extra.get("execution_expires_after")
    flex = float(cast(float, expires)) if is_amount(expires) else FLEX_EXPIRES_SECONDS
    return min(max(flex, UPLOAD_LINK_SECONDS), SIGV4_MAX_SECONDS)


# --- Cost: what a call will cost, what it cost, and whether the person agreed -----------------------------------------
# Before anything is sent, a call is quoted from the price table (PRICES, with DOUBAO_PRICES on top): tokens, rate,
# total and the basis in words. Above DOUBAO_CONFIRM_ABOVE the person is asked, through MCP elicitation, before the
# tool body runs (a resolver: no argument can answer for them). Each POST then reserves its model's quote under the
# day's limit (see Ledger), and Ark's usage settles it: a succeeded task to what was billed, a failed or cancelled one
# to nothing. A quote is never made up: a model or size without a price says so.


def price_key(model: str) -> str:
    """Where a price is kept: a full model id (with its date stamp) or an endpoint id as it is, anything else as
    its family."""
    key = model.strip().lower()
    return (
        key if key.startswith("ep-") or re.search(r"-\d{6}$", key) else family_key(key)
    )


class PriceBook:
    """The prices one server uses: its region's built-in table, DOUBAO_PRICES on top (field by field, a resolution
    or size at a time), and the real models that answers named for endpoint ids."""

    def __init__(self, region: int, overrides: Mapping[str, Mapping[str, Any]]):
        self.region, self.overrides = region, overrides
        self.currency = str(CURRENCIES[region])
        # Endpoint id: the model an answer named for it.
        self.endpoints: dict[str, str] = {}

    def price(self, model: str) -> Price | None:
        return self._price(price_key(model), ())

    def priced_as(self, model: str) -> str:
        """The model whose table row a model's limits come from: an endpoint's `as`, or what an answer named."""
        entry = self.overrides.get(price_key(model), {})
        return str(entry.get("as") or self.endpoints.get(model.lower()) or model)

    def learn(self, asked: str, named: Any) -> None:
        """An answer named the model behind an endpoint id: it is priced like that model from now on."""
        if (
            asked.lower().startswith("ep-")
            and isinstance(named, str)
            and named != asked
        ):
            if len(self.endpoints) < KEYS_KEPT:
                self.endpoints[asked.lower()] = named

    def _price(self, key: str, seen: tuple[str, ...]) -> Price | None:
        if key in seen:
            return None
        entry = dict(self.overrides.get(key, {}))
        target = entry.pop("as", None) or self.endpoints.get(key)
        if target:
            base = self._price(price_key(str(target)), (*seen, key))
        else:
            family = family_key(key)
            base = PRICES[self.region].get(family)
            if family != key:
                base = merged_price(base, self.overrides.get(family))
        return merged_price(base, entry)


def merged_price(base: Price | None, entry: Mapping[str, Any] | None) -> Price | None:
    """`base` with an entry's fields on top: a mapping merged key by key, anything else replaced."""
    if not entry:
        return base
    fields: dict[str, Any] = {}
    for name, value in entry.items():
        if name == "as":
            continue
        old = getattr(base, name, None)
        if isinstance(value, dict) and isinstance(old, Mapping):
            value = {**old, **value}
        fields[name] = value
    return replace(base or Price(), **fields)


class Quote(NamedTuple):
    """What a call will cost, before it is sent: the amount (None: no price), its basis in words, and what Ark's
    usage is multiplied by to settle it (per million tokens, flex applied; or per image)."""

    amount: float | None
    currency: str
    basis: str
    rate: float | None = None
    tokens: int | None = None


def quote_video(
    book: PriceBook, model: str, ask: VideoAsk, service_tier: str | None
) -> Quote:
    """A video's cost: output tokens by Ark's formula at the model's rate for its resolution, plus the seconds of
    reference video billed as input (their length is not known here: the most the model takes, an upper bound)."""
    price = book.price(model)
    family = family_row("video", book.priced_as(model)) or UNKNOWN_VIDEO_FAMILY
    resolution = "480p" if ask.draft else ask.resolution or DEFAULT_VIDEO_RESOLUTION
    videos = ask.media.get("reference_videos", 0)
    rates = rates_for(price, bool(videos), ask.generate_audio) if price else {}
    if resolution not in VIDEO_SIZES or resolution not in rates:
        with_video = " with a reference video" if videos else ""
        return no_price(book, f"{model} at {resolution}{with_video}")
    rate = rates[resolution] * (price.flex if price and service_tier == "flex" else 1)
    ratio = ask.ratio if ask.ratio in VIDEO_SIZES["720p"] else DEFAULT_VIDEO_RATIO
    width, height = VIDEO_SIZES[resolution][ratio]
    frames, length = frames_of(ask, family)
    tokens = width * height * frames // PIXELS_PER_TOKEN
    # Adaptive takes the input's ratio, which only the finished task reports.
    shown = "adaptive, as 16:9" if ask.ratio == "adaptive" else ratio
    basis = f"{resolution} {shown} {length}: {tokens:,} tokens"
    if videos:
        seconds = family.reference_seconds
        extra = int(width * height * VIDEO_FPS * seconds // PIXELS_PER_TOKEN)
        basis += f" + up to {seconds:g} s of reference video, {extra:,} tokens (an upper bound)"
        tokens += extra
    basis += f" at {rate:g} {book.currency}/M"
    if service_tier == "flex":
        basis += " (flex)"
    if ask.draft:
        basis += "; a draft is billed as 480p"
    return Quote(round(tokens * rate / 1e6, 4), book.currency, basis, rate, tokens)


def rates_for(price: Price, videos: bool, audio: bool | None) -> Mapping[str, float]:
    """The rates that apply: with a video in the input; silent, where the model has a rate for it; else the rates."""
    if videos:
        return price.with_video_input
    if audio is False and price.without_audio:
        return price.without_audio
    return price.per_million_tokens


def frames_of(ask: VideoAsk, family: VideoFamily) -> tuple[int, str]:
    """How many frames the video has, and its length in words: `frames`, or 24 a second plus one (duration -1:
    the family's longest, an upper bound)."""
    if ask.frames:
        return ask.frames, f"{ask.frames} frames"
    if ask.duration == -1:
        seconds = family.durations[1]
        return VIDEO_FPS * seconds + 1, f"up to {seconds} s"
    seconds = ask.duration or DEFAULT_VIDEO_SECONDS
    return VIDEO_FPS * seconds + 1, f"{seconds} s"


def quote_images(
    book: PriceBook, model: str, ask: ImageAsk, extra: Mapping[str, Any]
) -> Quote:
    """Images' cost: every image the call may make (a set's most, a layer split's layers) at the model's price for
    its size, and for each reference beyond the first where the model charges for them."""
    price = book.price(model)
    each = per_image_price(price.per_image, ask.size) if price else None
    if price is None or each is None:
        return no_price(book, f"{model} images{f' at {ask.size}' if ask.size else ''}")
    amount, size_basis = each
    count = ask.max_images or 1
    if extra.get("layer_decomposition"):
        count = LAYER_SPLIT_IMAGES
    amount += price.per_extra_reference * max(ask.images - 1, 0)
    many = f"up to {count} images" if count > 1 else "1 image"
    basis = f"{many} at {amount:g} {book.currency}{size_basis}"
    return Quote(round(count * amount, 4), book.currency, basis, amount)


def per_image_price(
    per_image: float | Mapping[str, float] | None, size: str | None
) -> tuple[float, str] | None:
    """The price of one image at `size`, and a word on how it was found: by the size, else by the smallest priced
    size that holds it (an upper bound), else, for a size not given, the dearest (an upper bound)."""
    if per_image is None:
        return None
    if not isinstance(per_image, Mapping):
        return float(per_image), ""
    if size and size in per_image:
        return per_image[size], f" ({size})"
    priced = sorted(
        (IMAGE_SIZE_PIXELS[name], name)
        for name in per_image
        if name in IMAGE_SIZE_PIXELS
    )
    pixels = IMAGE_SIZE_PIXELS.get(size or "") or pixels_of(size)
    if pixels:
        holding = [name for area, name in priced if area >= pixels]
    else:
        holding = [name for _, name in priced[-1:]]
    if not holding:
        return None
    return per_image[holding[0]], f" (priced as {holding[0]}: an upper bound)"


def pixels_of(size: str | None) -> int | None:
    match = re.fullmatch(r"(\d+)x(\d+)", size or "")
    return int(match[1]) * int(match[2]) if match else None


def no_price(book: PriceBook, what: str) -> Quote:
    return Quote(
        None,
        book.currency,
        f"no price is known for {what} in {book.currency}: see docs/cost.md to give one in DOUBAO_PRICES",
    )


def call_quote(quotes: Iterable[Quote]) -> Quote:
    """What a call may cost across the models it may go to: the dearest (a default may fall through to the next)."""
    listed = list(quotes)
    priced = [quote for quote in listed if quote.amount is not None]
    return max(priced, key=lambda quote: quote.amount or 0) if priced else listed[0]


def times(quote: Quote, takes: int) -> Quote:
    """A call's quote for `takes` takes: every take counted before any is sent."""
    if takes == 1:
        return quote
    amount = None if quote.amount is None else round(quote.amount * takes, 4)
    return quote._replace(amount=amount, basis=f"{takes} takes of {quote.basis}")


def billed_video(
    book: PriceBook, task: Mapping[str, Any], rate: float | None
) -> Cost | None:
    """What Ark billed for a finished task: a succeeded one's tokens at its rate (the one its creation was quoted
    at, else the task's own model and resolution without video input); a failed one nothing."""
    status = task.get("status")
    if status in ("failed", "cancelled", "expired"):
        return Cost(
            currency=book.currency,
            billed=0,
            billed_basis=f"not billed: the task {status}",
        )
    usage = task.get("usage") or {}
    tokens = clean_int(usage.get("total_tokens")) or clean_int(
        usage.get("completion_tokens")
    )
    if status != "succeeded" or tokens is None:
        return None
    guessed = ""
    if rate is None:
        ask = VideoAsk(
            media={},
            resolution=task.get("resolution"),
            ratio=task.get("ratio"),
            generate_audio=task.get("generate_audio") is not False,
        )
        rate = quote_video(
            book, str(task.get("model") or ""), ask, task.get("service_tier")
        ).rate
        guessed = " (the rate without a reference video)"
    if rate is None:
        return Cost(
            currency=book.currency,
            billed_basis=f"{tokens:,} tokens; no price is known for its model",
        )
    return Cost(
        currency=book.currency,
        billed=round(tokens * rate / 1e6, 4),
        billed_basis=f"{tokens:,} tokens at {rate:g} {book.currency}/M{guessed}",
    )


def billed_images(book: PriceBook, usage: Any, each: float | None) -> Cost | None:
    """What Ark billed for an image call: the images it reports generating, at the quoted price of one."""
    count = clean_int(as_object(usage).get("generated_images"))
    if count is None:
        return None
    images = f"{count} image{'' if count == 1 else 's'}"
    if each is None:
        return Cost(
            currency=book.currency,
            billed_basis=f"{images}; no price is known for its model",
        )
    return Cost(
        currency=book.currency,
        billed=round(count * each, 4),
        billed_basis=f"{images} at {each:g} {book.currency}",
    )


def consent_question(ctx: Context, quote: Quote) -> Elicit[SpendConsent] | Unasked:
    """Ask the person about a call quoted above DOUBAO_CONFIRM_ABOVE (or with no price), or say why it cannot be
    asked: the client declared no elicitation, or it speaks 2025-11-25 over stateless HTTP, which has no channel
    for a question."""
    studio = studio_of(ctx)
    if not needs_consent(studio.config, quote):
        return Unasked()
    refusal = room_for(studio, api_key_for(studio.config, ctx.headers), quote)
    if refusal:
        return Unasked(refusal)
    threshold = f"{studio.config.confirm_above:g} {quote.currency}"
    cost = (
        f"about {quote.amount:g} {quote.currency}"
        if quote.amount is not None
        else "an unknown amount"
    )
    if not can_ask(ctx):
        return Unasked(
            f"Not sent: this call would cost {cost} ({quote.basis}), above DOUBAO_CONFIRM_ABOVE ({threshold}), and "
            "this client cannot be asked to confirm it (it supports no MCP elicitation, or has no channel for it "
            "over this connection). Use a client that asks (Claude Code, VS Code, Cursor), or raise or unset "
            "DOUBAO_CONFIRM_ABOVE in this server's settings."
        )
    return Elicit(
        f"This will cost {cost}: {quote.basis}. That is above your DOUBAO_CONFIRM_ABOVE ({threshold}). Go ahead?",
        SpendConsent,
    )


def needs_consent(config: Config, quote: Quote) -> bool:
    return config.confirm_above is not None and (
        quote.amount is None or quote.amount > config.confirm_above
    )


def can_ask(ctx: Context) -> bool:
    """Whether a question reaches the person: the client declared form elicitation, and (before 2026-07-28, which
    carries questions in the result) this connection can send it a request mid-call."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities else None
    if elicitation is None or (
        elicitation.form is None and elicitation.url is not None
    ):
        return False
    version = ctx.protocol_version or ""
    return version >= INPUT_REQUIRED_VERSION or bool(ctx.session.can_send_request)


def check_consent(config: Config, quote: Quote, outcome: Any) -> None:
    """In the tool body, before anything is sent: a call that needed the person's yes has it."""
    refusal = (
        outcome.data.refusal
        if isinstance(outcome, AcceptedElicitation)
        and isinstance(outcome.data, Unasked)
        else None
    )
    if refusal:
        raise DoubaoError(refusal)
    if not needs_consent(config, quote):
        return
    agreed = isinstance(outcome, AcceptedElicitation) and isinstance(
        outcome.data, SpendConsent
    )
    if not (agreed and outcome.data.spend):
        raise DoubaoError(
            f"Not sent: the person did not agree to spend this ({quote.basis}). Nothing was created or billed; "
            "ask them before trying again."
        )


class Spend:
    """The day's limit as one server keeps it: the ledger (in the task record, shared by every process that uses it;
    in memory without one), the limit, and the rate each task of this process was quoted at."""

    def __init__(self, config: Config, record_path: Path | None):
        self.limit, self.strict = config.daily_limit, config.limit_set
        self.book = PriceBook(config.region, config.price_overrides)
        self.ledger = (
            None if self.limit is None else Ledger(record_path, self.book.currency)
        )
        # Keys told that the limit lives in memory only (a bounded few: over HTTP every caller brings a key).
        self.told: set[str | None] = set()
        # Task id: the rate its creation was quoted at (for its billed cost); a bounded few.
        self.rates: collections.OrderedDict[str, float | None] = (
            collections.OrderedDict()
        )
        self.lock = threading.Lock()

    def remember(self, task_id: str, rate: float | None) -> None:
        with self.lock:
            self.rates[task_id] = rate
            if len(self.rates) > RECORD_CACHE_TASKS:
                self.rates.popitem(last=False)

    def first_told(self, owner: str | None) -> bool:
        """Whether this key is yet to be told that the limit lives in memory (then it is, now)."""
        with self.lock:
            if owner in self.told:
                return False
            if len(self.told) >= KEYS_KEPT:
                self.told.clear()
            self.told.add(owner)
            return True


class Reservation:
    """One POST's reservation under the limit, and what became of it."""

    def __init__(
        self, spend: Spend, row: int | None, quote: Quote, note: str | None = None
    ):
        self.spend, self.row, self.quote, self.note = spend, row, quote, note

    def created(self, task_id: str | None) -> None:
        """Ark answered with a task (or, without an id, it may have made one)."""
        if task_id:
            self.spend.remember(task_id, self.quote.rate)
        if self.spend.ledger and self.row is not None:
            self.spend.ledger.created(self.row, task_id)

    def failed(self, error: BaseException) -> None:
        """The POST failed: Ark's refusal (a 4xx) bills nothing; a timeout, a dropped connection or a 5xx may have
        made the task, so its reservation stays until a list of the key's tasks shows whether it exists."""
        if not (self.spend.ledger and self.row is not None):
            return
        refused = (
            isinstance(error, ArkAPIError)
            and 400 <= error.status < 500
            and error.status != 408
        )
        if refused:
            self.spend.ledger.release(self.row)
        else:
            self.spend.ledger.created(self.row, None)

    def images(self, usage: Any) -> Cost | None:
        """An image answer settles at once, to the images Ark reports."""
        billed = billed_images(self.spend.book, usage, self.quote.rate)
        if self.spend.ledger and self.row is not None:
            self.spend.ledger.settle_row(
                self.row, billed.get("billed") if billed else None
            )
        return billed


def reserve_spend(
    studio: Studio, api_key: str, quote: Quote, kind: Kind, model: str
) -> Reservation:
    """Reserve a POST's quote under the day's limit, or refuse it before anything is sent. When the day looks full,
    what finished since is settled first (one list request), so a limit is never held by tasks already done. Runs on
    a worker thread."""
    spend = studio.spend
    ledger = spend.ledger
    if ledger is None or spend.limit is None:
        return Reservation(spend, None, quote)
    if quote.amount is None and spend.strict:
        raise DoubaoError(unpriced_refusal(quote))
    owner = key_fingerprint(api_key)
    try:
        try:
            row = ledger.reserve(owner, quote, spend.limit, kind, model)
        except OverLimit:
            refresh_spend(studio, api_key)
            row = ledger.reserve(owner, quote, spend.limit, kind, model)
    except OverLimit as over:
        raise DoubaoError(over_limit_refusal(over.spent, quote, spend.limit)) from None
    except sqlite3.Error as error:
        raise DoubaoError(
            f"Not sent: today's spend cannot be checked against DOUBAO_DAILY_LIMIT ({reason_of(error)}). Another "
            "server may hold the task record for a moment: try again. Nothing was created or billed."
        ) from None
    note = None
    if ledger.path is None and spend.first_told(owner):
        note = (
            "Today's spend under DOUBAO_DAILY_LIMIT is kept in memory (the task record is off): a restart forgets "
            "it, and other server processes do not see it."
        )
    return Reservation(spend, row, quote, note)


def room_for(studio: Studio, api_key: str, quote: Quote) -> str | None:
    """Why the limit would refuse this call now (checked before a question is put to the person), or None."""
    spend = studio.spend
    if spend.ledger is None or spend.limit is None:
        return None
    if quote.amount is None and spend.strict:
        return unpriced_refusal(quote)
    owner = key_fingerprint(api_key)
    try:
        spent = spend.ledger.spent(owner)
        if spent + (quote.amount or 0) > spend.limit:
            refresh_spend(studio, api_key)
            spent = spend.ledger.spent(owner)
    except sqlite3.Error:
        # The body's reservation says it, and refuses.
        return None
    if spent + (quote.amount or 0) > spend.limit:
        return over_limit_refusal(spent, quote, spend.limit)
    return None


def over_limit_refusal(spent: float, quote: Quote, limit: float) -> str:
    now = datetime.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    left = max(int((midnight - now).total_seconds()) // 60, 1)
    return (
        f"Not sent: this call would cost about {quote.amount:g} {quote.currency} ({quote.basis}), and "
        f"{spent:.4g} {quote.currency} of today's limit of {limit:g} {quote.currency} (DOUBAO_DAILY_LIMIT) is spent "
        f"or reserved. The day turns at local midnight, in {left // 60} h {left % 60} min. To go on now, raise "
        "DOUBAO_DAILY_LIMIT in this server's settings (the env block of your MCP client's config) and restart it. "
        "Nothing was created or billed."
    )


def unpriced_refusal(quote: Quote) -> str:
    return (
        f"Not sent: {quote.basis}, and DOUBAO_DAILY_LIMIT holds only for calls it can price. Give its price in "
        'DOUBAO_PRICES (for an endpoint: {"models": {"ep-...": {"as": "doubao-seedance-2-0"}}}), or choose a '
        "model that has one, or set DOUBAO_DAILY_LIMIT=off. Nothing was created or billed."
    )


def settle_spend(spend: Spend, tasks: Iterable[Task]) -> None:
    """Finished tasks settle their reservations: a succeeded one to what Ark billed, any other to nothing."""
    ledger = spend.ledger
    finished = [task for task in tasks if task["status"] in FINAL_STATUSES]
    if ledger is None or not finished:
        return
    try:
        ledger.settle(finished)
    # The reservation stays (an upper bound) until the next look at the task settles it.
    except sqlite3.Error as error:
        log.warning("Settling today's spend failed: %s", error)


def refresh_spend(studio: Studio, api_key: str) -> None:
    """Settle this key's open reservations from a list of their tasks, after looking for the tasks whose creation
    had no answer: a task of its model that Ark made near when it was sent is it; a list that reaches back past
    then without it shows there is none, and its reservation is released. Failures leave everything reserved. Runs
    on a worker thread."""
    ledger = studio.spend.ledger
    if ledger is None:
        return
    owner = key_fingerprint(api_key)
    try:
        rows = ledger.open_rows(owner)
        for model in {row.model for row in rows if row.unknown}:
            lost = [row for row in rows if row.unknown and row.model == model]
            find_unknown_tasks(studio, api_key, model, lost)
        ids = [row.task_id for row in ledger.open_rows(owner) if row.task_id]
        if ids:
            found = tasks_by_id(studio.client, ids, api_key)
            settle_spend(studio.spend, list(found.values()))
    except (DoubaoError, sqlite3.Error) as error:
        log.info("Could not refresh today's spend: %s", reason_of(error))


def find_unknown_tasks(
    studio: Studio, api_key: str, model: str, lost: list[LedgerRow]
) -> None:
    """One list of the key's newest tasks of `model`: each creation without an answer gets the task made near when
    it was sent, or, when the list reaches back past then without one, is released."""
    ledger = studio.spend.ledger
    assert ledger is not None
    answer = as_object(
        studio.client.list_tasks(
            [("page_size", LIST_PAGE_TASKS), ("filter.model", model)], api_key
        )
    )
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    claimed = ledger.tasks_with_rows([task_id_of(item) or "" for item in items])
    complete = clean_int(answer.get("total")) == len(items)
    for row in sorted(lost, key=lambda row: row.posted):
        found_id = unknown_task_of(row, items, claimed)
        if found_id:
            claimed.add(found_id)
            ledger.created(row.row, found_id)
        elif complete or any(
            (timestamp_of(item.get("created_at")) or row.posted)
            < row.posted - UNKNOWN_MATCH_SECONDS
            for item in items
        ):
            ledger.release(row.row)


def unknown_task_of(
    row: LedgerRow, items: list[dict[str, Any]], claimed: set[str]
) -> str | None:
    """The task Ark made for a POST that had no answer: one of its model, made near when it was sent, not claimed."""
    for item in sorted(
        items, key=lambda item: timestamp_of(item.get("created_at")) or 0
    ):
        task_id, created = task_id_of(item), timestamp_of(item.get("created_at"))
        if task_id and task_id not in claimed and created is not None:
            if abs(created - row.posted) <= UNKNOWN_MATCH_SECONDS:
                return task_id
    return None


# --- The studio: images, and a video task's life in the order a call uses it ------------------------------------------
# A video task is created (falling through the defaults Ark says this account cannot use), observed (each answer
# written to the record where it changed, and taught to the estimates), waited for (polls timed by the estimate,
# shared with the key's other waits), saved (or handed to the watcher, which saves it when it finishes), and
# recorded throughout. Images take the same road, shorter: made, then saved. The Studio holds what they share; each
# step is a function of it, right above what it calls, and everything blocking runs in a lane.


class Studio:
    """What one server does with Ark, and what it needs for it: the configuration, the Ark client, the worker lanes,
    the task record and the watcher (when there are any), the models each key cannot use, the estimates of how long
    videos take, and the shared polls. The tools only adapt their arguments to it, so it can be driven without an
    MCP client."""

    def __init__(
        self,
        config: Config,
        client: ArkClient,
        stopping: Stopping | None = None,
        record: Record | None = None,
        watcher: Watcher | None = None,
    ):
        self.config, self.client = config, client
        self.stopping = stopping or Stopping()
        self.lanes = make_lanes(config.limits)
        self.record, self.watcher = record, watcher
        self.memory = ModelMemory()
        self.estimates = Estimates(record, key_fingerprint(config.api_key))
        self.spend = Spend(config, record.path if record else None)
        self.uploader = Uploader(config.uploads) if config.uploads else None
        self.library = (
            AssetLibrary(config.assets, client, record)
            if config.assets and offers_assets(config)
            else None
        )
        self.batchers: collections.OrderedDict[str, PollBatcher] = (
            collections.OrderedDict()
        )

    def poller(self, api_key: str) -> PollBatcher:
        """The batcher of this key's polls (a bounded few: over HTTP every caller brings a key)."""
        slot = key_fingerprint(api_key) or ""
        if slot not in self.batchers:
            self.batchers[slot] = PollBatcher(self, api_key)
            if len(self.batchers) > KEYS_KEPT:
                self.batchers.popitem(last=False)
        self.batchers.move_to_end(slot)
        return self.batchers[slot]


class VideoKind(NamedTuple):
    """The resolution and duration a call asked for: they time its wait until Ark's answer says."""

    resolution: str | None
    duration: int | None


@dataclass
class Following:
    """How a call follows its tasks: until when it waits (on time.monotonic: the call's own time counts), where it
    saves, with which key, where its progress goes, and what it asked for."""

    until: float
    save_to: Folder | None
    api_key: str
    report: Report
    asked: VideoKind | None = None


async def make_video(
    studio: Studio, plan: Plan, body: dict[str, Any], follow: Following
) -> Task:
    """A video task created on the first model of the plan this account can use, then followed as asked."""
    created, note = await studio.lanes.slow.run(
        create_task,
        studio,
        plan,
        body,
        follow.api_key,
        follow.save_to,
    )
    try:
        task = await follow_task(studio, created, follow)
        studio.spend.book.learn(created["model"], task.get("model"))
        task = with_fields(task, cost={**created["cost"], **task.get("cost", {})})
    except Exception as error:
        # The task exists and is billed: whatever fails after its creation, its id comes back.
        log.exception("Following %s after its creation failed", created["task_id"])
        step = f"The task was created, but following it failed ({reason_of(error)}). Call query_video_task with "
        step += f"task_id {created['task_id']!r} and wait_seconds=50."
        task = with_fields(created, next_step=step)
    return with_fields(task, note=note) if note else task


def create_task(
    studio: Studio,
    plan: Plan,
    body: dict[str, Any],
    api_key: str,
    save_to: Folder | None,
) -> tuple[Task, str | None]:
    """POST the task to the first usable model of the plan, each POST reserving its quote under the day's limit,
    and write its row in the record on the same thread (the record costs the call no extra hop): the new task, and
    the notes on its model and its cost."""
    reservations: list[Reservation] = []

    def send(model: str) -> dict[str, Any]:
        reservation = reserve_spend(studio, api_key, plan.quotes[model], "video", model)
        reservations.append(reservation)
        try:
            answer = studio.client.create_task({**body, "model": model}, api_key)
        except BaseException as error:
            reservation.failed(error)
            raise
        reservation.created(task_id_of(answer))
        return answer

    answer, used, skipped = first_usable(
        "video",
        plan.choice,
        send,
        studio.memory,
        api_key,
        studio.config.region,
    )
    task_id = task_id_of(answer)
    if not task_id:
        raise unreadable(
            "a new task without a usable task id (the task may exist: see list_video_tasks)",
            answer,
        )
    created = with_fields(new_task(task_id, used), cost=estimated(plan.quotes[used]))
    try:
        record_new_task(studio, created, {**body, "model": used}, api_key, save_to)
    except Exception:
        # The record never costs the caller the new task's id.
        log.exception("Recording the new task %s failed", task_id)
    notes = [
        model_note("video", used, skipped, studio.config.region),
        reservations[-1].note,
    ]
    return created, " ".join(filter(None, notes)) or None


def first_usable(
    kind: Kind,
    choice: Choice,
    send: Callable[[str], T],
    memory: ModelMemory,
    api_key: str,
    region: int,
) -> tuple[T, str, list[Skipped]]:
    """Send to the first model this account can use: (Ark's answer, the model, each model skipped before it).
    Falls through only among defaults, and only on Ark's "cannot use this model" answer, which bills nothing.
    Runs on a worker thread."""
    skipped: list[Skipped] = []
    models = (
        memory.order(api_key, choice.models)
        if choice.source == "default"
        else list(choice.models)
    )
    for model in models:
        try:
            answer = send(model)
        except ArkAPIError as error:
            lifecycle = lifecycle_of(kind, model, region)
            error.facts = replace(
                error.facts,
                kind=kind,
                model=model,
                model_source=choice.source,
                lifecycle=lifecycle,
                region=region,
            )
            if choice.source != "default" or not model_unavailable(error):
                raise
            memory.learn(api_key, model, usable=False)
            why = (
                lifecycle.status
                if lifecycle and lifecycle.retired
                else f"Ark says {error.code}"
            )
            skipped.append(Skipped(model=model, why=why))
            continue
        memory.learn(api_key, model, usable=True)
        return answer, model, skipped
    raise DoubaoError(
        f"No default {kind} model that takes this call is available: {unavailable_models(skipped)}. Activate one in "
        f"the Ark console (Model activation), or pass model (or set DOUBAO_{kind.upper()}_MODEL) to a model or "
        "endpoint id your account has."
    )


class ModelMemory:
    """The default models Ark said each key cannot use, kept for the rest of the process, so that the next call goes
    straight to the one that worked. Only an order, never a refusal: when nothing else takes a call they are tried
    again, since the account may have activated them since. Bounded: over HTTP every caller brings a key."""

    def __init__(self, keys: int = KEYS_KEPT):
        self.keys = keys
        # By key fingerprint: no key is kept here.
        self.unusable: collections.OrderedDict[str | None, set[str]] = (
            collections.OrderedDict()
        )
        self.lock = threading.Lock()

    def order(self, api_key: str, models: Iterable[str]) -> list[str]:
        """The models, those this key cannot use last (stable: the table's order otherwise)."""
        unusable = self.refused(api_key)
        return sorted(models, key=lambda model: model in unusable)

    def refused(self, api_key: str) -> set[str]:
        """The models Ark said this key cannot use, as far as this process knows."""
        with self.lock:
            return set(self.unusable.get(key_fingerprint(api_key), ()))

    def learn(self, api_key: str, model: str, usable: bool) -> None:
        slot = key_fingerprint(api_key)
        with self.lock:
            unusable = self.unusable.setdefault(slot, set())
            self.unusable.move_to_end(slot)
            if usable:
                unusable.discard(model)
            else:
                unusable.add(model)
            while len(self.unusable) > self.keys:
                self.unusable.popitem(last=False)


def key_fingerprint(api_key: str | None) -> str | None:
    """Which key made a task, without keeping the key: a server resumes only the tasks its own key can see."""
    return (
        hashlib.sha256(f"doubao-mcp:{api_key}".encode()).hexdigest()[:16]
        if api_key
        else None
    )


def task_id_of(item: Mapping[str, Any]) -> str | None:
    """A task id a caller can pass back: Ark's own form, never a path or a 1 MB string."""
    task_id = item.get("id")
    if (
        isinstance(task_id, str)
        and re.fullmatch(ID_PATTERN, task_id)
        and ".." not in task_id
    ):
        return task_id
    return None


def new_task(task_id: str, model: str) -> Task:
    """A task Ark has just created."""
    return {
        "task_id": task_id,
        "status": "queued",
        "model": model,
        "next_step": NOT_FINISHED.format(task_id=task_id),
    }


def estimated(quote: Quote) -> Cost:
    """A quote as a result shows it."""
    if quote.amount is None:
        return Cost(currency=quote.currency, basis=quote.basis)
    return Cost(currency=quote.currency, estimate=quote.amount, basis=quote.basis)


def with_fields(task: Mapping[str, Any], **fields: Any) -> Task:
    """The task with these fields set, next_step kept last: it is what to read after the rest."""
    rest = {
        key: value
        for key, value in task.items()
        if key not in fields and key != "next_step"
    }
    step = (
        {"next_step": task["next_step"]}
        if "next_step" in task and "next_step" not in fields
        else {}
    )
    return {**rest, **fields, **step}


def record_new_task(
    studio: Studio,
    task: Task,
    body: Mapping[str, Any],
    api_key: str,
    save_to: Folder | None,
) -> None:
    """The new task's row: its owner is the server's key, or no one (a caller's key is never kept)."""
    if studio.record is None:
        return
    own = api_key == studio.config.api_key
    owner = key_fingerprint(api_key) if own else None
    watched = bool(studio.watcher and own and save_to)
    studio.record.created(
        task, body, save_to.path if save_to else None, owner, watched=watched
    )


class Skipped(NamedTuple):
    """A default the call passed over, and why."""

    model: str
    why: str


def unavailable_models(skipped: list[Skipped]) -> str:
    """ "a and b are not available to this account (why)", one clause per reason, in the order tried."""
    clauses = []
    for why in dict.fromkeys(s.why for s in skipped):
        *others, last = [s.model for s in skipped if s.why == why]
        if others:
            clauses.append(
                f"{', '.join(others)} and {last} are not available to this account ({why})"
            )
        else:
            clauses.append(f"{last} is not available to this account ({why})")
    return "; ".join(clauses)


def model_note(
    kind: Kind, model: str, skipped: list[Skipped], region: int
) -> str | None:
    """What a result says of its model: the defaults skipped on the way to it, and its lifecycle when Ark is
    retiring it."""
    lifecycle = lifecycle_of(kind, model, region)
    parts = []
    if skipped:
        parts.append(f"{unavailable_models(skipped)}: used {model}.")
    if lifecycle:
        parts.append(lifecycle.advice(region))
    return " ".join(parts) or None


def lifecycle_of(kind: Kind, model: str, region: int) -> Lifecycle | None:
    """The model's lifecycle, where it holds in this region."""
    lifecycle = getattr(family_row(kind, model), "lifecycle", None)
    if lifecycle and region in lifecycle.regions:
        return lifecycle
    return None


async def follow_task(studio: Studio, task: Task, follow: Following) -> Task:
    """Wait for the task until `follow.until`, then save it if it succeeded, or have the watcher save it when it
    does."""
    if task["status"] not in FINAL_STATUSES:
        task, estimate = await wait_timed(studio, task, follow)
        if task["status"] not in FINAL_STATUSES:
            # For the viewer, which shows progress the same way.
            expected = round(grow_estimate(estimate.seconds, age_of(task)))
            task = with_fields(task, estimate_seconds=expected)
    if follow.save_to and task["status"] == "succeeded":
        return await save_task(studio, task, follow.save_to)
    if follow.save_to and task["status"] in UNFINISHED_STATUSES:
        return save_later(studio, task, follow.save_to, follow.api_key)
    return task


async def wait_timed(
    studio: Studio, task: Task, follow: Following
) -> tuple[Task, Estimate]:
    """Wait for a task, timed by how long its kind takes, its polls shared with the key's other waits: the task as
    last seen, and the estimate."""
    estimate = await estimate_for(studio, task, follow.asked, follow.api_key)
    seconds = time_left(follow.until)
    if seconds:
        poll = partial(studio.poller(follow.api_key).poll, task["task_id"])
        intervals = estimate.intervals(studio.config.poll_intervals)
        task = await wait_for_task(
            poll,
            task,
            seconds,
            follow.report,
            intervals,
            estimate.seconds,
            age_of(task),
            sleep=studio.stopping.sleep,
            stopped=studio.stopping.is_stopping,
        )
    return task, estimate


async def estimate_for(
    studio: Studio, task: Task, asked: VideoKind | None, api_key: str
) -> Estimate:
    """How long the task should take, by its kind as asked for, else as Ark describes it."""
    # Its first use reads the record: off the event loop, once.
    if not studio.estimates.loaded:
        await studio.lanes.quick.run(studio.estimates.load)
    kind = asked or VideoKind(
        resolution=task.get("resolution"), duration=task.get("duration")
    )
    return studio.estimates.estimate(
        api_key,
        task.get("model") or "",
        kind.resolution,
        kind.duration,
    )


class Estimates:
    """How long a video task takes: the median of recent succeeded tasks of its family, of its resolution and
    duration where there are enough of those, else of the family, else the family's prior in VIDEO_MODELS.

    Kept per API key (by fingerprint): over HTTP one caller's tasks never move another's estimates, which would tell
    each what the other makes, and an account's own queue is what times its tasks. The server's own key also learns
    from the task record at first use; every key learns from the tasks this process sees succeed. A time that no
    task can take (a poisoned record, a clock gone wrong) is skipped, never trusted."""

    def __init__(
        self,
        record: Record | None = None,
        owner: str | None = None,
        keys: int = KEYS_KEPT,
    ):
        # The record's tasks are those of the key `owner`.
        self.record, self.owner, self.keys = record, owner, keys
        self.loaded = record is None or owner is None
        self.seen: collections.OrderedDict[str, collections.deque[Sample]] = (
            collections.OrderedDict()
        )
        self.learnt: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.lock = threading.Lock()

    def load(self) -> None:
        """The server key's finished tasks from the record, once: on a worker thread. A row that cannot be read is
        logged and skipped."""
        if self.loaded or self.record is None or self.owner is None:
            return
        self.loaded = True
        skipped = 0
        for task_id, model, stored, seconds in self.record.recent_durations(
            self.owner,
            ESTIMATE_HISTORY,
        ):
            parameters = stored_parameters(stored)
            if parameters is None or not task_seconds(seconds):
                skipped += 1
                continue
            family = family_key(model)
            sample = Sample(
                family=family,
                resolution=parameters.get("resolution"),
                duration=parameters.get("duration"),
                seconds=seconds,
            )
            self.add(self.owner, task_id, sample)
        if skipped:
            log.warning(
                "The task record %s has %d rows whose times or parameters cannot be read: left out of the estimates.",
                self.record.path,
                skipped,
            )

    def estimate(
        self,
        api_key: str,
        model: str,
        resolution: Any = None,
        duration: Any = None,
    ) -> Estimate:
        """Seconds from creation to a finished video, from what is in memory (see `load`)."""
        family = family_key(model)
        with self.lock:
            seen = list(self.seen.get(key_fingerprint(api_key) or "", ()))
        same_kind = [
            s.seconds
            for s in seen
            if (s.family, s.resolution, s.duration) == (family, resolution, duration)
        ]
        same_family = [s.seconds for s in seen if s.family == family]
        for alike in (same_kind, same_family):
            if len(alike) >= ESTIMATE_MIN_SAMPLES:
                return Estimate(
                    seconds=statistics.median(alike[-ESTIMATE_SAMPLES:]), learnt=True
                )
        return Estimate(
            seconds=prior_seconds(model, resolution, duration), learnt=False
        )

    def learn(self, api_key: str, tasks: Iterable[Mapping[str, Any]]) -> None:
        """Tasks Ark reported: each succeeded one teaches how long its kind takes (Ark's own created and updated)."""
        slot = key_fingerprint(api_key) or ""
        for task in tasks:
            # A list repeats them each call.
            if task.get("status") != "succeeded" or task["task_id"] in self.learnt:
                continue
            start, end = (
                timestamp_of(task.get("created_at")),
                timestamp_of(task.get("updated_at")),
            )
            if start and end:
                model = task.get("model")
                family = family_key(model)
                sample = Sample(
                    family=family,
                    resolution=task.get("resolution"),
                    duration=task.get("duration"),
                    seconds=end - start,
                )
                self.add(slot, task["task_id"], sample)

    def add(self, slot: str, task_id: str, sample: Sample) -> None:
        with self.lock:
            if task_id in self.learnt or not task_seconds(sample.seconds):
                return
            self.learnt[task_id] = None
            if len(self.learnt) > ESTIMATE_TASKS_KEPT:
                self.learnt.popitem(last=False)
            if slot not in self.seen:
                self.seen[slot] = collections.deque(maxlen=ESTIMATE_HISTORY)
                if len(self.seen) > self.keys:
                    self.seen.popitem(last=False)
            self.seen.move_to_end(slot)
            self.seen[slot].append(sample)


def prior_seconds(model: str, resolution: Any, duration: Any) -> float:
    """How long a video of this kind takes before any was seen: the family's figure (for 5 s at 720p), scaled."""
    row = family_row("video", model)
    base = row.seconds if row else UNKNOWN_MODEL_SECONDS
    seconds = (
        duration
        if isinstance(duration, int) and duration > 0
        else PRIOR_DURATION_SECONDS
    )
    length = max(seconds, PRIOR_DURATION_SECONDS) / PRIOR_DURATION_SECONDS
    return base * RESOLUTION_COST.get(resolution or PRIOR_RESOLUTION, 1.0) * length


def time_left(until: float) -> float:
    """Seconds from now until `until` (time.monotonic), or 0."""
    return max(0.0, until - time.monotonic())


class PollBatcher:
    """The polls of one API key's waits that fall within a moment of each other go to Ark as one request: a GET for
    one task, a list (`filter.task_ids`) for several, each waiter handed its own task as soon as it is known. Twenty
    waits on videos of one kind, started together and timed alike, cost one request a poll instead of twenty. On
    the event loop; every request it starts is kept until it ends."""

    def __init__(self, studio: Studio, api_key: str):
        self.studio, self.api_key = studio, api_key
        self.pending: dict[str, list[asyncio.Future[Task]]] = {}
        # Tasks to ask about alone when a list leaves them out (a wait's; not the watcher's, which paces those).
        self.alone: set[str] = set()
        # The requests under way: asyncio keeps only weak references to tasks.
        self.sending: set[asyncio.Future[None]] = set()

    async def poll(self, task_id: str, alone_if_missing: bool = True) -> Task:
        """The task as Ark reports it in the next shared request. A task a list leaves out is asked about alone, or,
        without `alone_if_missing` (the watcher, which paces those itself), raises NotListed."""
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        first = not self.pending
        self.pending.setdefault(task_id, []).append(future)
        if alone_if_missing:
            self.alone.add(task_id)
        if first:
            asyncio.get_running_loop().call_later(POLL_BATCH_SECONDS, self.start)
        return await future

    def start(self) -> None:
        """Send what is pending: one page's worth now, the rest in the next batch."""
        pending, self.pending = self.pending, {}
        alone, self.alone = self.alone, set()
        ids = list(pending)
        for task_id in ids[LIST_PAGE_TASKS:]:
            for future in pending[task_id]:
                self.keep(self.requeue(task_id, future, task_id in alone))
        self.keep(
            self.send(
                {task_id: pending[task_id] for task_id in ids[:LIST_PAGE_TASKS]}, alone
            )
        )

    def keep(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def send(
        self, pending: dict[str, list[asyncio.Future[Task]]], alone: set[str]
    ) -> None:
        def settle(task_id: str, outcome: Task | Exception) -> None:
            for future in pending[task_id]:
                # A future that is done is a wait that gave up.
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

        await look_up(
            self.studio,
            list(pending),
            self.api_key,
            settle,
            alone.__contains__,
            retry=False,
        )

    async def requeue(
        self,
        task_id: str,
        future: asyncio.Future[Task],
        alone_if_missing: bool,
    ) -> None:
        try:
            result = await self.poll(task_id, alone_if_missing)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
            return
        if not future.done():
            future.set_result(result)


class Estimate(NamedTuple):
    seconds: float
    # From tasks seen; else the family's prior, which may be far off: polls then stay closer.
    learnt: bool

    def intervals(self, intervals: tuple[float, float]) -> tuple[float, float]:
        """The bounds of the polls (densest, sparsest) a wait timed by this estimate uses."""
        near, far = intervals
        if self.learnt:
            return intervals
        return near, min(far, PRIOR_POLL_SECONDS)


class Sample(NamedTuple):
    """One succeeded task's time, with what it was."""

    family: str
    resolution: Any
    duration: Any
    seconds: float


def age_of(task: Mapping[str, Any]) -> float:
    """Seconds since Ark created the task: 0 when its answer did not say, or said something no running task can be
    (older than Ark lets a task run, or a clock skewed into the future)."""
    created = timestamp_of(task.get("created_at"))
    if not created:
        return 0.0
    age = time.time() - created
    if 0 <= age <= MAX_TASK_RUN_SECONDS:
        return age
    return 0.0


def timestamp_of(value: Any) -> float | None:
    """Unix seconds from a time a result shows (ISO 8601, as `time_text` writes Ark's) or Ark's own answer (unix
    seconds already), or None."""
    if is_amount(value):
        return float(value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


async def wait_for_task(
    poll: Callable[[], Awaitable[Task]],
    task: Task,
    wait_seconds: float,
    report: Report,
    intervals: tuple[float, float] = POLL_INTERVALS_SECONDS,
    estimate: float = UNKNOWN_MODEL_SECONDS,
    age: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    stopped: Callable[[], bool] = lambda: False,
    poll_limit: float = TASK_READ_TIMEOUT_SECONDS,
) -> Task:
    """Poll until the task is final or `wait_seconds` have passed: once soon, then timed by how long it should take
    (`estimate` seconds from its creation, `age` seconds ago). Progress, the task's age against its estimate, is
    reported every few seconds.

    Sleeping happens on the event loop, so a wait holds no thread, and a cancelled call stops here at once. The last
    poll starts no later than the deadline. `poll` makes a single attempt: the next poll is the retry of a
    transient failure, which keeps the deadline exact. Whatever fails, and when the server is stopping, the task
    comes back with what is known of it: the caller never loses its id. No poll is awaited longer than `poll_limit`
    (one request's own deadline), however long the queue before it: a wait ends within `wait_seconds` and one poll.
    """
    waiting = Waiting(
        report=report, estimate=estimate, age=age, start=clock(), total=estimate
    )
    polled = False
    failure: Exception | None = None
    while task["status"] not in FINAL_STATUSES:
        elapsed = clock() - waiting.start
        if elapsed >= wait_seconds:
            break
        # The first poll comes soon whatever the estimate: Ark refuses a prompt or an image within seconds.
        gap = (
            poll_interval(age + elapsed, estimate, intervals)
            if polled
            else intervals[0]
        )
        poll_at = min(
            on_grid(waiting.start, elapsed + gap, min(POLL_GRID_SECONDS, intervals[0])),
            wait_seconds,
        )
        polled = True
        # Progress every few seconds between polls: a client's silence timer never fires.
        while elapsed < poll_at:
            await waiting.tell(task, elapsed)
            await sleep(min(PROGRESS_EVERY_SECONDS, poll_at - elapsed))
            if stopped():
                return with_fields(
                    task, next_step=STOPPED_WAITING.format(task_id=task["task_id"])
                )
            elapsed = clock() - waiting.start
        task, failure = await poll_once(poll, task, poll_limit)
        if failure and not transient(failure):
            break
    if failure:
        return with_fields(
            task,
            next_step=CHECK_FAILED.format(
                reason=reason_of(failure), task_id=task["task_id"]
            ),
        )
    return task


def on_grid(start: float, at: float, grid: float) -> float:
    """`at` (seconds after `start`) moved to the next point of a grid of the clock: waits polling at about the same
    time poll at the same time, in one request."""
    return math.ceil(round((start + at) / grid, 6)) * grid - start


@dataclass
class Waiting:
    """A wait's progress: the task's age against an estimate that grows past it and never goes back."""

    report: Report
    estimate: float
    age: float
    start: float
    total: float

    async def tell(self, task: Task, elapsed: float) -> None:
        age = self.age + elapsed
        self.total = max(self.total, grow_estimate(self.estimate, age))
        message = f"{task['task_id']}: {task['status']}, {age:.0f} s of about {self.total:.0f} s"
        await self.report(round(age, 1), round(self.total, 1), message)


def grow_estimate(estimate: float, age: float) -> float:
    """A task past its estimate: the estimate grows with it (progress is shown against it, and never goes back)."""
    return max(estimate, age * OVERRUN_GROWTH + OVERRUN_MARGIN_SECONDS)


class Stopping:
    """Set when the server is told to stop: waits end early with what they know, and new calls are refused."""

    def __init__(self) -> None:
        self.is_set = False
        self.event: asyncio.Event | None = None

    def set(self) -> None:
        """On the event loop's thread."""
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

    def is_stopping(self) -> bool:
        return self.is_set


async def poll_once(
    poll: Callable[[], Awaitable[Task]],
    task: Task,
    limit: float,
) -> tuple[Task, Exception | None]:
    """One poll: the task as Ark reports it, or the task as known and why not (within `limit` seconds)."""
    try:
        with anyio.fail_after(limit):
            return await poll(), None
    except TimeoutError:
        return task, ArkConnectionError(f"no answer within {limit:g} s")
    except Exception as error:
        # Any failure, expected or not: the task id must come back.
        return task, error


async def look_up(
    studio: Studio,
    task_ids: list[str],
    api_key: str,
    settle: Callable[[str, Task | Exception], None],
    alone: Callable[[str], bool] = lambda task_id: True,
    retry: bool = True,
    filters: Filters | None = None,
) -> None:
    """Ask Ark about these tasks and `settle` each, with its task or why not, as soon as that is known: one GET for
    one task; for several, or with list `filters`, list requests, then a GET for each the list left out, all at
    once in the quick lane, so that a list that lies costs one request's time, not one per task. A task the list
    left out and `alone` declines is NotListed. With `retry` False, single attempts: the next poll is the retry."""

    async def one(task_id: str) -> None:
        try:
            outcome: Task | Exception = await studio.lanes.quick.run(
                fetch_task,
                studio,
                task_id,
                api_key,
                retry,
            )
        except Exception as error:
            outcome = error
        settle(task_id, outcome)

    found: dict[str, Task] = {}
    listing = len(task_ids) > 1 or filters is not None
    if listing:
        try:
            found = await studio.lanes.quick.run(
                listed_by_id,
                studio,
                task_ids,
                api_key,
                retry,
                filters or NO_FILTERS,
            )
        except Exception as error:
            # Each waiter decides what a failure means for its wait.
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


async def look_at(studio: Studio, task_id: str, api_key: str) -> Task:
    """The task as Ark describes it now, observed."""
    return await studio.lanes.quick.run(fetch_task, studio, task_id, api_key)


def fetch_task(studio: Studio, task_id: str, api_key: str, retry: bool = True) -> Task:
    """GET one task from Ark, shaped and observed. Runs on a worker thread."""
    answer = studio.client.get_task(task_id, api_key, retry=retry)
    return observe(studio, [shape_task(answer, task_id)], api_key)[0]


def observe(studio: Studio, tasks: list[Task], api_key: str) -> list[Task]:
    """Tasks as Ark described them to this key: taught to the estimates, written to the record where that
    changed, with the files saved for them and a background save that failed."""
    studio.estimates.learn(api_key, tasks)
    settle_spend(studio.spend, tasks)
    tasks = [with_billed(studio, task) for task in tasks]
    if studio.library is not None:
        # A real person's refusal names the asset tools this server offers.
        tasks = [with_asset_step(task) for task in tasks]
    if studio.record is None:
        return tasks
    studio.record.observed(tasks)
    known = studio.record.files_of(task["task_id"] for task in tasks)
    return [
        with_record(task, known[task["task_id"]]) if task["task_id"] in known else task
        for task in tasks
    ]


def with_asset_step(task: Task) -> Task:
    """A failed task's advice, told again knowing that the asset tools are offered (shape_task cannot know it): a
    real person's refusal names them."""
    if task["status"] != "failed":
        return task
    error = {"code": task.get("error_code")}
    return with_fields(
        task, next_step=next_step_of(task["task_id"], "failed", error, assets=True)
    )


def with_billed(studio: Studio, task: Task) -> Task:
    """A finished task with what Ark billed for it."""
    if task["status"] not in FINAL_STATUSES:
        return task
    spend = studio.spend
    billed = billed_video(spend.book, task, spend.rates.get(task["task_id"]))
    return with_fields(task, cost=billed) if billed else task


def poll_interval(age: float, estimate: float, intervals: tuple[float, float]) -> float:
    """Seconds until the next poll of a task `age` seconds old that should take about `estimate`: rare early, dense
    around and after the estimate, and slowly sparser as it runs on past it."""
    near, far = intervals
    left = estimate - age
    if left > 0:
        return min(far, max(near, left * EARLY_POLL_SHARE))
    # Sparser only far past it.
    overrun = -left
    sparsest = far if overrun > estimate else OVERRUN_POLL_SECONDS
    return min(sparsest, near + overrun * OVERRUN_POLL_SLOPE)


def transient(error: Exception) -> bool:
    return isinstance(error, ArkConnectionError) or (
        isinstance(error, ArkAPIError) and transient_status(error.status)
    )


def task_seconds(seconds: Any) -> bool:
    """Whether a task can have taken this long: a number, more than nothing, at most as long as Ark lets one run."""
    return (
        isinstance(seconds, (int, float))
        and math.isfinite(seconds)
        and 0 < seconds <= MAX_TASK_RUN_SECONDS
    )


def stored_parameters(stored: Any) -> dict[str, Any] | None:
    """A task's parameters as the record holds them, or None when they cannot be read."""
    try:
        parameters = json.loads(stored)
    except (TypeError, ValueError):
        return None
    return parameters if isinstance(parameters, dict) else None


async def save_task(studio: Studio, task: Task, folder: Folder) -> Task:
    """Save a succeeded task in the slow lane (see `save_once`), or, when the server is told to stop first, the
    task as known with what to do: a call in flight gets its answer within the grace period, and the save goes
    on until the server exits (its unfinished file removed then)."""
    outcome: list[Any] = []

    async def save() -> None:
        try:
            outcome.append(await studio.lanes.slow.run(save_once, studio, task, folder))
        except Exception as error:
            # Raised below, outside the group, so that it is not wrapped in a group.
            outcome.append(error)
        group.cancel_scope.cancel()

    async def stop() -> None:
        await studio.stopping.wait()
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(save)
        group.start_soon(stop)
    if not outcome:
        return with_fields(
            task, next_step=STOPPED_SAVING.format(task_id=task["task_id"])
        )
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return cast(Task, outcome[0])


def save_once(studio: Studio, task: Task, folder: Folder) -> Task:
    """Save what of a succeeded task is not saved yet (see `save_missing`). Runs on a worker thread."""
    known = (
        studio.record.files_of([task["task_id"]]).get(task["task_id"])
        if studio.record
        else None
    )
    saved = save_missing(
        studio.client,
        studio.record,
        task,
        folder,
        studio.config.max_download_bytes,
        known,
    )
    if saved is None:
        return with_fields(task, next_step=BEING_SAVED)
    return saved


def save_missing(
    client: ArkClient,
    record: Record | None,
    task: Task,
    folder: Folder,
    max_bytes: int,
    known: TaskFiles | None,
) -> Task | None:
    """Save what of a succeeded task is not saved yet, by what the record knows of each file's kind: files it holds
    are reported, not fetched again (one that went missing is), and a save that failed half-way is finished. With a
    record, each video is saved once across processes; None: the watcher or another process is saving it now."""
    present = [f for f in (known.files if known else []) if not f.get("missing")]
    have = {f.get("kind") for f in present}
    wanted = [
        key for key, kind in FILE_KINDS.items() if task.get(key) and kind not in have
    ]
    bare = {k: v for k, v in task.items() if k not in ("saved_files", "save_errors")}
    if not wanted:
        return with_fields(bare, saved_files=present) if present else task

    def save() -> Task:
        fetched = save_task_files(client, bare, folder, max_bytes, wanted)
        files = present + fetched.get("saved_files", [])
        fields: dict[str, Any] = {"saved_files": files} if files else {}
        if "save_errors" in fetched:
            fields["save_errors"] = fetched["save_errors"]
        return with_fields(bare, **fields)

    if record is None:
        return save()
    return cast(
        "Task | None",
        record.save(task, folder.path, save, again=bool(known and known.files)),
    )


def save_task_files(
    client: ArkClient,
    task: Task,
    folder: Folder,
    max_bytes: int,
    wanted: Iterable[str] = tuple(FILE_KINDS),
) -> Task:
    """Download a succeeded task's `wanted` files (its video_url, last_frame_url); a failed download is reported,
    not raised. Each saved file says its kind, so nothing is ever told apart by its name."""
    names = {
        "video_url": (task["task_id"], "video"),
        "last_frame_url": (f"{task['task_id']}{LAST_FRAME_NAME}", "image"),
    }
    jobs = []
    for key in wanted:
        if task.get(key):
            stem, expected = names[key]
            fetch = partial(
                download, client, task[key], folder, stem, expected, max_bytes
            )
            jobs.append(
                SaveJob(
                    source=task[key],
                    save=partial(tagged, {"kind": FILE_KINDS[key]}, fetch),
                )
            )
    return with_fields(task, **save_each(jobs))


class SaveJob(NamedTuple):
    # What is saved, for its error.
    source: str
    save: Callable[[], SavedFile]


def save_each(jobs: Iterable[SaveJob]) -> dict[str, Any]:
    """Run each job; the result's `saved_files` and `save_errors`, where there are any."""
    saved: list[SavedFile] = []
    errors: list[SaveError] = []
    for job in jobs:
        try:
            saved.append(job.save())
        except (DoubaoError, OSError, ValueError) as error:
            log.warning("Saving %s failed: %s", job.source[:100], error)
            errors.append(SaveError(source=job.source, error=str(error)))
    return compact({"saved_files": saved or None, "save_errors": errors or None})


def tagged(tags: Mapping[str, Any], save: Callable[[], SavedFile]) -> SavedFile:
    return cast(SavedFile, {**save(), **tags})


def save_later(studio: Studio, task: Task, folder: Folder, api_key: str) -> Task:
    """An unfinished task a call wanted saved: the watcher saves it when it finishes (it polls with the server's own
    key only); else the caller is told to ask again."""
    if studio.watcher and api_key == studio.config.api_key:
        watched_into = studio.watcher.watch(task["task_id"], folder.path)
        return with_fields(
            task,
            next_step=task["next_step"] + WATCHED_STEP.format(folder=watched_into),
        )
    return with_fields(task, next_step=task["next_step"] + SAVE_LATER_STEP)


async def make_images(
    studio: Studio,
    plan: Plan,
    body: dict[str, Any],
    api_key: str,
    save_to: Folder | None,
    report: Report,
) -> Task:
    """Images from the first model of the plan this account can use, each POST reserving its quote under the day's
    limit and settling it to what Ark reports; shaped, and saved when asked."""
    reservations: list[Reservation] = []
    billed: list[Cost | None] = []

    def send(model: str) -> dict[str, Any]:
        reservation = reserve_spend(studio, api_key, plan.quotes[model], "image", model)
        reservations.append(reservation)
        try:
            answer = studio.client.generate_images({**body, "model": model}, api_key)
        except BaseException as error:
            reservation.failed(error)
            if isinstance(error, ArkAPIError) and "asset://" in str(body.get("image")):
                error.facts = replace(error.facts, asset_images=True)
            raise
        billed.append(reservation.images(as_object(answer).get("usage")))
        return answer

    making = studio.lanes.slow.run(
        first_usable,
        "image",
        plan.choice,
        send,
        studio.memory,
        api_key,
        studio.config.region,
    )
    data, used, skipped = await with_heartbeat(report, "generating images", making)
    studio.spend.book.learn(used, data.get("model"))
    result: Task = dict(shape_images(data))
    result["cost"] = {**estimated(plan.quotes[used]), **(billed[-1] or {})}
    notes = [
        model_note("image", used, skipped, studio.config.region),
        reservations[-1].note,
    ]
    note = " ".join(filter(None, notes))
    if note:
        result["note"] = f"{note} {result['note']}"
    if save_to:
        max_bytes = studio.config.max_download_bytes
        result = await studio.lanes.slow.run(
            save_images,
            studio.client,
            data["data"],
            result,
            save_to,
            max_bytes,
        )
    return result


async def with_heartbeat(
    report: Report, what: str | Callable[[], str], work: Awaitable[T]
) -> T:
    """Send progress every few seconds while `work` runs, so clients that reset their timeout on progress keep
    waiting for a long synchronous generation; `what` says what it does (a function: as it goes)."""

    async def beat() -> None:
        start = time.monotonic()
        while True:
            await anyio.sleep(HEARTBEAT_EVERY_SECONDS)
            elapsed = time.monotonic() - start
            doing = what() if callable(what) else what
            await report(round(elapsed, 1), None, f"{doing}, {elapsed:.0f} s elapsed")

    outcome: list[Any] = []
    async with anyio.create_task_group() as beats:
        beats.start_soon(beat)
        try:
            outcome.append(await work)
        except Exception as error:
            # Raised below, outside the group, so that it is not wrapped in a group.
            outcome.append(error)
        beats.cancel_scope.cancel()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return cast(T, outcome[0])


def save_images(
    client: ArkClient,
    data: list[Any],
    result: Task,
    folder: Folder,
    max_bytes: int,
) -> Task:
    """Save each generated image, from its URL or its inline b64_json, named by time and index."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jobs = []
    for image in result["images"]:
        index, item = image["index"], data[image["index"]]
        stem, tags = f"doubao-{stamp}-{index}", {"kind": "image", "index": index}
        if image.get("url"):
            fetch = partial(
                download, client, image["url"], folder, stem, "image", max_bytes
            )
            jobs.append(SaveJob(source=image["url"], save=partial(tagged, tags, fetch)))
        else:
            # map() decodes as write_file reads, so that a bad payload is this image's save error.
            chunks = map(base64.b64decode, [item["b64_json"]])
            write = partial(write_file, folder, stem, chunks, "image", max_bytes)
            jobs.append(
                SaveJob(
                    source=f"image {index} (b64_json)",
                    save=partial(tagged, tags, write),
                )
            )
    return {**result, **save_each(jobs)}


async def video_takes(
    studio: Studio, plan: Plan, body: dict[str, Any], follow: Following, takes: int
) -> Task:
    """Several takes of one video: each its own task (take i with seed + i when a seed is given), created one after
    another on the model the first went to, then waited for and saved together, progress counted in takes. A take
    that fails is its own entry; the rest go on. The day's limit sees every take before the first is sent. The
    result is the first take's, with every take under `takes`."""
    await check_room(studio, follow.api_key, plan.quote)
    outcomes: list[Task] = []
    for take in range(takes):
        try:
            created, note = await studio.lanes.slow.run(
                create_task,
                studio,
                plan,
                seeded(body, take),
                follow.api_key,
                follow.save_to,
            )
        except DoubaoError as error:
            outcomes.append({"take": take, "error": str(error)})
            continue
        # The next takes go where this one went: a default that fell through is not tried again.
        plan = plan._replace(choice=plan.choice._replace(models=(created["model"],)))
        outcomes.append({"take": take, **created, **({"note": note} if note else {})})
    made = [outcome for outcome in outcomes if "task_id" in outcome]
    if not made:
        raise no_take_made(o["error"] for o in outcomes)
    counted = replace(follow, asked=None)
    followed = {
        t["task_id"]: t for t in await follow_all(studio, made, counted, "takes")
    }
    every = []
    for outcome in outcomes:
        task = followed.get(outcome.get("task_id", ""), outcome)
        # Unfinished with a folder: the watcher saves it when it finishes.
        if follow.save_to and task.get("status") in UNFINISHED_STATUSES:
            task = save_later(studio, task, follow.save_to, follow.api_key)
        cost = {**outcome.get("cost", {}), **task.get("cost", {})}
        every.append(with_fields(task, take=outcome["take"], cost=cost))
    done = sum(task.get("status") in FINAL_STATUSES for task in every)
    first = next(task for task in every if "task_id" in task)
    return with_fields(
        first,
        takes=[listed(task) for task in every],
        usage=summed_usage(task.get("usage") for task in every),
        cost=summed_cost(studio, [task.get("cost") for task in every]),
        next_step=f"{done} of {takes} takes done. Follow the others with list_video_tasks and the takes' "
        "task_ids (wait_seconds, save_dir).",
    )


async def image_takes(
    studio: Studio,
    plan: Plan,
    body: dict[str, Any],
    api_key: str,
    save_to: Folder | None,
    report: Report,
    takes: int,
) -> ImageResult:
    """Several takes of one image call: each its own request (take i with seed + i when a seed is given), at once
    within the lanes. Every image and error says its take; a take that fails is an error of its own, and the rest
    go on."""
    await check_room(studio, api_key, plan.quote)
    results: list[Task] = [{} for _ in range(takes)]

    async def one(take: int) -> None:
        try:
            made = await make_images(
                studio, plan, seeded(body, take), api_key, save_to, report
            )
        except DoubaoError as error:
            results[take] = {"error": str(error)}
            return
        results[take] = dict(made)

    async with anyio.create_task_group() as group:
        for take in range(takes):
            group.start_soon(one, take)
    merged: Task = {"images": [], "errors": []}
    for take, result in enumerate(results):
        merged["images"] += [
            {**image, "take": take} for image in result.get("images", [])
        ]
        merged["errors"] += [{**e, "take": take} for e in result.get("errors", [])]
        if "error" in result:
            merged["errors"].append(
                {
                    "index": -1,
                    "take": take,
                    "code": "TakeFailed",
                    "message": result["error"],
                }
            )
        for key in ("saved_files", "save_errors"):
            if result.get(key):
                merged.setdefault(key, []).extend(result[key])
    made = [result for result in results if "error" not in result]
    if not made:
        raise no_take_made(r["error"] for r in results)
    return cast(
        ImageResult,
        {
            **({"model": made[0]["model"]} if "model" in made[0] else {}),
            **merged,
            "usage": summed_usage(result.get("usage") for result in results),
            "cost": summed_cost(studio, [result.get("cost") for result in results]),
            "takes": [
                {
                    "take": i,
                    **(
                        {"error": r["error"]}
                        if "error" in r
                        else {"model": r.get("model")}
                    ),
                }
                for i, r in enumerate(results)
            ],
            "note": made[0]["note"],
        },
    )


def no_take_made(errors: Iterable[str]) -> DoubaoError:
    """Every take failed: the call fails, with each take's error in order."""
    told = "; ".join(f"take {take}: {error}" for take, error in enumerate(errors))
    return DoubaoError(f"No take was made: {told}")


async def check_room(studio: Studio, api_key: str, quote: Quote) -> None:
    """Refuse the whole call, before anything is sent, when the day's limit has no room for all of it."""
    refusal = await studio.lanes.quick.run(room_for, studio, api_key, quote)
    if refusal:
        raise DoubaoError(refusal)


def seeded(body: dict[str, Any], take: int) -> dict[str, Any]:
    """Take `take`'s body: with seed + take when a seed was given (-1, random, stays random)."""
    seed = body.get("seed")
    if take and isinstance(seed, int) and seed >= 0:
        return {**body, "seed": seed + take}
    return body


def summed_usage(usages: Iterable[Any]) -> dict[str, Any]:
    """Every number in the takes' usage, summed (nested objects, such as tool_usage, summed likewise)."""
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in as_object(usage).items():
            if isinstance(value, dict):
                total[key] = summed_usage([total.get(key, {}), value])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


def summed_cost(studio: Studio, costs: list[Any]) -> Cost:
    """The takes' cost: their estimates summed, and what was billed once every take has said."""
    found = [as_object(cost) for cost in costs]
    total = Cost(currency=studio.spend.book.currency)
    estimates = [c["estimate"] for c in found if "estimate" in c]
    if estimates:
        total["estimate"] = round(sum(estimates), 4)
    if found and all("billed" in c for c in found):
        total["billed"] = round(sum(c["billed"] for c in found), 4)
    total["basis"] = f"{len(found)} takes, each as its own entry says"
    return total


def reason_of(error: BaseException) -> str:
    """An error as a clause: our own text, or only the kind of an unexpected one (its text may say anything)."""
    return (
        str(error)
        if isinstance(error, DoubaoError)
        else f"unexpected {type(error).__name__}"
    )


async def list_page(
    studio: Studio,
    filters: Filters,
    page_num: int | None,
    page_size: int | None,
    api_key: str,
) -> Task:
    """A page of the key's tasks, as Ark lists them."""

    def listing_page() -> Task:
        answer = studio.client.list_tasks(
            list_query(filters, [], page_num, page_size), api_key
        )
        listed = shape_task_list(answer)
        return {
            "total": listed["total"],
            "tasks": observe(studio, cast(list[Task], listed["tasks"]), api_key),
        }

    return await studio.lanes.quick.run(listing_page)


async def tasks_asked_for(
    studio: Studio,
    task_ids: list[str],
    api_key: str,
    filters: Filters,
) -> list[Task]:
    """Every task of `task_ids`, in that order, one entry each: from list requests with the filters given, and a GET
    for each a list left out (then kept only where it passes the filters). One that cannot be found or checked
    is an entry with status "unknown", its error and what to do: never dropped."""
    outcomes: dict[str, Task | Exception] = {}
    await look_up(studio, task_ids, api_key, outcomes.__setitem__, filters=filters)
    tasks: list[Task] = []
    for task_id in task_ids:
        outcome = outcomes[task_id]
        if isinstance(outcome, Exception):
            tasks.append(unknown_task(task_id, outcome))
        elif passes(outcome, filters):
            tasks.append(outcome)
    return tasks


def listed_by_id(
    studio: Studio,
    task_ids: list[str],
    api_key: str,
    retry: bool,
    filters: Filters,
) -> dict[str, Task]:
    """`tasks_by_id`, observed. Runs on a worker thread."""
    found = tasks_by_id(studio.client, task_ids, api_key, retry, filters)
    return {
        task["task_id"]: task for task in observe(studio, list(found.values()), api_key)
    }


class Filters(NamedTuple):
    """What a task list is filtered by, besides task ids."""

    status: str | None = None
    model: str | None = None
    service_tier: str | None = None


NO_FILTERS = Filters()


def tasks_by_id(
    client: ArkClient,
    task_ids: list[str],
    api_key: str,
    retry: bool = True,
    filters: Filters = NO_FILTERS,
) -> dict[str, Task]:
    """These tasks by list requests (`filter.task_ids`, and any other `filters`), each for a page that holds its ids,
    and paged on while Ark says there is more than it sent: those of them Ark returned, by id, shaped. Runs on a
    worker thread."""
    wanted = list(dict.fromkeys(task_ids))
    found: dict[str, Task] = {}
    for start in range(0, len(wanted), LIST_PAGE_TASKS):
        found.update(
            one_page_of_ids(
                client,
                wanted[start : start + LIST_PAGE_TASKS],
                api_key,
                retry,
                filters,
            )
        )
    return found


def one_page_of_ids(
    client: ArkClient,
    ids: list[str],
    api_key: str,
    retry: bool,
    filters: Filters,
) -> dict[str, Task]:
    """Tasks of at most one page's ids, paged on while Ark says it has more than it sent and each page brings a task
    not seen yet (a list that lies repeats itself): at most one page per task."""
    found: dict[str, Task] = {}
    page, size, seen = 1, len(ids), 0
    while True:
        query = list_query(filters, ids, page if page > 1 else None, size)
        listed = client.list_tasks(query, api_key, retry=retry)
        items = [
            task for task in shape_items(listed.get("items")) if task["task_id"] in ids
        ]
        known = len(found)
        found = {
            task["task_id"]: task for task in one_per_task([*found.values(), *items])
        }
        seen += len(items)
        # Ark's own page size, where it sends fewer than asked for.
        size = min(size, len(items)) or size
        more = (clean_int(listed.get("total")) or 0) > seen and len(found) > known
        if not more or len(found) == len(ids):
            return found
        page += 1


def list_query(
    filters: Filters,
    task_ids: Iterable[str],
    page_num: int | None,
    page_size: int | None,
) -> list[tuple[str, Any]]:
    """Query pairs, not a dict: Ark wants `filter.task_ids` repeated once per id."""
    pairs = [
        ("page_num", page_num),
        ("page_size", page_size),
        ("filter.status", filters.status),
        ("filter.model", filters.model),
        ("filter.service_tier", filters.service_tier),
    ]
    return [(k, v) for k, v in pairs if v is not None] + [
        ("filter.task_ids", t) for t in task_ids
    ]


def one_per_task(tasks: Iterable[Task]) -> list[Task]:
    """One entry per task, where it first appears: a list that names a task twice (an upstream that lies, or a
    task listed as it changed) never yields two, and a final status is never replaced by an unfinished one."""
    kept: dict[str, Task] = {}
    for task in tasks:
        seen = kept.get(task["task_id"])
        if seen is None or (
            seen["status"] not in FINAL_STATUSES and task["status"] in FINAL_STATUSES
        ):
            kept[task["task_id"]] = task
    return list(kept.values())


def passes(task: Mapping[str, Any], filters: Filters) -> bool:
    """A task asked about alone, by the filters a list would have applied: only where it says what they test (an
    endpoint id filter is Ark's to apply: the task names its real model)."""
    if filters.status and task["status"] != filters.status:
        return False
    if filters.service_tier and task.get("service_tier") not in (
        None,
        filters.service_tier,
    ):
        return False
    if filters.model and not filters.model.startswith("ep-"):
        return task.get("model") in (None, filters.model)
    return True


async def follow_all(
    studio: Studio, tasks: list[Task], follow: Following, counted: str = ""
) -> list[Task]:
    """Wait for every task, then save each succeeded one when asked; progress counts them (as `counted`: takes)."""
    tasks = await wait_all(studio, tasks, follow, counted)
    if follow.save_to:
        tasks = await save_all(studio, tasks, follow.save_to)
    return tasks


async def wait_all(
    studio: Studio, tasks: list[Task], follow: Following, counted: str = ""
) -> list[Task]:
    """Wait until every task is final or the time is up: one wait per task, each timed by its own estimate, their
    polls shared. Progress counts the tasks done: `2 of 3 done` (`2 of 3 takes done`), at each task done and else
    at most once a BATCH_PROGRESS_SECONDS."""
    found = {task["task_id"]: task for task in tasks}
    counter = DoneCounter(total=len(tasks), report=follow.report, counted=counted)
    counter.done = sum(task["status"] in FINAL_STATUSES for task in tasks)

    async def one(task: Task) -> None:
        counted = replace(follow, report=counter.tell, asked=None)
        waited, _ = await wait_timed(studio, task, counted)
        found[task["task_id"]] = waited
        counter.done += waited["status"] in FINAL_STATUSES
        await counter.tell()

    await counter.tell()
    async with anyio.create_task_group() as group:
        for task in tasks:
            if task["status"] not in FINAL_STATUSES:
                group.start_soon(one, task)
    return [found[task["task_id"]] for task in tasks]


@dataclass
class DoneCounter:
    """A batch wait's progress: how many of its tasks are done."""

    total: int
    report: Report
    # What is counted, when said ("takes").
    counted: str = ""
    done: int = 0
    told: int = -1
    sent: float = 0.0

    async def tell(self, *_: Any) -> None:
        """Report the count when it changed, and else at most once a BATCH_PROGRESS_SECONDS."""
        if (
            self.done == self.told
            and time.monotonic() - self.sent < BATCH_PROGRESS_SECONDS
        ):
            return
        self.sent, self.told = time.monotonic(), self.done
        of = f"{self.total} {self.counted}" if self.counted else f"{self.total}"
        await self.report(self.done, self.total, f"{self.done} of {of} done")


async def save_all(studio: Studio, tasks: list[Task], folder: Folder) -> list[Task]:
    """Each succeeded task saved (see `save`), all at once in the slow lane."""
    saved = list(tasks)

    async def one(index: int) -> None:
        saved[index] = await save_task(studio, saved[index], folder)

    async with anyio.create_task_group() as group:
        for index, task in enumerate(tasks):
            if task["status"] == "succeeded":
                group.start_soon(one, index)
    return saved


async def cancel_task(studio: Studio, task_id: str, api_key: str) -> str:
    """Cancel a queued task or delete a finished one's record: its status before. Ark refuses the others."""
    status = (await look_at(studio, task_id, api_key))["status"]

    def delete() -> None:
        studio.client.delete_task(task_id, api_key)
        # Nothing left to save: no watcher, now or after a restart, waits for it.
        if studio.record:
            studio.record.gave_up(task_id, None)

    try:
        await studio.lanes.quick.run(delete)
    except ArkAPIError as error:
        error.facts.task_status = status
        raise
    return status


# --- The asset library: real people and recurring characters, as asset:// ids -----------------------------------------
# Seedance 2.x takes a real person's face only from Ark's asset library. With the library's keys set, four tools
# reach it from the conversation: add_asset (media into a subject's group, made on first use, then waited for until
# Active), list_assets, remove_asset (asked of the person first) and verify_person (the liveness check that makes a
# real person's group). A subject is a name the person chooses: an AIGC group of that exact name, or the
# LivenessFace group its verification made, which the task record remembers. CreateAsset is paced to the tier's
# rate, and no Create* is sent twice: where its outcome is unknown, the library is looked at instead.


class Person(NamedTuple):
    """The person a subject is, verified or being verified: their LivenessFace group once they passed, the
    token and link of the check while they do it, and when it started (unix seconds)."""

    group_id: str | None = None
    token: str | None = None
    link: str | None = None
    started: float = 0.0


class People:
    """Which subject each LivenessFace group is, and the checks under way: in the task record (shared by its
    processes, kept across restarts) and in this process, which is all there is without a record."""

    def __init__(self, record: Record | None, account: str):
        self.record, self.account = record, account
        self.known: dict[str, Person] = {}

    def get(self, subject: str) -> Person | None:
        """The person this subject is, if any: the record says (another process may have tied or removed them),
        and this process where the record cannot be read now."""
        if self.record is not None:
            readable, found = self.record.person(self.account, subject)
            if found is not None:
                self.known[subject] = found
            elif readable:
                self.known.pop(subject, None)
        return self.known.get(subject)

    def put(self, subject: str, person: Person) -> None:
        self.known[subject] = person
        if self.record is not None:
            self.record.tie_person(self.account, subject, person)

    def forget(self, subject: str) -> None:
        self.known.pop(subject, None)
        if self.record is not None:
            self.record.forget_person(self.account, subject)

    def by_group(self) -> dict[str, str]:
        """Each verified person's subject, by their LivenessFace group id (read once for a whole listing)."""
        everyone = dict(self.known)
        if self.record is not None:
            everyone.update(self.record.people(self.account))
        return {p.group_id: name for name, p in everyone.items() if p.group_id}


class Pace:
    """CreateAsset's rate: one call every 60 / rate seconds, each caller given its turn in order, and twice as slow
    after each rate limit (to one a minute at most). A caller waiting for its turn is told so, as progress."""

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ):
        self.interval = 60.0 / per_minute
        self.clock, self.sleep = clock, sleep
        self.next_at = -math.inf

    async def turn(self, report: Report) -> None:
        at = max(self.clock(), self.next_at)
        self.next_at = at + self.interval
        while (left := at - self.clock()) > 0:
            await report(
                0,
                None,
                f"waiting {left:.0f} s: the library takes {60 / self.interval:g} new assets a minute",
            )
            await self.sleep(min(left, PROGRESS_EVERY_SECONDS))

    def slow_down(self) -> None:
        self.interval = min(self.interval * 2, 60.0)
        self.next_at = max(self.next_at, self.clock() + self.interval)


class AssetLibrary:
    """One server's way into the asset library: its settings, the Ark client's exchanges, CreateAsset's pace and the
    subjects that are people. Its clock and sleep time the waits (tests give their own)."""

    def __init__(
        self,
        settings: AssetSettings,
        client: ArkClient,
        record: Record | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        wall: Callable[[], float] = time.time,
    ):
        self.settings, self.client = settings, client
        # Waits are timed on `clock`; a verification's 30 minutes on `wall` (its start is kept in the record).
        self.clock, self.sleep, self.wall = clock, sleep, wall
        self.pace = Pace(settings.creates_per_minute, clock, sleep)
        account = (
            key_fingerprint(f"{settings.access_key}@{settings.url}/{settings.project}")
            or ""
        )
        self.people = People(record, account)
        # Finding a subject's group, and making it when there is none: one call at a time, so a new subject gets one.
        self.grouping = asyncio.Lock()
        self.remembered = record is not None

    def call(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One call (blocking: run it in a lane)."""
        return asset_call(self.client, self.settings, action, body)


def library_of(studio: Studio) -> AssetLibrary:
    if studio.library is None:
        raise DoubaoError("The asset library needs its keys: see docs/assets.md.")
    return studio.library


async def ask_library(
    studio: Studio, action: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    return await studio.lanes.quick.run(library_of(studio).call, action, body)


class AssetOut(TypedDict):
    asset: str
    name: NotRequired[str]
    media_type: NotRequired[str]
    status: str


class AssetResult(TypedDict):
    subject: str
    group_id: str
    asset: str
    status: str
    next_step: str
    uploaded: NotRequired[dict[str, Any]]


class SubjectOut(TypedDict):
    subject: str
    group_id: str
    person: bool
    assets: list[AssetOut]


class AssetListing(TypedDict):
    subjects: list[SubjectOut]
    note: NotRequired[str]


class Removal(TypedDict):
    removed: list[str]
    message: str


class Verification(TypedDict):
    subject: str
    status: Literal["open_link", "waiting", "verified", "expired"]
    message: str
    link: NotRequired[str]
    expires_at: NotRequired[str]
    group_id: NotRequired[str]


def check_subject(subject: str) -> str:
    name = subject.strip()
    if not name or len(name) > SUBJECT_MAX_CHARS or not name.isprintable():
        raise ValueError(
            f"a subject is a name of 1-{SUBJECT_MAX_CHARS} printable characters, such as 'Mia' or 'the fox'"
        )
    return name


def check_asset_id(given: str) -> str:
    found = given.strip().removeprefix("asset://")
    if not re.fullmatch(ASSET_ID_PATTERN, found):
        raise ValueError(
            "an asset id is what add_asset or list_assets returned, such as asset://asset-2026..."
        )
    return found


SubjectName = Annotated[
    str,
    Field(description="A person's or character's name."),
    AfterValidator(check_subject),
]
AssetMedia = Annotated[str, Field(description="An https URL or a file path.")]
AssetId = Annotated[
    str, Field(description="An asset:// id."), AfterValidator(check_asset_id)
]
AssetWait = Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)]


@tool(
    new_work=True,
    assets=True,
    title="Add to the asset library",
    read_only_hint=False,
    destructive_hint=False,
    idempotent_hint=False,
)
async def add_asset(
    ctx: Context,
    subject: SubjectName,
    media: AssetMedia,
    media_type: Literal["image", "video", "audio"] | None = None,
    wait_seconds: AssetWait = ASSET_WAIT_SECONDS,
) -> AssetResult:
    """Add a subject's photo, video or audio to Ark's asset library (a real person: verify_person first); returns
    its asset:// id for generate_video."""
    studio = studio_of(ctx)
    library = library_of(studio)
    until = library.clock() + wait_seconds
    source = await studio.lanes.quick.run(
        asset_source, studio.config, media, media_type
    )
    group = await subject_group(studio, subject, make=True)
    assert group is not None
    url, uploaded = source.url, None
    if source.ref:
        url, uploaded = await upload_for_library(studio, source.ref)
    kind = source.media
    asset_id = await create_asset(
        studio, group, url, kind, subject, ctx.report_progress
    )
    asset = f"asset://{asset_id}"
    steps = {
        "Active": f"Pass {asset} to generate_video (Seedance 2.x) as {ASSET_ARGUMENT[kind]}.",
        "Failed": "The library could not use this media: try another photo or clip.",
    }
    try:
        status = await wait_active(studio, asset_id, until, ctx.report_progress)
        step = steps.get(
            status,
            f"Still processing: call list_assets with subject {subject!r} in a moment.",
        )
    # The asset exists: its id comes back, whatever the wait met.
    except DoubaoError as error:
        status = "unknown"
        step = f"It was added, but checking it failed ({error}): see list_assets with subject {subject!r}."
    result = AssetResult(
        subject=subject, group_id=group.id, asset=asset, status=status, next_step=step
    )
    if uploaded:
        result["uploaded"] = uploaded._asdict()
    return result


# Where an asset of each kind goes in generate_video.
ASSET_ARGUMENT = {
    "image": "first_frame or reference_images",
    "video": "reference_videos",
    "audio": "reference_audios",
}


class AssetSource(NamedTuple):
    """What CreateAsset is to fetch, and its kind: an https URL as given, or a local file to upload first (its kind
    read from its bytes, or checked against the one given)."""

    url: str
    media: str
    ref: MediaRef | None = None


def asset_source(config: Config, media: str, media_type: str | None) -> AssetSource:
    """The media checked before anything is sent: an https URL (never fetched here), or a local file that uploads
    (DOUBAO_UPLOADS) can give a link. Runs on a worker thread: it opens the file."""
    given = media.strip()
    parts = urlsplit(given)
    if parts.scheme == "https" and parts.netloc:
        return AssetSource(url=given, media=media_type or "image")
    if parts.scheme in ("http", "data", "asset"):
        raise DoubaoError(
            f"media: the asset library takes one public https URL or a file path, not {parts.scheme}: "
            f"({given[:60]!r})."
        )
    path = local_file(
        MediaRef(argument="media", media=media_type or "image", given=given),
        given,
        config,
    )
    if path is None:
        raise DoubaoError(f"media: {given[:80]!r} is not an https URL or a file path.")
    if config.uploads is None:
        raise DoubaoError(
            "media: the asset library fetches media from a link, so a local file is uploaded to your own object "
            "storage first: set DOUBAO_UPLOADS=s3://bucket/prefix and its credentials (docs/uploads.md), or give an "
            "https URL."
        )
    file, _ = open_input(
        path,
        config.allowed_dir,
        "media",
        VIDEO_INPUT_MAX_BYTES,
        "a photo, video or audio",
    )
    with file:
        found = sniff(file.read(SNIFF_BYTES))
    kind = media_type or next(
        (m for m in MEDIA if found and found.mime.startswith(f"{m}/")), "image"
    )
    return AssetSource(
        url="", media=kind, ref=MediaRef(argument="media", media=kind, given=str(path))
    )


async def upload_for_library(studio: Studio, ref: MediaRef) -> tuple[str, Uploaded]:
    """A local file in the person's storage (checked as the medium it is, by its bytes), with a link that outlives
    the library's processing."""
    assert studio.uploader is not None
    uploading = Uploading(studio.uploader, UPLOAD_LINK_SECONDS, None, studio.record)
    url = await studio.lanes.slow.run(
        uploading.put, ref, Path(ref.given), studio.config
    )
    return url, uploading.done[-1]


class Group(NamedTuple):
    """A subject's group in the library: its id, and its type (AIGC, or a verified person's LivenessFace)."""

    id: str
    type: str


async def subject_group(studio: Studio, subject: str, make: bool) -> Group | None:
    """The subject's group: the person's LivenessFace group once verified, else the AIGC group of exactly this name
    (made when `make`, once: calls for a new subject take turns, and a creation whose outcome is unknown is looked
    for, never sent again)."""
    library = library_of(studio)
    person = await studio.lanes.quick.run(library.people.get, subject)
    if person and person.group_id:
        return Group(person.group_id, "LivenessFace")
    if person and make and library.wall() < person.started + VERIFY_TOKEN_SECONDS:
        raise DoubaoError(
            f"{subject}'s verification is not finished: call verify_person with subject {subject!r} and "
            "wait_seconds first, so that their media goes into their own group."
        )
    async with library.grouping:
        found = await groups_named(studio, subject)
        if found or not make:
            return found
        body = {
            "Name": subject,
            "Description": "made by doubao-mcp",
            "GroupType": "AIGC",
        }
        try:
            made = await ask_library(studio, "CreateAssetGroup", body)
        except (AssetAPIError, ArkConnectionError) as error:
            if not unknown_outcome(error):
                raise
            found = await groups_named(studio, subject)
            if found:
                return found
            raise DoubaoError(
                f"Making the group for {subject!r} may or may not have worked ({error}). It is not in the library "
                "yet: call list_assets in a minute before adding again."
            ) from None
    return Group(library_id(made.get("Id"), "CreateAssetGroup"), "AIGC")


async def groups_named(studio: Studio, subject: str) -> Group | None:
    """The AIGC group named exactly `subject` (the list's name filter matches loosely); two are an error."""
    groups, _ = await library_list(
        studio, "ListAssetGroups", {"GroupType": "AIGC", "Name": subject}
    )
    named = [g for g in groups if g.get("Name") == subject]
    if len(named) > 1:
        ids = ", ".join(str(g.get("Id"))[:60] for g in named[:4])
        raise DoubaoError(
            f"The library has {len(named)} groups named {subject!r} ({ids}): rename or remove one in the Ark console, "
            "or use another subject."
        )
    return (
        Group(library_id(named[0].get("Id"), "ListAssetGroups"), "AIGC")
        if named
        else None
    )


async def library_list(
    studio: Studio, action: str, filters: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Every item of a list, page by page, each once (by Id); whether the list ended, within ASSET_PAGES_MAX pages
    (a list that never ends, or repeats its pages, is cut)."""
    items: dict[str, dict[str, Any]] = {}
    token: str | None = None
    tokens: set[str] = set()
    for _ in range(ASSET_PAGES_MAX):
        body: dict[str, Any] = {"Filter": dict(filters), "MaxResults": ASSET_PAGE}
        if token:
            body["NextToken"] = token
        page = await ask_library(studio, action, body)
        found = page.get("Items")
        for item in found if isinstance(found, list) else []:
            if isinstance(item, dict) and re.fullmatch(
                ASSET_ID_PATTERN, str(item.get("Id"))
            ):
                items.setdefault(item["Id"], item)
            else:
                log.warning(
                    "Left out an item of the library's %s: it has no usable Id.", action
                )
        token = clean_text(page.get("NextToken"), 400)
        if not token or token in tokens:
            return list(items.values()), True
        tokens.add(token)
    return list(items.values()), False


def library_id(value: Any, action: str) -> str:
    """An id from the library, checked: it goes into asset:// ids and later calls."""
    if isinstance(value, str) and re.fullmatch(ASSET_ID_PATTERN, value):
        return value
    raise ArkConnectionError(
        f"The asset library's answer to {action} has no usable id ({str(value)[:60]!r})."
    )


def unknown_outcome(error: Exception) -> bool:
    """Whether a call may have been done: a 5xx, or no answer from a connection that was made."""
    if isinstance(error, AssetAPIError):
        return error.outcome_unknown
    cause = error.__cause__
    return not (isinstance(cause, requests.RequestException) and never_connected(cause))


async def create_asset(
    studio: Studio,
    group: Group,
    url: str,
    media_type: str,
    subject: str,
    report: Report,
) -> str:
    """CreateAsset at its pace, under a name no other asset has (so that it can be looked for by exact match). A
    rate limit slows the pace and tries again: nothing was made. An unknown outcome is looked for, never re-sent."""
    library = library_of(studio)
    name = f"{subject[:40]}-{uuid.uuid4().hex[:12]}"
    body = {
        "GroupId": group.id,
        "URL": url,
        "AssetType": media_type.title(),
        "Name": name,
    }
    for _ in range(ASSET_RATE_LIMIT_TRIES):
        await library.pace.turn(report)
        try:
            made = await ask_library(studio, "CreateAsset", body)
            return library_id(made.get("Id"), "CreateAsset")
        except (AssetAPIError, ArkConnectionError) as error:
            if isinstance(error, AssetAPIError) and error.rate_limited:
                library.pace.slow_down()
                continue
            if not unknown_outcome(error):
                raise
            failure = error
        looked = {"GroupType": group.type, "GroupIds": [group.id], "Name": name}
        assets, _ = await library_list(studio, "ListAssets", looked)
        same = [a for a in assets if a.get("Name") == name]
        if same:
            return library_id(same[0].get("Id"), "ListAssets")
        raise DoubaoError(
            f"Adding the asset may or may not have worked ({failure}), and no asset named {name} is in the library "
            f"yet: call list_assets with subject {subject!r} in a minute before adding it again."
        ) from None
    raise DoubaoError(
        "The asset library kept refusing CreateAsset for its rate limit: try again in a minute, or set "
        "DOUBAO_ASSET_CREATES_PER_MINUTE to your tier's rate."
    )


async def wait_active(
    studio: Studio, asset_id: str, until: float, report: Report
) -> str:
    """The asset's status once it is Active or Failed, or when the wait is over (Processing)."""
    library = library_of(studio)
    started = library.clock()
    while True:
        found = await ask_library(studio, "GetAsset", {"Id": asset_id})
        status = clean_text(found.get("Status"), NAME_MAX_CHARS) or "Processing"
        left = until - library.clock()
        if status in ("Active", "Failed") or left <= 0:
            return status
        await report(
            library.clock() - started,
            None,
            f"the library is processing the asset ({status})",
        )
        await library.sleep(min(library.settings.poll_seconds, left))


@tool(
    assets=True,
    title="List the asset library",
    read_only_hint=True,
    destructive_hint=False,
    idempotent_hint=True,
)
async def list_assets(ctx: Context, subject: SubjectName | None = None) -> AssetListing:
    """The asset library's subjects and their assets."""
    studio = studio_of(ctx)
    library = library_of(studio)
    filters = {"GroupType": "AIGC"}
    if subject:
        filters["Name"] = subject
    groups, complete = await library_list(studio, "ListAssetGroups", filters)
    people, people_complete = await library_list(
        studio, "ListAssetGroups", {"GroupType": "LivenessFace"}
    )
    named: list[tuple[str, dict[str, Any], bool]] = []
    for group in groups:
        if not subject or group.get("Name") == subject:
            named.append((clean_text(group.get("Name")) or "?", group, False))
    subjects_of = await studio.lanes.quick.run(library.people.by_group)
    for group in people:
        who = subjects_of.get(str(group.get("Id")))
        if not subject or who == subject:
            named.append(
                (
                    who or clean_text(group.get("Name")) or "a verified person",
                    group,
                    True,
                )
            )
    found: dict[str, list[AssetOut]] = {}
    shown = hidden = 0
    for kind, are_people in (("AIGC", False), ("LivenessFace", True)):
        ids = [str(g.get("Id")) for _, g, p in named if p == are_people]
        for at in range(0, len(ids), ASSET_GROUPS_PER_LIST):
            chunk = ids[at : at + ASSET_GROUPS_PER_LIST]
            assets, ended = await library_list(
                studio, "ListAssets", {"GroupType": kind, "GroupIds": chunk}
            )
            complete = complete and ended
            for item in assets:
                asset = asset_out(item)
                if asset and shown < ASSETS_SHOWN_MAX:
                    found.setdefault(str(item.get("GroupId")), []).append(asset)
                    shown += 1
                elif asset:
                    hidden += 1
    subjects = [
        SubjectOut(
            subject=name,
            group_id=library_id(group.get("Id"), "ListAssetGroups"),
            person=is_person,
            assets=found.get(str(group.get("Id")), []),
        )
        for name, group, is_person in named
    ]
    listing = AssetListing(subjects=subjects)
    notes = []
    if hidden:
        notes.append(
            f"{hidden} more assets are not shown: pass subject to see one subject's."
        )
    if not (complete and people_complete):
        notes.append(
            f"The library's list did not end within {ASSET_PAGES_MAX} pages: this is what it gave."
        )
    if notes:
        listing["note"] = " ".join(notes)
    return listing


def asset_out(item: Mapping[str, Any]) -> AssetOut | None:
    """An asset as a listing shows it, never its URL (a link that lasts about 12 hours)."""
    asset_id = item.get("Id")
    if not isinstance(asset_id, str) or not re.fullmatch(ASSET_ID_PATTERN, asset_id):
        return None
    out = AssetOut(
        asset=f"asset://{asset_id}", status=clean_text(item.get("Status")) or "unknown"
    )
    name, kind = clean_text(item.get("Name")), clean_text(item.get("AssetType"))
    if name:
        out["name"] = name
    if kind:
        out["media_type"] = kind.lower()
    return out


class RemovalConsent(BaseModel):
    """The question's one field."""

    remove: bool = Field(
        default=False, title="Remove", description="Yes: remove it for good"
    )


def ask_before_removing(
    ctx: Context, asset_id: str | None, subject: str | None
) -> Elicit[RemovalConsent] | Unasked:
    """remove_asset's question to the person; where the client cannot ask, the person's setting decides (an
    argument from the model is not their consent)."""
    if bool(asset_id) == bool(subject):
        return Unasked(
            "Give asset_id (one asset) or subject (the subject and all its assets): one of them."
        )
    what = (
        f"the asset asset://{asset_id}"
        if asset_id
        else f"the subject {subject!r} and all its assets"
    )
    if can_ask(ctx):
        return Elicit(
            f"Remove {what} from Ark's asset library? This cannot be undone.",
            RemovalConsent,
        )
    settings = studio_of(ctx).config.assets
    if settings and settings.allow_remove:
        return Unasked()
    return Unasked(
        f"Not removed: removing {what} cannot be undone, and this client cannot ask the person to confirm it. The "
        "person can remove it in the Ark console, or set DOUBAO_ASSET_ALLOW_REMOVE=1 in this server's settings to "
        "let remove_asset remove without asking."
    )


RemovalAnswer = Annotated[
    ElicitationResult[RemovalConsent], Resolve(ask_before_removing)
]


@tool(
    assets=True,
    title="Remove from the asset library",
    read_only_hint=False,
    destructive_hint=True,
    idempotent_hint=True,
)
async def remove_asset(
    ctx: Context,
    consent: RemovalAnswer,
    asset_id: AssetId | None = None,
    subject: SubjectName | None = None,
) -> Removal:
    """Remove an asset, or a subject and its assets, from the asset library (asks the person)."""
    studio = studio_of(ctx)
    data = consent.data if isinstance(consent, AcceptedElicitation) else None
    if isinstance(data, Unasked) and data.refusal:
        raise DoubaoError(data.refusal)
    if not (
        isinstance(data, Unasked) or (isinstance(data, RemovalConsent) and data.remove)
    ):
        raise DoubaoError("Not removed: the person did not agree. Nothing was changed.")
    if asset_id:
        await ask_library(studio, "DeleteAsset", {"Id": asset_id})
        return Removal(
            removed=[f"asset://{asset_id}"], message="Removed from the library."
        )
    assert subject is not None
    group = await subject_group(studio, subject, make=False)
    if group is None:
        raise DoubaoError(
            f"No subject named {subject!r} is in the library: see list_assets."
        )
    assets, _ = await library_list(
        studio, "ListAssets", {"GroupType": group.type, "GroupIds": [group.id]}
    )
    removed = []
    for item in assets:
        one = library_id(item.get("Id"), "ListAssets")
        await ask_library(studio, "DeleteAsset", {"Id": one})
        removed.append(f"asset://{one}")
    await ask_library(studio, "DeleteAssetGroup", {"Id": group.id})
    await studio.lanes.quick.run(library_of(studio).people.forget, subject)
    return Removal(
        removed=removed,
        message=f"Removed {subject!r} and its {len(removed)} assets from the library.",
    )


@tool(
    assets=True,
    title="Verify a real person",
    read_only_hint=False,
    destructive_hint=False,
    idempotent_hint=False,
)
async def verify_person(
    ctx: Context, subject: SubjectName, wait_seconds: AssetWait = 0
) -> Verification:
    """Verify a real person for the asset library: the first call gives a link for them to open; call again
    with wait_seconds to finish."""
    studio = studio_of(ctx)
    library = library_of(studio)
    person = await studio.lanes.quick.run(library.people.get, subject)
    if person and person.group_id:
        return verified(library, subject, person.group_id)
    if person is None or not person.token:
        return await start_verification(studio, subject)
    started = library.clock()
    until = started + wait_seconds
    expires = person.started + VERIFY_TOKEN_SECONDS
    while True:
        answer = await ask_library(
            studio, "GetVisualValidateResult", {"BytedToken": person.token}
        )
        # Its pending and failed shapes are not documented: anything but a group is "not yet".
        group = answer.get("GroupId")
        if isinstance(group, str) and re.fullmatch(ASSET_ID_PATTERN, group):
            await studio.lanes.quick.run(
                library.people.put, subject, Person(group_id=group)
            )
            return verified(library, subject, group)
        now = library.wall()
        if now >= expires:
            await studio.lanes.quick.run(library.people.forget, subject)
            return Verification(
                subject=subject,
                status="expired",
                message="The link's 30 minutes are up and the check was not passed: call verify_person again for a "
                "new link.",
            )
        left = min(until - library.clock(), expires - now)
        if left <= 0:
            return Verification(
                subject=subject,
                status="waiting",
                link=person.link or "",
                expires_at=utc_text(expires),
                message=f"Not done yet: {subject} opens the link and does the check; then call verify_person again "
                "with wait_seconds.",
            )
        await ctx.report_progress(
            library.clock() - started, None, f"waiting for {subject} to do the check"
        )
        await library.sleep(min(library.settings.poll_seconds, left))


async def start_verification(studio: Studio, subject: str) -> Verification:
    library = library_of(studio)
    answer = await ask_library(studio, "CreateVisualValidateSession", {})
    token, link = (
        clean_text(answer.get("BytedToken"), 2000),
        clean_text(answer.get("H5Link"), 2000),
    )
    parts = urlsplit(link or "")
    if not token or parts.scheme != "https" or not parts.netloc:
        raise ArkConnectionError(
            "The asset library's answer to CreateVisualValidateSession has no token or link."
        )
    started = library.wall()
    await studio.lanes.quick.run(
        library.people.put, subject, Person(token=token, link=link, started=started)
    )
    return Verification(
        subject=subject,
        status="open_link",
        link=link or "",
        expires_at=utc_text(started + VERIFY_TOKEN_SECONDS),
        message=f"Give {subject} this link to open on their phone: a short liveness check and their consent (one "
        "try; it lasts 30 minutes). Then call verify_person again with wait_seconds to finish.",
    )


def verified(library: AssetLibrary, subject: str, group_id: str) -> Verification:
    message = f"{subject} is verified: add their photo with add_asset (subject {subject!r}), then pass its asset:// id."
    if not library.remembered:
        message += (
            " This server keeps no task record (DOUBAO_STATE_DIR=off): it knows this group is theirs only until it "
            "stops."
        )
    return Verification(
        subject=subject, status="verified", group_id=group_id, message=message
    )


# --- The Ark client: every request, its answer read within a cap, mapped to data or an error --------------------------
# Machinery from here on: each section owns one concern, read when you change it.


class ArkClient:
    """Synchronous client for the two Ark endpoints this server uses, and for result downloads. Call it from
    worker threads. Every exchange has a deadline, every answer a size cap, and no key leaves through an error."""

    def __init__(
        self,
        base_url: str,
        image_timeout: float = DEFAULT_IMAGE_TIMEOUT_SECONDS,
        secrets: Iterable[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
        media_domains: Iterable[str] = (),
    ):
        self.base_url = base_url.rstrip("/")
        self.image_timeout = image_timeout
        # The server's own key, redacted even from a caller's answers; and callers' keys, lately.
        self.server_keys = tuple(s for s in secrets if s)
        self.keys_used: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.media = MediaPolicy(self.base_url, media_domains)
        self.sleep, self.clock = sleep, clock
        self.limits = limits or Limits()
        self.watchdog = Watchdog(clock)
        self.session = requests.Session()
        self.session.max_redirects = MAX_REDIRECTS
        adapter = WatchedAdapter(pool_connections=4, pool_maxsize=self.limits.threads)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = (
            f"doubao-mcp/{__version__} {requests.utils.default_user_agent()}"
        )

    def create_task(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        return self.request("POST", TASKS_PATH, api_key, json=body)

    def request(
        self,
        method: str,
        path: str,
        api_key: str,
        *,
        json: Any = None,
        retry: bool = True,
        params: list[tuple[str, Any]] | None = None,
        seconds: float | None = None,
        read_timeout: float = TASK_READ_TIMEOUT_SECONDS,
    ) -> dict[str, Any]:
        """Every Ark API call goes through here: one place for auth, deadlines, retries, caps and error mapping."""
        url = self.base_url + path
        request_id = uuid.uuid4().hex
        self.remember_key(api_key)
        secrets = (api_key, *self.secrets)
        sent = "\n".join(
            [path, *strings_of(json), *(str(value) for _, value in params or [])]
        )
        if seconds is None:
            seconds = (
                self.limits.task_deadline
                if retry
                else min(read_timeout, self.limits.task_deadline)
            )
        read = partial(read_answer, cap=self.limits.max_answer_bytes)
        try:
            answer = exchange(
                self,
                method,
                url,
                seconds,
                read,
                attempts=MAX_ATTEMPTS if retry else 1,
                read_timeout=read_timeout,
                json=json,
                params=params,
                auth=BearerAuth(api_key),
                headers={"X-Client-Request-Id": request_id},
                # An API that redirects is misconfigured; the key is never sent elsewhere.
                allow_redirects=False,
            )
        except requests.RequestException as error:
            text = f"Ark request failed ({method} {url}): {failure_reason(error, read_timeout)}. "
            text += what_next(error, method, path)
            raise ArkConnectionError(Redactor(secrets, sent)(text)) from error
        return parse_answer(answer, path, secrets, request_id, self.base_url, sent)

    def remember_key(self, api_key: str) -> None:
        self.keys_used[api_key] = None
        self.keys_used.move_to_end(api_key)
        while len(self.keys_used) > KEYS_KEPT:
            self.keys_used.popitem(last=False)

    def close(self) -> None:
        """At shutdown: end every exchange in flight (their threads then finish at once) and the session."""
        self.watchdog.end_all("the server is stopping")
        self.session.close()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every key this client knows: redacted from whatever an upstream says, a download's errors included."""
        return (*self.server_keys, *self.keys_used)

    def get_task(
        self, task_id: str, api_key: str, retry: bool = True
    ) -> dict[str, Any]:
        return self.request(
            "GET", f"{TASKS_PATH}/{quote(task_id, safe='')}", api_key, retry=retry
        )

    def generate_images(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        return self.request(
            "POST",
            IMAGES_PATH,
            api_key,
            json=body,
            seconds=self.image_timeout,
            read_timeout=self.image_timeout,
        )

    def list_tasks(
        self,
        params: list[tuple[str, Any]],
        api_key: str,
        retry: bool = True,
    ) -> dict[str, Any]:
        return self.request("GET", TASKS_PATH, api_key, params=params, retry=retry)

    def delete_task(self, task_id: str, api_key: str) -> dict[str, Any]:
        return self.request(
            "DELETE", f"{TASKS_PATH}/{quote(task_id, safe='')}", api_key
        )


def strings_of(value: Any) -> list[str]:
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


def what_next(error: requests.RequestException, method: str, path: str) -> str:
    """What to do after a request that got no answer: a POST may have been processed, and billed."""
    if never_connected(error):
        return "Check your network, proxy and ARK_BASE_URL, then try again."
    if method == "POST" and path == TASKS_PATH:
        return "Ark may have created the task anyway: check list_video_tasks before trying again."
    if method == "POST":
        return "Ark may have processed it; try again if no result arrives."
    return "Try again in a moment."


def failure_reason(error: requests.RequestException, timeout: float) -> str:
    """The short reason inside requests' long exception texts."""
    if isinstance(error, DeadlineExceeded):
        return str(error)
    if isinstance(error, requests.ConnectTimeout):
        return "timed out while connecting"
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, requests.exceptions.InvalidSchema):
        return (
            f"redirected to a URL that is not http(s) ({clean_text(str(error), 200)})"
        )
    if isinstance(error, requests.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    found = re.findall(
        r"\[Errno -?\d+\] [^'\")]+|Connection aborted|Connection refused|RemoteDisconnected\([^)]*\)|"
        r"IncompleteRead\([^)]*\)",
        str(error),
    )
    return (
        found[-1] if found else f"{type(error).__name__}: {clean_text(str(error), 160)}"
    )


# --- Exchanges: their auth, deadlines and retries, how each is timed, retried and ended -------------------------------
# Every HTTP exchange (an Ark call, a download) is sent here with the key of its call, retried while its failure is
# transient and its deadline leaves room, and held to that deadline. A per-read timeout alone never ends an answer
# that trickles a byte before each timeout, so every exchange is watched by one thread, which ends one that runs
# past its deadline (or below its minimum rate) by shutting its socket. The socket is learnt from the connection
# classes of urllib3's pools, installed in one place: `watch_pools`. Nothing outside this section sets an
# exchange's fields.


class BearerAuth(AuthBase):
    """Passed per request so that the key never lives on the shared session, and ~/.netrc cannot replace it."""

    def __init__(self, api_key: str):
        self.api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.api_key}"
        return request


def exchange(
    client: ArkClient,
    method: str,
    url: str,
    seconds: float,
    read: Callable[[requests.Response, Exchange], T],
    *,
    attempts: int = MAX_ATTEMPTS,
    read_timeout: float = TASK_READ_TIMEOUT_SECONDS,
    min_rate: float = 0.0,
    guard: Guard | None = None,
    deadline: float | None = None,
    **kwargs: Any,
) -> T:
    """One HTTP exchange, retried with backoff while the failure is transient (see `retry_delay`) and the
    deadline `seconds` from now leaves room; `read` consumes the answer kept, within the same deadline."""
    deadline = deadline or client.clock() + seconds
    window = client.limits.rate_window
    tries = 0
    # Ends with the last try's outcome, returned or raised.
    while True:
        tries += 1
        with client.watchdog.watch(
            deadline, seconds, min_rate, window, guard
        ) as watched:
            response, error = attempt(
                client, method, url, deadline, read_timeout, watched, kwargs
            )
            delay = (
                retry_delay(method, tries, response, error)
                if tries < attempts
                else None
            )
            if delay is None or client.clock() + delay + MIN_ATTEMPT_SECONDS > deadline:
                return read_last_try(response, error, watched, read)
            if response is None:
                outcome = type(error).__name__
            else:
                outcome = f"HTTP {response.status_code}"
                response.close()
        path = urlsplit(url).path
        log.info("%s %s: %s; retry %d in %.1f s", method, path, outcome, tries, delay)
        client.sleep(delay)


class DeadlineExceeded(requests.exceptions.Timeout):
    """The watchdog ended the exchange: past its deadline, or slower than its minimum rate."""


class Watchdog:
    """The one thread that holds every exchange to its deadline and rate. It sleeps until the next one is due."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.lock = threading.Condition()
        self.exchanges: set[Exchange] = set()
        # A kept-alive socket serves one exchange at a time.
        self.owners: dict[socket.socket, Exchange] = {}
        self.thread: threading.Thread | None = None
        # When the watchdog thread next looks.
        self.wakes_at = math.inf

    @contextlib.contextmanager
    def watch(
        self,
        deadline: float,
        seconds: float,
        min_rate: float = 0.0,
        window: float = 0.0,
        guard: Guard | None = None,
    ) -> Iterator[Exchange]:
        exchange = Exchange(
            self, self.clock(), deadline, seconds, min_rate, window, guard
        )
        with self.lock:
            self.exchanges.add(exchange)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self.run, name="doubao-watchdog", daemon=True
                )
                self.thread.start()
            # Only an earlier deadline is news: no wake-up per request.
            if exchange.due() < self.wakes_at:
                self.lock.notify()
        CURRENT.exchange = exchange
        try:
            yield exchange
        finally:
            CURRENT.exchange = None
            with self.lock:
                self.exchanges.discard(exchange)
                if (
                    exchange.socket is not None
                    and self.owners.get(exchange.socket) is exchange
                ):
                    del self.owners[exchange.socket]

    def run(self) -> None:
        with self.lock:
            while True:
                now = self.clock()
                for exchange in self.exchanges:
                    reason = exchange.check(now) if exchange.failure is None else None
                    if reason:
                        exchange.failure = reason
                        self.shut(exchange)
                due = [e.due() for e in self.exchanges if e.failure is None]
                self.wakes_at = min(due, default=math.inf)
                self.lock.wait(
                    max(self.wakes_at - self.clock(), WATCHDOG_MIN_SLEEP_SECONDS)
                    if due
                    else None
                )

    def carry(self, exchange: Exchange, sock: socket.socket) -> None:
        """This socket now carries the exchange (told on the requesting thread by the connection classes)."""
        with self.lock:
            exchange.socket, self.owners[sock] = sock, exchange
            if exchange.failure:
                self.shut(exchange)

    def end_all(self, reason: str) -> None:
        with self.lock:
            for exchange in self.exchanges:
                exchange.failure = exchange.failure or reason
                self.shut(exchange)

    def shut(self, exchange: Exchange) -> None:
        if exchange.socket is not None and self.owners.get(exchange.socket) is exchange:
            # The base method: on TLS sockets too, without touching TLS state.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(exchange.socket, socket.SHUT_RDWR)


class Exchange:
    """One HTTP attempt (its redirects included): a deadline, and for downloads a minimum rate over each window and
    a guard on the address it connects to."""

    def __init__(
        self,
        watchdog: Watchdog,
        now: float,
        deadline: float,
        seconds: float,
        min_rate: float,
        window: float,
        guard: Guard | None = None,
    ):
        # `seconds`: the whole call's time, retries included, for messages.
        self.watchdog, self.seconds = watchdog, seconds
        self.deadline, self.min_rate, self.window = deadline, min_rate, window
        self.received, self.window_start, self.window_bytes = 0, now, 0
        self.socket: socket.socket | None = None
        self.failure: str | None = None
        self.guard = guard

    def due(self) -> float:
        """When the watchdog next looks at this exchange."""
        if self.min_rate:
            return min(self.deadline, self.window_start + self.window)
        return self.deadline

    def check(self, now: float) -> str | None:
        """Why this exchange must end now, or None."""
        if now >= self.deadline:
            return f"no complete answer within {self.seconds:g} s"
        if self.min_rate and now >= self.window_start + self.window:
            if self.received - self.window_bytes < self.min_rate * self.window:
                return (
                    f"slower than {self.min_rate / 1024:g} KB/s for {self.window:g} s"
                )
            self.window_start, self.window_bytes = now, self.received
        return None

    def explain(self, error: requests.RequestException) -> requests.RequestException:
        """The watchdog's reason when it ended this exchange (the error seen is only a broken socket)."""
        return DeadlineExceeded(self.failure) if self.failure else error

    def counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """A body's chunks, counted for the minimum rate. A socket the watchdog shut ends a body without a length like
        a complete one: then nothing is kept."""
        for chunk in chunks:
            self.received += len(chunk)
            yield chunk
        if self.failure:
            raise DeadlineExceeded(self.failure)


def attempt(
    client: ArkClient,
    method: str,
    url: str,
    deadline: float,
    read_timeout: float,
    watched: Exchange,
    kwargs: Mapping[str, Any],
) -> tuple[requests.Response | None, requests.RequestException | None]:
    """One try: the answer's head, or why none came (the watchdog's reason where it ended the exchange)."""
    remaining = max(deadline - client.clock(), 0.001)
    timeout = (min(CONNECT_TIMEOUT_SECONDS, remaining), min(read_timeout, remaining))
    try:
        return client.session.request(
            method, url, stream=True, **kwargs, timeout=timeout
        ), None
    except requests.RequestException as failure:
        return None, watched.explain(failure)


def watched(connection_class: type) -> type:
    class Watched(connection_class):
        """Tells the watchdog which socket carries this thread's exchange: once connected, and when reused."""

        def connect(self) -> None:
            super().connect()
            tell_carrier(self.sock)
            check_peer(self)

        def request(self, *args: Any, **kwargs: Any) -> None:
            if self.sock is not None:
                tell_carrier(self.sock)
            super().request(*args, **kwargs)

    return Watched


# The Exchange each thread is making, for the connection classes (`watched`).
CURRENT = threading.local()


def tell_carrier(sock: socket.socket) -> None:
    """Tell the watchdog which socket carries this thread's exchange."""
    exchange = getattr(CURRENT, "exchange", None)
    if exchange is not None:
        exchange.watchdog.carry(exchange, sock)


def check_peer(connection: Any) -> None:
    """The address a download actually connected to, checked again: a name that resolved to a public address when it
    was checked may resolve to a loopback one when connected (DNS rebinding)."""
    exchange = getattr(CURRENT, "exchange", None)
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


WATCHED_POOLS = {
    "http": type(
        "WatchedHTTPPool",
        (HTTPConnectionPool,),
        {"ConnectionCls": watched(HTTPConnection)},
    ),
    "https": type(
        "WatchedHTTPSPool",
        (HTTPSConnectionPool,),
        {"ConnectionCls": watched(HTTPSConnection)},
    ),
}


def watch_pools(manager: Any) -> Any:
    """The one place urllib3's internals are touched: a pool manager's pools are made of Watched connections. Written
    for urllib3 2.x (`PoolManager.pool_classes_by_scheme`), the major version pyproject.toml pins."""
    manager.pool_classes_by_scheme = WATCHED_POOLS
    return manager


class WatchedAdapter(HTTPAdapter):
    """Connection pools whose connections report their sockets to the watchdog, direct and through a proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        # SOCKS brings its own pools: those keep per-read timeouts only.
        if proxy.lower().startswith("socks"):
            return manager
        return watch_pools(manager)


def retry_delay(
    method: str,
    attempt: int,
    response: requests.Response | None = None,
    error: requests.RequestException | None = None,
) -> float | None:
    """Seconds to wait before trying again, or None when this outcome is final.

    Ark's own `x-should-retry: true|false` on an error answer decides first, as in the official SDKs. Else
    GET and DELETE are retried on 429, 5xx, timeouts and dropped connections. POST creates tasks and
    costs money, so it is retried only where Ark cannot have acted on it: a 429, or a connection that
    never opened. Never a second task. An exchange the watchdog ended is never retried: its deadline is spent.
    """
    if error is not None:
        if not retryable_failure(method, error):
            return None
    elif response is not None:
        if not retryable_answer(method, response):
            return None
        asked = retry_after(response.headers.get("Retry-After"))
        if asked is not None:
            return asked if asked <= MAX_RETRY_AFTER_SECONDS else None
    backoff = min(
        RETRY_FIRST_DELAY_SECONDS * 2 ** (attempt - 1), RETRY_MAX_DELAY_SECONDS
    )
    return backoff * random.uniform(1.0, 1.0 + RETRY_JITTER)


def retryable_failure(method: str, error: requests.RequestException) -> bool:
    """A failure with no answer: worth another try where the request cannot have had an effect, or costs nothing."""
    if isinstance(error, DeadlineExceeded) or not isinstance(
        error,
        (requests.ConnectionError, requests.Timeout),
    ):
        return False
    return method != "POST" or never_connected(error)


def retryable_answer(method: str, response: requests.Response) -> bool:
    """An error answer worth another try: as Ark says, else a transient status (for a POST, only a 429)."""
    status, verdict = (
        response.status_code,
        response.headers.get("x-should-retry", "").strip().lower(),
    )
    if status < 400 or verdict == "false":
        return False
    if verdict == "true":
        return True
    return transient_status(status) and (method != "POST" or status == 429)


def transient_status(status: int) -> bool:
    """Rate limiting and server-side failures: worth trying again."""
    return status == 429 or status >= 500


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(
            0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        )
    except (TypeError, ValueError):
        return None


def never_connected(error: requests.RequestException) -> bool:
    """True when the request cannot have reached Ark: DNS failure, refused or timed-out connect."""
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return isinstance(error, requests.ConnectTimeout) or type(reason).__name__ in (
        "NewConnectionError",
        "NameResolutionError",
    )


def read_last_try(
    response: requests.Response | None,
    error: requests.RequestException | None,
    exchange: Exchange,
    read: Callable[[requests.Response, Exchange], T],
) -> T:
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


# --- Answers: read within a cap, parsed, redacted ---------------------------------------------------------------------
# API answers are small and untrusted: read whole within a cap, parsed, and every text in them redacted before
# anything else reads it. Only a non-2xx answer is an ArkAPIError.


def read_answer(
    response: requests.Response,
    exchange: Exchange,
    cap: int,
    api: tuple[str, str] = ("Ark", "ARK_BASE_URL"),
) -> Answer:
    """API answers are small: anything over `cap` is refused before it is parsed (or even read, when declared).
    `api`: whose answer it is, and the setting that says where it lives."""
    declared = response.headers.get("Content-Length", "")
    too_big = ArkConnectionError(
        f"{api[0]}'s answer is over {size_text(cap)}, more than any API answer: refused unread (is {api[1]} a proxy "
        "or another service?)."
    )
    if declared.isdigit() and int(declared) > cap:
        raise too_big
    # iter_content decodes: a gzip bomb counts at its real size.
    body = b"".join(
        capped(response.iter_content(DOWNLOAD_CHUNK_BYTES), cap, lambda: too_big)
    )
    return Answer(
        status=response.status_code,
        reason=response.reason or "",
        headers=response.headers,
        body=body,
    )


def size_text(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:.0f} bytes"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read whole, within its deadline and size cap."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def capped(
    chunks: Iterable[bytes], cap: int, too_big: Callable[[], Exception]
) -> Iterator[bytes]:
    """Chunks as they come, and `too_big()` raised as soon as they add up to more than `cap` bytes: the one reading
    helper of API answers, downloads, preview sources and input files, none read more than a chunk past its cap."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise too_big()
        yield chunk


def parse_answer(
    answer: Answer,
    path: str,
    secrets: Iterable[str],
    sent_request_id: str,
    base_url: str = DEFAULT_BASE_URL,
    sent: str = "",
) -> dict[str, Any]:
    """The one place that turns an HTTP answer into data or an error, and the one place every text from upstream
    passes through: keys are redacted here, before anything is parsed, except in what the caller `sent` itself (see
    `Redactor`). Only non-2xx is an ArkAPIError."""
    secrets = tuple(secrets)
    raw = answer.body.decode("utf-8", "replace")
    body = parsed_body(raw, secrets, sent, answer.status)
    redact = Redactor(secrets, sent)
    if 200 <= answer.status < 300:
        if not isinstance(body, dict):
            excerpt = make_excerpt(redact(unescape(raw)), answer.headers)
            raise ArkConnectionError(
                f"Ark answered {answer.status} with a body that is not a JSON object: {excerpt}."
            )
        return body
    error = as_object(as_object(body).get("error"))
    message = error_message(answer, error, raw, redact)
    # Ark appends "Request id: ..." to its messages; lifted out, the id is shown once.
    found = re.search(r"\s*Request id: ?(\S+?)\.?\s*$", message)
    if found:
        message = message[: found.start()]
    request_id = (found and found[1]) or header_of(answer, "X-Request-Id", redact)
    request_id = (
        request_id
        or header_of(answer, "X-Client-Request-Id", redact)
        or sent_request_id
    )
    code, param = (
        clean_text(error.get("code"), NAME_MAX_CHARS),
        clean_text(error.get("param"), NAME_MAX_CHARS),
    )
    raise ArkAPIError(
        answer.status,
        code,
        message.rstrip(" ."),
        param,
        request_id,
        path=path,
        base_url=base_url,
    )


def parsed_body(raw: str, secrets: tuple[str, ...], sent: str, status: int) -> Any:
    """The body's JSON, every string redacted; None when it is not JSON."""
    if not raw.strip():
        return {}
    # A success keeps what only a short key (no real Ark key is) would mangle: a common word in a URL, say.
    if status < 300:
        secrets = tuple(s for s in secrets if len(s) >= LONG_SECRET_CHARS)
    try:
        return Redactor(secrets, sent).values(json.loads(raw))
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than Python's stack, from a hostile peer.
        return None


def error_message(
    answer: Answer, error: Mapping[str, Any], raw: str, redact: Redactor
) -> str:
    """An error answer's message: Ark's own, else what the answer shows (a redirect, a proxy's page)."""
    message = clean_text(error.get("message"), MESSAGE_MAX_CHARS)
    if message is not None:
        return message
    if 300 <= answer.status < 400:
        return f"redirect to {header_of(answer, 'Location', redact) or '?'}"
    excerpt = make_excerpt(redact(unescape(raw)), answer.headers)
    reason = clean_text(redact(answer.reason), NAME_MAX_CHARS)
    return f"{reason}; {excerpt}" if reason else excerpt


def header_of(answer: Answer, name: str, redact: Redactor) -> str | None:
    return clean_text(redact(unescape(answer.headers.get(name, ""))), NAME_MAX_CHARS)


def unescape(text: str) -> str:
    """A body that is not JSON, with the escapes a key may hide behind undone: JSON's \\uXXXX and \\/, and HTML's."""

    def character(found: re.Match[str]) -> str:
        code = int(found[1], 16)
        return found[0] if 0xD800 <= code < 0xE000 else chr(code)

    text = re.sub(r"\\u([0-9a-fA-F]{4})", character, text)
    return html.unescape(re.sub(r'\\(["\\/])', r"\1", text))


def make_excerpt(text: str, headers: Mapping[str, str]) -> str:
    """A short, single-line view of a body that is not Ark's JSON (a proxy's HTML page, say)."""
    text = " ".join(re.sub(r"<[^>]*>", " ", text[:EXCERPT_SCAN_CHARS]).split())
    kind = clean_text(
        headers.get("Content-Type", "no content type").split(";")[0], NAME_MAX_CHARS
    )
    if not text:
        return f"empty response ({kind})"
    return f"non-JSON response ({kind}): {clean_text(text, EXCERPT_CHARS)!r}"


# --- Redaction: no key leaves through an answer, an error or a log line, in any of its forms --------------------------


class Redactor:
    """Proxies and gateways sometimes echo request headers in their pages: no key leaves through an answer, in any
    of its forms (see `secret_forms`), whole or cut short. A key as long as real ones (Ark's are 36 characters) is
    replaced wherever any REDACT_RUN_CHARS of it stand (in base64, the whole run of base64 around them, which holds
    its first and last bytes too); a short one only whole, as a word, so that a key that is also a common string
    does not mangle ids, URLs or prompts.

    Text the caller itself `sent` is left as it is, even where it matches a key: a redaction would tell a caller
    that the string it guessed is someone's key, and it knows what it sent."""

    def __init__(self, secrets: Iterable[str], sent: str = ""):
        self.patterns = secret_patterns(
            frozenset(s for s in secrets if s and len(s) >= SHORT_SECRET_CHARS)
        )
        self.sent = sent.lower()

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
                holder[key] = item = {
                    self(k) if isinstance(k, str) else k: v for k, v in item.items()
                }
                stack.extend((item, k) for k in item)
        return root[0]

    def __call__(self, text: str) -> str:
        patterns = self.patterns
        if len(text) < REDACT_RUN_CHARS and not patterns.words:
            return text
        spans: list[tuple[int, int]] = []
        for run in patterns.runs.finditer(text) if patterns.runs else ():
            spans += self._found(text, run)
        spans += (
            [found.span() for found in patterns.words.finditer(text)]
            if patterns.words
            else []
        )
        for start, end in sorted(merge_spans(spans), reverse=True):
            if not (self.sent and text[start:end].lower() in self.sent):
                text = text[:start] + "***" + text[end:]
        return text

    def _found(self, text: str, run: re.Match[str]) -> list[tuple[int, int]]:
        """The spans of a run that hold a piece of a secret."""
        piece, patterns = run[0].lower(), self.patterns
        # Every window holds a whole block of ANCHOR_CHARS that starts at a multiple of it: windows are looked at
        # only around such blocks that are pieces of a secret, a few lookups a run instead of one per character.
        anchors = patterns.anchors
        blocks = [
            b
            for b in range(0, len(piece) - ANCHOR_CHARS + 1, ANCHOR_CHARS)
            if piece[b : b + ANCHOR_CHARS] in anchors
        ]
        if not blocks:
            return []
        starts = {
            j
            for block in blocks
            for j in range(
                max(0, block - ANCHOR_CHARS),
                min(block, len(piece) - REDACT_RUN_CHARS) + 1,
            )
        }
        spans = []
        for i in sorted(starts):
            window, at = piece[i : i + REDACT_RUN_CHARS], run.start() + i
            if window in patterns.windows:
                spans.append((at, at + REDACT_RUN_CHARS))
            elif window in patterns.encoded:
                spans.append(base64_run_at(text, at))
        return spans


@functools.lru_cache(maxsize=32)
def secret_patterns(secrets: frozenset[str]) -> SecretPatterns:
    """What finds these secrets, built once per set of them (a new caller's key makes a new set)."""
    long = [
        secret_forms(secret) for secret in secrets if len(secret) >= LONG_SECRET_CHARS
    ]
    short = [
        form
        for secret in secrets
        if SHORT_SECRET_CHARS <= len(secret) < LONG_SECRET_CHARS
        for forms in secret_forms(secret)
        for form in forms
    ]
    plain, encoded = (
        [form for forms, _ in long for form in forms],
        [form for _, forms in long for form in forms],
    )
    alphabet = "".join(sorted({c for form in plain + encoded for c in form}))
    runs = (
        re.compile(f"[{re.escape(alphabet)}]{{{REDACT_RUN_CHARS},}}", re.IGNORECASE)
        if long
        else None
    )
    words = (
        re.compile(
            "(?<![\\w-])(?:"
            + "|".join(map(re.escape, sorted(short, key=len, reverse=True)))
            + ")(?![\\w-])",
            re.IGNORECASE,
        )
        if short
        else None
    )
    return SecretPatterns(
        pieces_of(plain),
        pieces_of(encoded),
        pieces_of(plain + encoded, ANCHOR_CHARS),
        runs,
        words,
    )


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
        inner = text
        if shift:
            inner = inner[4:]
        if (shift + len(data)) % 3:
            inner = inner[:-4]
        encoded |= {inner, inner.replace("+", "-").replace("/", "_")}
    return sorted({f.lower() for f in plain if f}), sorted(
        {f.lower() for f in encoded - plain if f}
    )


class SecretPatterns(NamedTuple):
    # Every REDACT_RUN_CHARS-long piece of a long secret as is or percent-encoded.
    windows: frozenset[str]
    # The same of its base64 forms.
    encoded: frozenset[str]
    # Every ANCHOR_CHARS-long piece of both: a run holds a window only where it holds these.
    anchors: frozenset[str]
    # Text that may hold such a piece: runs of the forms' characters.
    runs: re.Pattern[str] | None
    # A short secret's forms, as whole words.
    words: re.Pattern[str] | None


def pieces_of(forms: Iterable[str], size: int = REDACT_RUN_CHARS) -> frozenset[str]:
    return frozenset(
        form[i : i + size] for form in forms for i in range(len(form) - size + 1)
    )


def redact(text: str, secrets: Iterable[str], sent: str = "") -> str:
    """`text` redacted of `secrets` (see `Redactor`)."""
    return Redactor(secrets, sent)(text)


def base64_run_at(text: str, at: int) -> tuple[int, int]:
    """The span of the base64 run that holds position `at`."""
    start = at
    while start > 0 and BASE64_RUN.fullmatch(text[start - 1]):
        start -= 1
    found = BASE64_RUN.match(text, at)
    return start, found.end() if found else at + 1


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans as one."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            first, last = merged.pop()
            start, end = first, max(last, end)
        merged.append((start, end))
    return merged


class RedactedLog(logging.Filter):
    """Every log line (this server's, the SDK's, uvicorn's) with every key the client knows redacted, tracebacks
    included. Nothing is left as the caller sent it here: the log is the operator's, never a caller's."""

    def __init__(self, secrets: Callable[[], Iterable[str]]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(self.secrets())
        message = record.getMessage()
        clean = redact(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        return True


# --- Results: what a caller gets back, every upstream string cleaned and bounded --------------------------------------
# Output types first. Fields marked Unlisted are validated like the rest but left out of the published output
# schema: Ark's echo of a request (resolution, seed, ...) costs every conversation tokens in tools/list and tells a
# caller nothing it acts on. `additionalProperties` says they may appear; docs/tools.md lists them.

OPEN = ConfigDict(json_schema_extra={"additionalProperties": True})


class SavedFile(TypedDict):
    path: str
    bytes: int
    # The record knew this file, and it is no longer there.
    missing: NotRequired[Unlisted[bool]]
    sha256: NotRequired[Unlisted[str]]
    # Video, last_frame or image: what it is, never read from its name.
    kind: NotRequired[Unlisted[str]]
    # An image's place in its result.
    index: NotRequired[Unlisted[int]]


class SaveError(TypedDict):
    source: str
    error: str


@with_config(OPEN)
class ImageOut(TypedDict):
    index: int
    url: NotRequired[str]
    size: NotRequired[str]
    # name, description, z_index, bounding_box: a layer of a layer decomposition.
    name: NotRequired[Unlisted[str]]
    description: NotRequired[Unlisted[str]]
    z_index: NotRequired[Unlisted[int]]
    bounding_box: NotRequired[Unlisted[dict[str, Any]]]
    # With takes: the take it belongs to.
    take: NotRequired[Unlisted[int]]


class ImageError(TypedDict):
    index: int
    code: str
    message: str
    # With takes: the take it belongs to.
    take: NotRequired[Unlisted[int]]


class Cost(TypedDict):
    """What a call costs: the estimate before it was sent and its basis, and what Ark billed once it says."""

    currency: str
    estimate: NotRequired[float]
    basis: NotRequired[str]
    billed: NotRequired[float]
    billed_basis: NotRequired[str]


@with_config(OPEN)
class ImageResult(TypedDict):
    model: NotRequired[str]
    created_at: NotRequired[Unlisted[str]]
    images: list[ImageOut]
    errors: list[ImageError]
    usage: NotRequired[dict[str, Any]]
    cost: NotRequired[Unlisted[Cost]]
    saved_files: NotRequired[list[SavedFile]]
    save_errors: NotRequired[list[SaveError]]
    # With takes: each take's model, or its error (its images carry `take`).
    takes: NotRequired[Unlisted[list[dict[str, Any]]]]
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
    cost: NotRequired[Unlisted[Cost]]
    saved_files: NotRequired[list[SavedFile]]
    save_errors: NotRequired[list[SaveError]]


class UploadedFile(TypedDict):
    """A local file uploaded for Ark to fetch (DOUBAO_UPLOADS): its object, its size, when its link expires, and
    whether it was sent now (False: the same file was there already)."""

    key: str
    bytes: int
    expires_at: str
    sent: bool


@with_config(OPEN)
class VideoTask(ListedTask):
    # The model: defaults skipped on the way to it, or its retirement.
    note: NotRequired[Unlisted[str]]
    # An unfinished task: about how long it takes, from its creation.
    estimate_seconds: NotRequired[Unlisted[int]]
    # The local files this call uploaded for Ark to fetch.
    uploads: NotRequired[Unlisted[list[UploadedFile]]]
    # With takes: every take (this result's fields are the first's), each a task with `take`, or its error.
    takes: NotRequired[Unlisted[list[dict[str, Any]]]]
    # What to do now; a listing leaves it out, as it would say the same for every task.
    next_step: str


class ModelCatalog(TypedDict):
    region: str
    currency: str
    # Each family: kind, family, ids, takes, lifecycle, price, default (its place in the defaults), refused.
    models: list[dict[str, Any]]


class TaskList(TypedDict):
    total: int
    tasks: list[ListedTask]


class CancelResult(TypedDict):
    task_id: str
    previous_status: str
    outcome: Literal["cancelled", "deleted"]
    message: str


def shape_task(item: Any, asked_for: str | None = None) -> Task:
    """Ark's task record, flattened to what a caller acts on, every field cleaned and bounded. Accepts both
    documented error field names. A record for another task than the one `asked_for` is never passed on."""
    if (
        not isinstance(item, dict)
        or not task_id_of(item)
        or not clean_text(item.get("status"))
    ):
        raise unreadable("a task record without a task id or status", item)
    task_id, status = item["id"], clean_text(item["status"]) or ""
    if asked_for and task_id != asked_for:
        raise ArkConnectionError(
            f"Ark answered with the record of task {task_id!r} when asked for {asked_for!r}: not passed on. Try "
            "again; if it persists, ARK_BASE_URL is not Ark."
        )
    content: dict[str, Any] = as_object(item.get("content"))
    error = item.get("error") or item.get("failure_reason")
    error = error if isinstance(error, dict) else {"message": error}
    fields = {
        "model": clean_text(item.get("model")),
        "video_url": clean_url(content.get("video_url")),
        "last_frame_url": clean_url(content.get("last_frame_url")),
        "error_code": clean_text(error.get("code")),
        "error_message": clean_text(error.get("message"), MESSAGE_MAX_CHARS),
        "created_at": format_time(item.get("created_at")),
        "updated_at": format_time(item.get("updated_at")),
        "resolution": clean_text(item.get("resolution")),
        "ratio": clean_text(item.get("ratio")),
        "duration": clean_int(item.get("duration")),
        "frames": clean_int(item.get("frames")),
        "fps": clean_int(item.get("framespersecond", item.get("fps"))),
        "seed": clean_int(item.get("seed")),
        "service_tier": clean_text(item.get("service_tier")),
        "revised_prompt": clean_text(item.get("revised_prompt"), MESSAGE_MAX_CHARS),
        "draft": clean_bool(item.get("draft")),
        "draft_task_id": clean_text(item.get("draft_task_id")),
        "generate_audio": clean_bool(item.get("generate_audio")),
        "output_format": clean_text(item.get("output_format")),
        "execution_expires_after": clean_int(item.get("execution_expires_after")),
        "usage": clean_numbers(item.get("usage")),
    }
    return {
        "task_id": task_id,
        "status": status,
        **compact(fields),
        "next_step": next_step_of(task_id, status, error),
    }


def clean_text(value: Any, limit: int = NAME_MAX_CHARS) -> str | None:
    """A string from upstream as it may go into a result: control characters, zero-width characters and bidi
    overrides replaced, whitespace collapsed, and at most `limit` characters."""
    if not isinstance(value, str):
        return None
    # Cleaning may shorten it: it is cut after.
    text = " ".join(UNSAFE_CHARACTERS.sub(" ", value[: 2 * limit]).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or None


def as_object(value: Any) -> dict[str, Any]:
    """A JSON object from upstream, or an empty one for anything else."""
    return value if isinstance(value, dict) else {}


def clean_url(value: Any) -> str | None:
    """Only an http(s) URL a client can open goes into a result."""
    if (
        not isinstance(value, str)
        or len(value) > URL_MAX_CHARS
        or UNSAFE_CHARACTERS.search(value)
        or " " in value
    ):
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def format_time(value: Any) -> str | None:
    """Ark sends Unix seconds; an ISO string is easier for a model and a person to read."""
    seconds = clean_int(value)
    if seconds is not None and 0 <= seconds < 2**33:
        return utc_text(seconds)
    return clean_text(value)


def utc_text(unix: float) -> str:
    """A moment as every result gives one: ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    return None


def clean_number(value: Any) -> int | float | None:
    if isinstance(value, int):
        return clean_int(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def clean_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def clean_numbers(value: Any, nested: bool = True) -> dict[str, Any] | None:
    """A small object of numbers, as Ark's usage and bounding boxes are: at most NUMBERS_MAX_KEYS keys, one level of
    nesting (`tool_usage: {"web_search": 1}`) and short lists of numbers; anything else is dropped."""
    if not isinstance(value, dict):
        return None
    kept: dict[str, Any] = {}
    for key, item in itertools.islice(value.items(), NUMBERS_MAX_KEYS):
        if isinstance(item, dict):
            item = clean_numbers(item, False) if nested else None
        elif isinstance(item, list):
            numbers = len(item) <= NUMBERS_MAX_LIST and all(
                clean_number(n) is not None for n in item
            )
            item = item if numbers else None
        else:
            item = clean_number(item)
        if item is not None:
            kept[clean_text(key) or "?"] = item
    return kept or None


def next_step_of(
    task_id: str, status: str, error: Mapping[str, Any], assets: bool = False
) -> str:
    """What to do about a task in this status; a failed one's advice reads Ark's error code as an error answer's
    does (`assets`: the asset tools are offered)."""
    if status == "failed":
        hint = code_hint(clean_text(error.get("code")), assets=assets)
        if hint:
            return f"Generation failed: {hint}"
    return NEXT_STEP.get(status, LATER_STEP).format(task_id=task_id)


def unreadable(what: str, body: Any) -> ArkConnectionError:
    """An answer that is not what Ark sends, quoted in a bounded excerpt however deep or large it is."""
    excerpt = reprlib.Repr()
    (
        excerpt.maxlevel,
        excerpt.maxstring,
        excerpt.maxother,
        excerpt.maxdict,
        excerpt.maxlist,
    ) = (
        3,
        80,
        80,
        6,
        6,
    )
    return ArkConnectionError(
        f"Ark answered with {what} this server cannot read: {clean_text(excerpt.repr(body))!r}."
    )


def shape_images(body: dict[str, Any]) -> ImageResult:
    """Keep every image and every per-image error; one moderated image does not fail the set."""
    data = body.get("data")
    if not isinstance(data, list):
        raise unreadable("an image result without a data list", body)
    images: list[ImageOut] = []
    errors: list[ImageError] = []
    for index, item in enumerate(data):
        item = as_object(item)
        error = item.get("error")
        has_image = clean_url(item.get("url")) or isinstance(item.get("b64_json"), str)
        if isinstance(error, dict) or not has_image:
            errors.append(image_error(index, error))
        else:
            images.append(image_out(index, item))
    # In the order a reader wants them: what made it, what came, what to do.
    shaped = {
        "model": clean_text(body.get("model")),
        "created_at": format_time(body.get("created", body.get("created_at"))),
        "images": images,
        "errors": errors,
        "usage": clean_numbers(body.get("usage")),
        "note": URL_LIFETIME_NOTE,
    }
    return cast(ImageResult, compact(shaped))


def image_error(index: int, error: Any) -> ImageError:
    error = as_object(error)
    message = clean_text(error.get("message"), MESSAGE_MAX_CHARS)
    message = (
        message
        or "Ark returned no image here (or one at an address that is not http(s))."
    )
    return ImageError(
        index=index, code=clean_text(error.get("code")) or "NoImage", message=message
    )


def image_out(index: int, item: Mapping[str, Any]) -> ImageOut:
    """An image as a result shows it; an inline b64_json image never goes in: it would flood the model's context."""
    fields = {
        "url": clean_url(item.get("url")),
        "size": clean_text(item.get("size")),
        "name": clean_text(item.get("name")),
        "description": clean_text(item.get("description"), MESSAGE_MAX_CHARS),
        "z_index": clean_int(item.get("z_index")),
        "bounding_box": clean_numbers(item.get("bounding_box")),
    }
    return cast(ImageOut, {"index": index, **compact(fields)})


def shape_items(items: Any) -> list[Task]:
    """The tasks of a list answer that can be read, one entry each: one malformed item does not hide the others."""
    shaped = []
    for item in items if isinstance(items, list) else []:
        try:
            shaped.append(shape_task(item))
        except DoubaoError as error:
            log.warning("Left out an item of Ark's task list: %s", error)
    return one_per_task(shaped)


def shape_task_list(body: dict[str, Any]) -> TaskList:
    """Ark's list, each task shaped, without the next_step each would repeat."""
    items = body.get("items")
    if items is None and clean_int(body.get("total")) == 0:
        items = []
    if not isinstance(items, list):
        raise unreadable("a task list without an items list", body)
    tasks = [listed(task) for task in shape_items(items)]
    return TaskList(total=clean_int(body.get("total")) or len(tasks), tasks=tasks)


def listing(tasks: list[Task], waited: bool) -> TaskList:
    """The tasks asked for, as a listing. Without a wait, an unknown task keeps what to do about it; after one, a task
    keeps its next_step where there is something to do (unfinished, failed, checking it failed, saving it did): a
    finished video needs no word."""
    shown = []
    for task in tasks:
        if waited:
            quiet = task["status"] == "succeeded" and not task.get("save_errors")
            keep = not (quiet and task.get("next_step") == URL_LIFETIME_NOTE)
        else:
            keep = task["status"] == UNKNOWN_STATUS
        shown.append(listed(task, keep_step=keep))
    return TaskList(total=len(shown), tasks=shown)


def unknown_task(task_id: str, error: Exception) -> Task:
    """A task asked for that Ark did not describe: Ark does not know it, or checking it failed."""
    task: Task = {"task_id": task_id, "status": UNKNOWN_STATUS}
    if isinstance(error, ArkAPIError) and error.status == 404:
        return {
            **task,
            **compact({"error_code": error.code}),
            "error_message": error.message,
            "next_step": TASK_NOT_FOUND_HINT,
        }
    return {
        **task,
        "next_step": CHECK_FAILED.format(reason=reason_of(error), task_id=task_id),
    }


def with_record(task: Task, known: TaskFiles) -> Task:
    """A task with what the record holds of its saving: its files, and a background save that failed."""
    fields: dict[str, Any] = {"saved_files": known.files} if known.files else {}
    if known.error and not known.complete and task["status"] == "succeeded":
        fields["save_errors"] = [
            SaveError(source="saving in the background", error=known.error)
        ]
        if "next_step" in task:
            fields["next_step"] = (
                f"Saving it in the background failed: {known.error[:300]} Call query_video_task with save_dir to try "
                "again."
            )
    return with_fields(task, **fields)


def listed(task: Mapping[str, Any], keep_step: bool = False) -> ListedTask:
    """A task as a listing shows it: without the next_step it would repeat for every task, unless it says more."""
    return cast(
        ListedTask, {k: v for k, v in task.items() if keep_step or k != "next_step"}
    )


# --- The task record: no video is lost --------------------------------------------------------------------------------
# A video takes minutes and its links last 24 h: a closed conversation, a client timeout or a restart must not
# lose it. Every task this server creates gets a row in a local SQLite file; a watcher thread saves the video
# of a task created with save_dir when it finishes, whoever still listens, and a restarted server resumes it.
# The record is never on a call's critical path: a write that finds the file locked, full or read-only waits a
# fraction of a second, then is queued and retried off the call's thread; a read that fails reads as "nothing
# recorded". A call never fails because of it, and its task id always comes back.

RECORD_SCHEMA = (
    """
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
)""",
    """
CREATE INDEX tasks_unsaved ON tasks (owner, base_url) WHERE save_dir IS NOT NULL AND complete = 0""",
)
V1_COLUMNS = frozenset(
    {
        "task_id",
        "base_url",
        "owner",
        "model",
        "prompt",
        "parameters",
        "save_dir",
        "last_frame",
        "status",
        "video_url",
        "last_frame_url",
        "error",
        "created",
        "updated",
        "finished",
        "files",
        "save_error",
        "watcher",
        "watched",
        "saver",
        "saving",
    }
)


def default_state_dir(env: Mapping[str, str]) -> Path:
    """The platform's folder for an application's data: XDG_DATA_HOME, ~/Library/Application Support, LOCALAPPDATA."""
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "doubao-mcp"


class RecordUnusable(Exception):
    """The record's file is not one this server can use: another program's, a newer version's, or not SQLite."""


def is_locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


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

    def __init__(
        self, folder: Path, base_url: str, retry_every: float = RETRY_WRITES_SECONDS
    ):
        self.path, self.base_url, self.retry_every = (
            folder / "tasks.sqlite3",
            base_url,
            retry_every,
        )
        # pid@host, and a token: a container restarts its server with the same pid, and that is another process.
        self.me = f"{os.getpid()}@{socket.gethostname()}#{os.urandom(4).hex()}"
        # One connection, used from the lanes' threads and the watcher's.
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        # Writes not done yet.
        self.queued: collections.deque[tuple[str, tuple[Any, ...]]] = (
            collections.deque()
        )
        self.retrying: threading.Thread | None = None
        # What this process last wrote of each task (a cache: see observed)
        self.known: dict[str, tuple[Any, ...]] = {}
        self.warned = 0.0
        try:
            self.open()
        # Locked by another process, say: opened later, off every call's path.
        except sqlite3.Error as error:
            if not is_locked(error):
                raise
            self._warn(error)
            self._start_retrying()

    def open(self) -> None:
        """Open the file, made when missing, and bring its schema to this version. Raises RecordUnusable for a file
        that is not ours, sqlite3.Error when it is locked or unreadable, OSError when the folder cannot be made."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # An existing folder keeps its mode: prompts and paths are private.
        with contextlib.suppress(OSError):
            if folder.stat().st_uid == os.getuid():
                os.chmod(folder, 0o700)
        db = sqlite3.connect(
            self.path,
            timeout=LOCK_WAIT_SECONDS,
            check_same_thread=False,
            isolation_level=None,
        )
        try:
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
            migrate(db, self.path)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL stays consistent; no fsync on every change.
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        self.db = db

    def _warn(self, error: BaseException) -> None:
        if time.monotonic() - self.warned > RECORD_WARN_EVERY_SECONDS:
            self.warned = time.monotonic()
            what = (
                "is locked by another process"
                if is_locked(error)
                else f"cannot be used ({error})"
            )
            log.warning(
                "The task record %s %s: calls go on without it; what it missed is written when it can be.",
                self.path,
                what,
            )

    def created(
        self,
        task: Task,
        body: Mapping[str, Any],
        save_dir: Path | None,
        owner: str | None,
        watched: bool = False,
    ) -> None:
        """A new task; `watched`: this process's watcher will save it."""
        prompt = next(
            (item["text"] for item in body["content"] if item.get("type") == "text"), ""
        )
        parameters = {
            k: v
            # Not callback_url: its query string may hold a token.
            for k, v in body.items()
            if k not in ("model", "content", "callback_url")
            and isinstance(v, (int, float, str))
        }
        now = time.time()
        self._write(
            "INSERT OR IGNORE INTO tasks (task_id, base_url, owner, model, prompt, parameters, save_dir, "
            "last_frame, status, created, updated, watcher, watched) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?)",
            task["task_id"],
            self.base_url,
            owner,
            body["model"],
            prompt[:PROMPT_KEPT_CHARS],
            json.dumps(parameters),
            str(save_dir) if save_dir else None,
            bool(body.get("return_last_frame")),
            task["status"],
            now,
            now,
            self.me if watched else None,
            now if watched else None,
        )
        self.known[task["task_id"]] = self._state(task)

    def _write(self, sql: str, *values: Any) -> None:
        """A write that never holds up a call for long: done now, or queued behind earlier ones."""
        with self.lock:
            self.queued.append((sql, values))
            if len(self.queued) > MAX_QUEUED_WRITES:
                self.queued.popleft()
                log.warning(
                    "The task record %s has missed over %d writes: the oldest is dropped.",
                    self.path,
                    MAX_QUEUED_WRITES,
                )
            # Already failing: the retrying thread writes it.
            if len(self.queued) > 1 or not self._flush():
                self._start_retrying()

    def _start_retrying(self) -> None:
        if self.retrying is None or not self.retrying.is_alive():
            self.retrying = threading.Thread(
                target=self._retry, name="doubao-record", daemon=True
            )
            self.retrying.start()

    def _retry(self) -> None:
        # Soon at first: another server opening the same record holds it a moment.
        pause = LOCK_WAIT_SECONDS
        while True:
            time.sleep(pause)
            pause = min(pause * 2, self.retry_every)
            with self.lock:
                if self._flush():
                    log.info("The task record %s is written again.", self.path)
                    return

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

    @staticmethod
    def _state(task: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            task["status"],
            task.get("video_url"),
            task.get("last_frame_url"),
            task.get("error_code")
            and f"{task['error_code']}: {task.get('error_message', '')}",
        )

    def recent_durations(
        self, owner: str, limit: int
    ) -> list[tuple[Any, Any, Any, Any]]:
        """(task id, model, parameters, seconds from creation to finish seen) of the latest succeeded tasks the key
        `owner` created (a task first seen by a save has no parameters, and no creation time of its own). As stored:
        the caller checks every value."""
        return self._read(
            "SELECT task_id, model, parameters, finished - created FROM tasks WHERE status = 'succeeded' "
            "AND owner = ? AND finished IS NOT NULL AND parameters IS NOT NULL ORDER BY finished DESC "
            "LIMIT ?",
            owner,
            limit,
        )

    def failed(self, task_id: str, error: str) -> None:
        """Saving failed before it began (the folder went away): shown to callers, tried again at the next start."""
        self._write("UPDATE tasks SET save_error = ? WHERE task_id = ?", error, task_id)

    def orphans(self, owner: str) -> list[tuple[str, str]]:
        """(task id, save folder) of this key's tasks that nobody alive watches and whose files are not all saved:
        unfinished, or succeeded with links still valid. Tasks older than Ark keeps them are closed here, unasked."""
        now = time.time()
        self._write(
            "UPDATE tasks SET save_dir = NULL, save_error = ? WHERE owner = ? AND base_url = ? AND save_dir IS "
            "NOT NULL AND complete = 0 AND created < ?",
            "Ark keeps tasks 7 days: this one is gone, unsaved.",
            owner,
            self.base_url,
            now - ARK_RETENTION_SECONDS,
        )
        rows = self._read(
            "SELECT task_id, save_dir, status, finished, watcher, watched FROM tasks WHERE owner = ? AND "
            "base_url = ? AND save_dir IS NOT NULL AND complete = 0 AND created >= ? ORDER BY created DESC",
            owner,
            self.base_url,
            now - ARK_RETENTION_SECONDS,
        )
        found = []
        for task_id, save_dir, status, finished, watcher, watched in rows:
            try:
                alive = self._alive(watcher, watched, WATCH_STALE_SECONDS)
                links_valid = (
                    status == "succeeded"
                    and (finished or 0) > now - LINK_LIFETIME_SECONDS
                )
            except (TypeError, ValueError):
                # A row another program wrote: never trusted, never resumed.
                alive, links_valid = (
                    True,
                    False,
                )
            readable = (
                isinstance(task_id, str)
                and re.fullmatch(ID_PATTERN, task_id)
                and isinstance(save_dir, str)
            )
            if (
                readable
                and not alive
                and (status in ("queued", "running") or links_valid)
            ):
                found.append((task_id, save_dir))
        return found

    def _read(self, sql: str, *values: Any) -> list[Any]:
        """Rows, or none when the record cannot be read now: a call then goes on as if nothing were recorded."""
        return self._query(sql, values) or []

    def _query(self, sql: str, values: tuple[Any, ...]) -> list[Any] | None:
        """Rows, or None when the record cannot be read now (locked, or not open yet)."""
        with self.lock:
            # What it missed first, so that it reads what this process did.
            if self.queued:
                self._flush()
            try:
                return self.db.execute(sql, values).fetchall() if self.db else None
            except sqlite3.Error as error:
                self._warn(error)
                return None

    def observed(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """What Ark said of these tasks, written only where it changed."""
        for task in tasks:
            state = self._state(task)
            if self.known.get(task["task_id"]) == state:
                continue
            # A server listing thousands of tasks: forgetting costs a write.
            if len(self.known) >= RECORD_CACHE_TASKS:
                self.known.clear()
            now = time.time()
            self._write(
                "UPDATE tasks SET status = ?, video_url = ?, last_frame_url = ?, error = ?, updated = ?, "
                "finished = COALESCE(finished, ?) WHERE task_id = ?",
                *state,
                now,
                now if state[0] in FINAL_STATUSES else None,
                task["task_id"],
            )
            self.known[task["task_id"]] = state

    def files_of(self, task_ids: Iterable[str]) -> dict[str, TaskFiles]:
        """What the record holds of these tasks' saving, for those it has saved or tried to."""
        ids = list(task_ids)[:RECORD_CACHE_TASKS]
        rows = (
            self._read(
                f"SELECT task_id, files, complete, save_error FROM tasks WHERE (files IS NOT NULL OR "
                f"save_error IS NOT NULL) AND task_id IN ({', '.join('?' * len(ids))})",
                *ids,
            )
            if ids
            else []
        )
        found: dict[str, TaskFiles] = {}
        for task_id, files, complete, error in rows:
            try:
                saved = [
                    self._saved_file(stored) for stored in json.loads(files or "[]")
                ]
            except (TypeError, ValueError, KeyError, AttributeError):
                log.warning(
                    "The task record %s holds files of %s that cannot be read: they are left out.",
                    self.path,
                    clean_text(str(task_id), 100),
                )
                saved = []
            found[task_id] = TaskFiles(
                saved,
                bool(complete) and bool(saved),
                error if isinstance(error, str) else None,
            )
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
        path, size, kind, digest = (
            stored["path"],
            stored["bytes"],
            stored.get("kind") or "video",
            stored.get("sha256"),
        )
        if not (
            isinstance(path, str)
            and clean_int(size) is not None
            and kind in FILE_KINDS.values()
        ):
            raise ValueError("not a saved file")
        one = SavedFile(path=path, bytes=size, kind=kind)
        if isinstance(digest, str):
            one["sha256"] = digest
        if not os.path.isfile(path):
            one["missing"] = True
        return one

    def save(
        self,
        task: Mapping[str, Any],
        folder: Path,
        save: Callable[[], Mapping[str, Any]],
        again: bool = False,
    ) -> Mapping[str, Any] | None:
        """`save()` the task's missing files into `folder` and record every file it has (its result's saved_files),
        unless the task is saved already (`again`: some of its files are missing) or another live process, or this
        one, is saving it: None then. Each video is saved once. A task made elsewhere is recorded now, so that it is
        not saved twice either. A record that cannot be read or written does not stop the save."""
        task_id = task["task_id"]
        now = time.time()
        self._write(
            "INSERT OR IGNORE INTO tasks (task_id, base_url, model, save_dir, status, video_url, last_frame_url, "
            "created, updated, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            task_id,
            self.base_url,
            task.get("model"),
            str(folder),
            task["status"],
            task.get("video_url"),
            task.get("last_frame_url"),
            now,
            now,
            now if task["status"] in FINAL_STATUSES else None,
        )
        self.observed([task])
        if self._claim(task_id, again) is False:
            return None
        result: Mapping[str, Any] = {}
        try:
            result = save()
        finally:
            files = [
                {
                    "path": f["path"],
                    "bytes": f["bytes"],
                    "sha256": f.get("sha256"),
                    "kind": f.get("kind"),
                }
                for f in result.get("saved_files", [])
            ]
            wanted = {kind for key, kind in FILE_KINDS.items() if task.get(key)}
            complete = wanted <= {f["kind"] for f in files}
            self._write(
                "UPDATE tasks SET files = ?, complete = ?, save_error = ?, saver = NULL WHERE task_id = ?",
                json.dumps(files) if files else None,
                complete,
                None
                if complete
                else "; ".join(e["error"] for e in result.get("save_errors", []))
                or None,
                task_id,
            )
        return result

    def _claim(self, task_id: str, again: bool) -> bool | None:
        """Whether this process may save the task now; None when the record cannot say (then it saves anyway: a
        video saved twice beats one never saved)."""
        rows = self._read(
            "SELECT files, complete, saver, saving FROM tasks WHERE task_id = ?",
            task_id,
        )
        if not rows:
            return None
        files, complete, saver, saving = rows[0]
        # A row that claims files it does not hold: save them.
        if complete and not self._readable_files(files):
            again = True
        try:
            if (complete and not again) or self._alive(
                saver, saving, SAVE_STALE_SECONDS
            ):
                return False
        # A saver stamp another program wrote: not a live saver.
        except (TypeError, ValueError):
            pass
        # Taken only if the row is still as read: of two processes that read it, one wins, and one that read it
        # before another's whole save (claim, files, release) finds the files and the claim's time changed.
        changed = self._change(
            "UPDATE tasks SET saver = ?, saving = ? WHERE task_id = ? AND files IS ? AND saver IS ? AND saving IS ?",
            self.me,
            time.time(),
            task_id,
            files,
            saver,
            saving,
        )
        return None if changed is None else changed == 1

    def watching(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        for start in range(0, len(ids), SQL_CHUNK_IDS):
            chunk = ids[start : start + SQL_CHUNK_IDS]
            self._write(
                f"UPDATE tasks SET watcher = ?, watched = ? WHERE task_id IN ({', '.join('?' * len(chunk))})",
                self.me,
                time.time(),
                *chunk,
            )

    def heartbeat(self) -> None:
        """This process still watches its tasks: one write for all of them, every WATCH_BEAT_SECONDS."""
        self._write(
            "UPDATE tasks SET watched = ? WHERE watcher = ? AND complete = 0 AND save_dir IS NOT NULL AND "
            "status IN ('queued', 'running', 'succeeded')",
            time.time(),
            self.me,
        )

    def uploaded(self, bucket: str, upload: Uploaded) -> None:
        """An object a call used: uploaded now, or found there."""
        now = time.time()
        self._write(
            "INSERT INTO uploads (bucket, key, bytes, uploaded, used) VALUES (?, ?, ?, ?, ?) ON CONFLICT (bucket, "
            "key) DO UPDATE SET used = excluded.used, uploaded = CASE WHEN ? THEN excluded.uploaded ELSE "
            "uploads.uploaded END",
            bucket,
            upload.key,
            upload.bytes,
            now,
            now,
            upload.sent,
        )

    def uploads_before(self, bucket: str, before: float) -> list[str]:
        """The keys of this bucket's objects no call has used since `before`."""
        rows = self._read(
            "SELECT key FROM uploads WHERE bucket = ? AND used < ?", bucket, before
        )
        return [key for (key,) in rows if isinstance(key, str)]

    def forget_uploads(self, bucket: str, keys: Iterable[str]) -> None:
        for key in keys:
            self._write("DELETE FROM uploads WHERE bucket = ? AND key = ?", bucket, key)

    def gave_up(self, task_id: str, error: str | None) -> None:
        """Nothing more to save for this task (cancelled, deleted, or Ark refuses it; `error` says why, when it is a
        failure): no start-up resumes it."""
        self._write(
            "UPDATE tasks SET save_dir = NULL, save_error = ?, saver = NULL WHERE task_id = ?",
            error,
            task_id,
        )

    def _alive(
        self, worker: str | None, since: float | None, stale_after: float
    ) -> bool:
        """Whether the process `worker` (pid@host#token) still does what it stamped at `since`: on this host, while
        its pid lives; anywhere, until the stamp is stale (a reused pid, a process on another host that died)."""
        if not worker or time.time() - (since or 0) > stale_after:
            return False
        if worker == self.me:
            return True
        pid, _, host = worker.partition("#")[0].partition("@")
        if host == socket.gethostname() and os.name == "posix":
            # An earlier process with this pid: this one has replaced it.
            if pid == str(os.getpid()):
                return False
            with contextlib.suppress(PermissionError, ValueError):
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    return False
        return True

    def _change(self, sql: str, *values: Any) -> int | None:
        """A write whose outcome matters now (a claim): the rows it changed, or None when the record cannot say."""
        with self.lock:
            if (self.queued and not self._flush()) or self.db is None:
                return None
            try:
                self.db.execute(
                    f"PRAGMA busy_timeout = {int(CLAIM_WAIT_SECONDS * 1000)}"
                )
                return self.db.execute(sql, values).rowcount
            except sqlite3.Error as error:
                self._warn(error)
                return None
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute(
                        f"PRAGMA busy_timeout = {int(LOCK_WAIT_SECONDS * 1000)}"
                    )

    def person(self, account: str, subject: str) -> tuple[bool, Person | None]:
        """Whether the record could be read now, and the person this subject is in this asset library, if any (a
        row that cannot be read is none)."""
        rows = self._query(
            "SELECT group_id, token, link, started FROM people WHERE account = ? AND subject = ?",
            (account, subject),
        )
        found = next((one for one in map(person_of, rows or []) if one), None)
        return rows is not None, found

    def people(self, account: str) -> dict[str, Person]:
        rows = self._read(
            "SELECT subject, group_id, token, link, started FROM people WHERE account = ?",
            account,
        )
        found = {row[0]: person_of(row[1:]) for row in rows if isinstance(row[0], str)}
        return {subject: person for subject, person in found.items() if person}

    def tie_person(self, account: str, subject: str, person: Person) -> None:
        self._write(
            "INSERT OR REPLACE INTO people (account, subject, group_id, token, link, started) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            account,
            subject,
            *person,
        )

    def forget_person(self, account: str, subject: str) -> None:
        self._write(
            "DELETE FROM people WHERE account = ? AND subject = ?", account, subject
        )


# What this server uploaded (DOUBAO_UPLOADS), so that --prune-uploads removes its own objects and nothing else.
UPLOADS_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS uploads (
    bucket TEXT NOT NULL, key TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    uploaded REAL NOT NULL,        -- when it was last uploaded (unix seconds)
    used REAL NOT NULL,            -- when a call last used it
    PRIMARY KEY (bucket, key)
)""",
)


# Which asset-library group is which person (verify_person), by the library's account (a fingerprint of its access
# key, address and project: never the key), and the checks under way.
PEOPLE_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS people (
    account TEXT NOT NULL, subject TEXT NOT NULL,
    group_id TEXT,                 -- the person's LivenessFace group, once verified
    token TEXT, link TEXT,         -- the check under way (its token lives 30 minutes)
    started REAL,                  -- when the check began (unix seconds)
    PRIMARY KEY (account, subject)
)""",
)


def person_of(row: Any) -> Person | None:
    """A people row as a Person; None for one that does not hold what this server writes (a poisoned record)."""
    group_id, token, link, started = row
    texts = all(v is None or isinstance(v, str) for v in (group_id, token, link))
    if (
        not texts
        or not (group_id or token)
        or not isinstance(started, (int, float, type(None)))
    ):
        log.warning(
            "Left out a row of the task record's people: it is not one this server wrote."
        )
        return None
    return Person(
        group_id=group_id, token=token, link=link, started=float(started or 0.0)
    )


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring a record to RECORD_VERSION: make a new one, or migrate an older one of ours. A file that is not ours
    is refused (RecordUnusable) and left as it is."""
    try:
        # One process migrates; the others wait, then find it done.
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as error:
        if is_locked(error):
            raise
        raise RecordUnusable(f"it is not an SQLite database ({error})") from error
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        if app not in (0, RECORD_APP_ID):
            raise RecordUnusable(
                f"it belongs to another application (application_id {app:#x})"
            )
        if version > RECORD_VERSION:
            raise RecordUnusable(
                f"it was written by a newer doubao-mcp (schema {version}; this one reads up to {RECORD_VERSION})"
            )
        if version == 0 and tables:
            raise RecordUnusable(
                f"it is another program's database (tables {', '.join(sorted(tables))[:120]})"
            )
        if version in (1, RECORD_VERSION) and not V1_COLUMNS <= columns:
            raise RecordUnusable(
                f"its tasks table lacks {', '.join(sorted(V1_COLUMNS - columns))[:120]}"
            )
        if version == 0:
            # Not executescript: it would commit.
            for statement in RECORD_SCHEMA:
                db.execute(statement)
        elif version == 1:
            migrate_v1(db)
        # Added beside the tasks in version 2: older servers leave them alone.
        for statement in (*SPEND_SCHEMA, *UPLOADS_SCHEMA, *PEOPLE_SCHEMA):
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {RECORD_APP_ID}")
        db.execute(f"PRAGMA user_version = {RECORD_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def migrate_v1(db: sqlite3.Connection) -> None:
    """Version 1 kept files without their kind, and counted a task saved when it had any file: a video whose save
    failed beside a saved last frame was never finished. Kinds are read from the v1 file names, once."""
    db.execute("ALTER TABLE tasks ADD COLUMN complete INTEGER NOT NULL DEFAULT 0")
    for task_id, files, video_url, last_frame_url in db.execute(
        "SELECT task_id, files, video_url, last_frame_url FROM tasks WHERE files IS NOT NULL"
    ).fetchall():
        stored = json.loads(files)
        for one in stored:
            one["kind"] = (
                "last_frame"
                if one["path"].endswith(
                    (f"{LAST_FRAME_NAME}.png", f"{LAST_FRAME_NAME}.jpeg")
                )
                else "video"
            )
        wanted = {
            kind
            for kind, url in (("video", video_url), ("last_frame", last_frame_url))
            if url
        } or {"video"}
        db.execute(
            "UPDATE tasks SET files = ?, complete = ? WHERE task_id = ?",
            (json.dumps(stored), wanted <= {one["kind"] for one in stored}, task_id),
        )
    db.execute(
        "CREATE INDEX tasks_unsaved ON tasks (owner, base_url) WHERE save_dir IS NOT NULL AND complete = 0"
    )


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
                sys.exit(
                    f"doubao-mcp: the task record {path} cannot be used: {error}. Move that file away, or set "
                    "DOUBAO_STATE_DIR to another folder, or to off."
                )
            aside = path.with_name(
                f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(f"{path}{suffix}"):
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            log.warning(
                "The task record %s cannot be used (%s): moved it to %s and started a new one.",
                path,
                error,
                aside,
            )
            return Record(config.state_dir, config.base_url)
    except (OSError, sqlite3.Error, RecordUnusable) as error:
        message = (
            f"the task record cannot be kept in {config.state_dir} ({error}). Set DOUBAO_STATE_DIR to a "
            "writable folder, or to off"
        )
        if explicit:
            sys.exit(f"doubao-mcp: {message}.")
        log.warning(
            "No task record, so videos are saved only when a call asks: %s.", message
        )
        return None


# --- The spend ledger: today's spend per key, shared by every process that uses the task record -----------------------
# One row per POST: reserved with its quote before it is sent, then settled to what Ark billed, or released. The
# day's spend is the sum of a key's rows of the local date that are not released. A reservation is one transaction
# (BEGIN IMMEDIATE), so of two calls at once, in one process or two, only those the limit has room for pass. Unlike
# the record's writes, the ledger's are synchronous: a limit that cannot be checked refuses the call.

SPEND_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY,
    owner TEXT,                    -- fingerprint of the key that spends
    currency TEXT NOT NULL,
    day TEXT NOT NULL,             -- the local date it was reserved on
    kind TEXT NOT NULL, model TEXT NOT NULL,
    task_id TEXT,                  -- NULL: an image call, or a creation that had no answer (yet)
    state TEXT NOT NULL,           -- reserved, unknown (no answer), settled, released
    amount REAL NOT NULL,          -- the quote while reserved; what Ark billed once settled
    rate REAL,                     -- per million tokens, or per image: what settles it from Ark's usage
    posted REAL NOT NULL           -- when it was sent (unix seconds)
)""",
    "CREATE INDEX IF NOT EXISTS spend_day ON spend (owner, day)",
    "CREATE INDEX IF NOT EXISTS spend_task ON spend (task_id)",
)
# Rows a sum trusts: an amount another program wrote as text, negative or absurd counts as nothing.
TRUSTED_AMOUNT = "CASE WHEN typeof(amount) IN ('real', 'integer') AND amount BETWEEN 0 AND 1e12 THEN amount ELSE 0 END"


class OverLimit(Exception):
    def __init__(self, spent: float):
        self.spent = spent


class LedgerRow(NamedTuple):
    row: int
    task_id: str | None
    model: str
    posted: float
    unknown: bool


class Ledger:
    """Today's spend by key: in the task record's file, or in memory (path None)."""

    def __init__(self, path: Path | None, currency: str):
        self.path, self.currency = path, currency
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        # The day old rows were last removed.
        self.pruned = ""

    def _open(self) -> sqlite3.Connection:
        """The connection, opened at first use (the record made the file and its table)."""
        if self.db is None:
            db = sqlite3.connect(
                self.path or ":memory:",
                timeout=LEDGER_WAIT_SECONDS,
                check_same_thread=False,
                isolation_level=None,
            )
            for statement in SPEND_SCHEMA:
                db.execute(statement)
            self.db = db
        return self.db

    def reserve(
        self, owner: str | None, quote: Quote, limit: float, kind: str, model: str
    ) -> int:
        """Reserve the quote, if today's spend leaves room for it: the row, or OverLimit."""
        with self.lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                # Rows long past any day they count for are removed, once a day.
                if self.pruned != today():
                    db.execute(
                        "DELETE FROM spend WHERE posted < ?",
                        (time.time() - 2 * ARK_RETENTION_SECONDS,),
                    )
                    self.pruned = today()
                spent = self._spent(db, owner)
                if spent + (quote.amount or 0) > limit:
                    raise OverLimit(spent)
                cursor = db.execute(
                    "INSERT INTO spend (owner, currency, day, kind, model, state, amount, rate, posted) VALUES "
                    "(?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                    (
                        owner,
                        self.currency,
                        today(),
                        kind,
                        model,
                        quote.amount or 0,
                        quote.rate,
                        time.time(),
                    ),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(cursor.lastrowid or 0)

    def spent(self, owner: str | None) -> float:
        with self.lock:
            return self._spent(self._open(), owner)

    def _spent(self, db: sqlite3.Connection, owner: str | None) -> float:
        (total,) = db.execute(
            f"SELECT TOTAL({TRUSTED_AMOUNT}) FROM spend WHERE owner IS ? AND day = ? AND currency = ? AND state != "
            "'released'",
            (owner, today(), self.currency),
        ).fetchone()
        return float(total)

    def _run(self, sql: str, *values: Any) -> list[Any]:
        with self.lock:
            return self._open().execute(sql, values).fetchall()

    def created(self, row: int, task_id: str | None) -> None:
        """The POST's task, or no answer to it (unknown: still reserved)."""
        state = "reserved" if task_id else "unknown"
        self._run(
            "UPDATE spend SET task_id = ?, state = ? WHERE id = ?", task_id, state, row
        )

    def release(self, row: int) -> None:
        self._run("UPDATE spend SET state = 'released', amount = 0 WHERE id = ?", row)

    def settle_row(self, row: int, billed: float | None) -> None:
        """An image call's answer: what it billed, or (no usage in the answer) the quote stands."""
        if billed is None:
            self._run("UPDATE spend SET state = 'settled' WHERE id = ?", row)
        else:
            self._run(
                "UPDATE spend SET state = 'settled', amount = ? WHERE id = ?",
                billed,
                row,
            )

    def settle(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """Finished tasks: a succeeded one's tokens at the rate it was quoted at (no usage: the quote stands), any
        other status nothing. Only tasks with an open reservation are written: a query of a finished task reads one
        index, and writes nothing."""
        tasks = list(tasks)
        reserved = self.tasks_with_rows(
            (task["task_id"] for task in tasks), state="reserved"
        )
        for task in tasks:
            if task["task_id"] not in reserved:
                continue
            usage = as_object(task.get("usage"))
            tokens = clean_int(usage.get("total_tokens")) or clean_int(
                usage.get("completion_tokens")
            )
            if task["status"] != "succeeded":
                self._run(
                    "UPDATE spend SET state = 'released', amount = 0 WHERE task_id = ? AND state = 'reserved'",
                    task["task_id"],
                )
            elif tokens is None:
                self._run(
                    "UPDATE spend SET state = 'settled' WHERE task_id = ? AND state = 'reserved'",
                    task["task_id"],
                )
            else:
                self._run(
                    "UPDATE spend SET state = 'settled', amount = CASE WHEN typeof(rate) = 'real' OR typeof(rate) = "
                    "'integer' THEN ? * rate / 1e6 ELSE 0 END WHERE task_id = ? AND state = 'reserved'",
                    tokens,
                    task["task_id"],
                )

    def open_rows(self, owner: str | None) -> list[LedgerRow]:
        """This key's video reservations not settled yet: with a task, or whose creation had no answer."""
        rows = self._run(
            "SELECT id, task_id, model, posted, state FROM spend WHERE owner IS ? AND kind = 'video' AND state IN "
            "('reserved', 'unknown') AND posted > ? ORDER BY id LIMIT ?",
            owner,
            time.time() - ARK_RETENTION_SECONDS,
            LIST_PAGE_TASKS,
        )
        return [
            LedgerRow(
                row,
                task_id if isinstance(task_id, str) else None,
                str(model),
                float(posted),
                state == "unknown",
            )
            for row, task_id, model, posted, state in rows
            if is_amount(posted)
        ]

    def tasks_with_rows(
        self, task_ids: Iterable[str], state: str | None = None
    ) -> set[str]:
        """Which of these tasks have a row here (in this state, when one is given)."""
        ids = [task_id for task_id in task_ids if task_id]
        found: set[str] = set()
        for start in range(0, len(ids), SQL_CHUNK_IDS):
            chunk = ids[start : start + SQL_CHUNK_IDS]
            rows = self._run(
                f"SELECT task_id FROM spend WHERE (? IS NULL OR state = ?) AND task_id IN "
                f"({', '.join('?' * len(chunk))})",
                state,
                state,
                *chunk,
            )
            found.update(task_id for (task_id,) in rows)
        return found


def today() -> str:
    """The local date: the day's limit turns at local midnight."""
    return datetime.now().strftime("%Y-%m-%d")


# --- Downloads: only a real image or video is saved, from public addresses --------------------------------------------
# A result's files: fetched from addresses that are not a door into the host, written to a .part file that becomes
# the file only when complete and of the kind expected, never over an existing file.


def download(
    client: ArkClient, url: str, folder: Folder, stem: str, kind: str, max_bytes: int
) -> SavedFile:
    """Stream a result file to disk; only a file of the expected `kind` is kept."""

    def keep(chunks: Iterator[bytes]) -> SavedFile:
        return write_file(folder, stem, chunks, kind, max_bytes)

    return get_file(client, url, client.limits.download_deadline, max_bytes, keep)


def get_file(
    client: ArkClient,
    url: str,
    seconds: float,
    max_bytes: int,
    keep: Callable[[Iterator[bytes]], T],
) -> T:
    """A result file from its pre-signed URL, without the API key: within `seconds`, above the minimum rate, and
    refused unread when it declares more than `max_bytes`. `keep` consumes its body, chunk by chunk. Redirects
    are followed here, each hop checked by the media policy before it is fetched and at the address it connects
    to; no error quotes what a server that is not a media store said."""
    deadline = client.clock() + seconds
    read = partial(read_file, max_bytes=max_bytes, keep=keep)
    try:
        for hop in range(MAX_REDIRECTS + 1):
            if hop and urlsplit(url).scheme not in ("http", "https"):
                raise DoubaoError(
                    f"redirected to a URL that is not http(s) ({clean_text(url, 100)})"
                )
            answer = exchange(
                client,
                "GET",
                url,
                seconds,
                read,
                read_timeout=DOWNLOAD_SILENCE_SECONDS,
                min_rate=client.limits.download_min_rate,
                allow_redirects=False,
                guard=client.media.check(url),
                deadline=deadline,
            )
            if not isinstance(answer, Redirect):
                return answer
            url = urljoin(url, answer.location)
        raise DoubaoError(f"more than {MAX_REDIRECTS} redirects")
    except requests.RequestException as error:
        reason = failure_reason(error, DOWNLOAD_SILENCE_SECONDS)
        raise DoubaoError(Redactor(client.secrets)(reason)) from error
    except DoubaoError as error:
        raise DoubaoError(Redactor(client.secrets)(str(error))) from None


def fetch_file(
    client: ArkClient,
    url: str,
    kind: str,
    seconds: float,
    max_bytes: int = PREVIEW_SOURCE_MAX_BYTES,
) -> bytes:
    """A result file read into memory, as a download is written to disk, and only when its bytes are the
    expected `kind` of file."""

    def read(chunks: Iterator[bytes]) -> bytes:
        data = b"".join(
            capped(
                chunks,
                max_bytes,
                lambda: DoubaoError(f"the file is over {size_text(max_bytes)}"),
            )
        )
        expect_kind(data[:SNIFF_BYTES], kind)
        return data

    return get_file(client, url, seconds, max_bytes, read)


class MediaPolicy:
    """Where result files may be fetched from, for saving and previews: upstream URLs must not be a door into the host.
    Allowed: the origin of ARK_BASE_URL itself (how local proxies and tests work), the origins in DOUBAO_MEDIA_DOMAINS
    (Ark's storage by default), and any other host whose every address is public. Refused: loopback, private,
    link-local (cloud metadata), shared and reserved addresses, checked for each hop by name before it is fetched
    and by the address actually connected to."""

    def __init__(self, base_url: str, domains: Iterable[str]):
        domains = list(domains)
        self.origins = {origin_of(base_url)} | {
            origin_of(d) for d in domains if "*." not in d
        }
        self.wildcards = [
            (scheme, host)
            for scheme, _, host in (d.partition("://*.") for d in domains if "*." in d)
        ]

    def check(self, url: str) -> Guard | None:
        """Refuse a URL whose host is at an address files are not fetched from; else what checks the address it
        connects to (None for an allowed origin)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DoubaoError(f"not an http(s) URL: {clean_text(url, 100)!r}")
        if self.allowed_origin(url):
            return None
        try:
            found = socket.getaddrinfo(
                parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
            )
            addresses = {info[4][0] for info in found}
        except (OSError, UnicodeError):
            # A name that does not resolve cannot be fetched either; one that resolves later is checked when it
            # connects.
            addresses = set()
        for address in sorted(addresses):
            reason = self.refuse_address(parts.hostname, parts.hostname, str(address))
            if reason:
                raise DoubaoError(reason)
        return partial(self.refuse_address, parts.hostname)

    def refuse_address(
        self, host: str, connected_host: str, address: str
    ) -> str | None:
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
        if ip.is_loopback:
            kind = "loopback"
        elif ip.is_link_local:
            kind = "link-local (cloud metadata)"
        elif ip.is_private:
            kind = "private"
        else:
            kind = "non-public"
        return (
            f"{host} is at {ip}, a {kind} address: result files are fetched only from public addresses, the "
            "origin of ARK_BASE_URL, and DOUBAO_MEDIA_DOMAINS (which the operator may extend)"
        )

    def allowed_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        if origin_of(url) in self.origins:
            return True
        hostname = parts.hostname or ""
        return any(
            parts.scheme == scheme
            and hostname.endswith("." + host.split(":")[0].lower())
            for scheme, host in self.wildcards
        )


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return (
        scheme,
        (parts.hostname or "").lower(),
        parts.port or (443 if scheme == "https" else 80),
    )


def read_file(
    response: requests.Response,
    exchange: Exchange,
    max_bytes: int,
    keep: Callable[[Iterator[bytes]], T],
) -> T | Redirect:
    """A result file's answer: a redirect to follow, or its body handed to `keep` as it streams in."""
    if response.status_code in (301, 302, 303, 307, 308) and response.headers.get(
        "Location"
    ):
        return Redirect(response.headers["Location"])
    if response.status_code != 200:
        raise DoubaoError(f"the download answered HTTP {response.status_code}")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DoubaoError(
            f"the file is {size_text(int(declared))}, over the {size_text(max_bytes)} download cap"
        )
    return keep(exchange.counted(response.iter_content(DOWNLOAD_CHUNK_BYTES)))


# (host, address connected to): why a download there is refused, or None.
Guard = Callable[[str, str], "str | None"]


def write_file(
    folder: Folder,
    stem: str,
    chunks: Iterable[bytes],
    kind: str,
    max_bytes: int,
) -> SavedFile:
    """Stream chunks to a hidden .part file, check that the bytes are the `kind` of file expected ("image" or
    "video"), then move it to a name no existing file has. A failure at any point leaves nothing behind; the
    extension comes from the content."""
    if not folder.swept:
        sweep_parts(folder)
    stem = (
        re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")[:STEM_MAX_CHARS] or "doubao"
    )
    with LIVE_PARTS_LOCK:
        if PARTS_ENDED.is_set():
            raise DoubaoError("not saved: the server is stopping")
        part, fd = create_part(folder, stem)
        live = str(folder.path / part)
        LIVE_PARTS.add(live)
    log.debug("Writing %s", live)
    try:
        written = write_part(fd, chunks, kind, max_bytes)
        return SavedFile(
            path=str(folder.path / claim_name(folder, part, stem, written.extension)),
            bytes=written.size,
            sha256=written.sha256,
        )
    finally:
        folder.unlink(part)
        LIVE_PARTS.discard(live)


class Written(NamedTuple):
    size: int
    sha256: str
    # From the content.
    extension: str


def sweep_parts(
    folder: Folder,
) -> None:
    """Remove the .part files a killed process left here, at once: a live download holds a lock on its own (where
    there are no locks, on Windows, one older than any download can be is removed)."""
    folder.swept = True
    with (
        contextlib.suppress(OSError),
        os.scandir(folder.fd if folder.fd is not None else folder.path) as entries,
    ):
        for entry in entries:
            if not PART_FILE.fullmatch(entry.name):
                continue
            if fcntl is None:
                if (
                    time.time() - entry.stat(follow_symlinks=False).st_mtime
                    > STALE_PART_SECONDS
                ):
                    folder.unlink(entry.name)
                continue
            where, at = folder._at(entry.name)
            with contextlib.suppress(OSError):
                fd = os.open(where, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), **at)
                try:
                    # Taken: nobody is writing it.
                    fcntl.flock(
                        fd,
                        fcntl.LOCK_EX | fcntl.LOCK_NB,
                    )
                    folder.unlink(entry.name)
                finally:
                    os.close(fd)


def create_part(folder: Folder, stem: str) -> tuple[str, int]:
    """A new hidden .part file, locked for as long as it is open: the lock is what tells a live download from one
    a killed process left. Made again if a sweep removed it between its creation and its lock."""
    while True:
        name = f".{stem}.{uuid.uuid4().hex[:8]}.part"
        fd = folder.create(name)
        if fcntl is None:
            return name, fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return name, fd
        os.close(fd)


@dataclass(frozen=True)
class Redirect:
    location: str


def write_part(fd: int, chunks: Iterable[bytes], kind: str, max_bytes: int) -> Written:
    """Write the chunks into the open .part file, checking its kind as soon as its first bytes are in."""
    size, head, found, digest = 0, b"", None, hashlib.sha256()
    too_big = DoubaoError(
        f"the file is larger than the {size_text(max_bytes)} download cap"
    )
    with os.fdopen(fd, "wb") as out:
        for chunk in capped(chunks, max_bytes, lambda: too_big):
            size += len(chunk)
            head += chunk[: SNIFF_BYTES - len(head)]
            if found is None and len(head) == SNIFF_BYTES:
                found = expect_kind(head, kind)
            digest.update(chunk)
            out.write(chunk)
    found = found or expect_kind(head, kind)
    return Written(size=size, sha256=digest.hexdigest(), extension=found.extension)


def expect_kind(head: bytes, kind: str) -> Signature:
    """The signature of a download that must be an image or a video; anything else is refused, and never quoted: it
    may be another service's secret."""
    found = sniff(head)
    if not found or not found.mime.startswith(kind + "/"):
        described = "an image" if kind == "image" else "a video"
        seen = found.mime if found else "no known file type"
        raise DoubaoError(f"the download is not {described} ({seen}): not saved")
    return found


def sniff(head: bytes) -> Signature | None:
    """What kind of file begins with these bytes, or None if it is none we know."""
    return next(
        (
            s
            for s in FILE_SIGNATURES
            if head[s.offset : s.offset + len(s.magic)] == s.magic
        ),
        None,
    )


def claim_name(folder: Folder, part: str, stem: str, extension: str) -> str:
    """Move the finished .part file to the first of stem, stem-1, stem-2, ... that no file has: the name is claimed
    atomically, so that an existing file is never replaced."""
    for n in range(MAX_SAME_NAME):
        final = f"{stem}-{n}{extension}" if n else f"{stem}{extension}"
        try:
            os.close(folder.create(final))
        except FileExistsError:
            continue
        try:
            folder.replace(part, final)
        except OSError:
            folder.unlink(final)
            raise
        return final
    raise DoubaoError(
        f"{folder.path} already has {MAX_SAME_NAME} files named {stem}*{extension}"
    )


def remove_live_parts() -> None:
    """At exit: the .part files of downloads that never finished. A download that is about to make one (its thread
    outlives this call until the process ends) makes none: the lock is waited for at most a second, since this also
    runs in a signal handler."""
    PARTS_ENDED.set()
    locked = LIVE_PARTS_LOCK.acquire(timeout=EXIT_LOCK_SECONDS)
    try:
        for live in list(LIVE_PARTS):
            with contextlib.suppress(OSError):
                os.unlink(live)
    finally:
        if locked:
            LIVE_PARTS_LOCK.release()


# --- Previews: a small JPEG of each image a result shows --------------------------------------------------------------


async def wrap_result(studio: Studio, result: Any) -> CallToolResult:
    """The result as the client gets it: its JSON as text, then a preview of each image it shows."""
    text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    shown = []
    for jpeg in await make_previews(studio, result):
        encoded = base64.b64encode(jpeg).decode()
        shown.append(ImageContent(type="image", data=encoded, mime_type="image/jpeg"))
    return CallToolResult(
        content=[TextContent(type="text", text=text), *shown],
        structured_content=result,
    )


async def make_previews(studio: Studio, result: Mapping[str, Any]) -> list[bytes]:
    """JPEG previews of what a result shows (its images, or a finished video's last frame), from the saved file when
    there is one, else fetched like a download. Made at once, within PREVIEW_DEADLINE_SECONDS; one that fails or comes
    late is left out, with a log line. None with DOUBAO_PREVIEWS=0."""
    if not studio.config.previews:
        return []
    sources = preview_sources(result)
    made: dict[int, bytes] = {}

    async def one(index: int, url: str | None, path: str | None) -> None:
        try:
            made[index] = await studio.lanes.slow.run(preview_of, studio, url, path)
        except Exception as error:
            log.warning("No preview of %s: %s", clean_text(path or url, 100), error)

    with anyio.move_on_after(PREVIEW_DEADLINE_SECONDS):
        async with anyio.create_task_group() as group:
            for index, (url, path) in enumerate(sources):
                group.start_soon(one, index, url, path)
    return [made[index] for index in sorted(made)]


def preview_sources(result: Mapping[str, Any]) -> list[tuple[str | None, str | None]]:
    """(URL, saved path) of each image a result shows, each image known by its index, never by a file name."""
    saved = [f for f in result.get("saved_files", []) if not f.get("missing")]
    if isinstance(result.get("images"), list):
        paths = {f.get("index"): f["path"] for f in saved}
        return [
            (image.get("url"), paths.get(image["index"])) for image in result["images"]
        ]
    if result.get("status") == "succeeded" and result.get("last_frame_url"):
        frame = next((f["path"] for f in saved if f.get("kind") == "last_frame"), None)
        return [(result["last_frame_url"], frame)]
    return []


def preview_of(studio: Studio, url: str | None, path: str | None) -> bytes:
    """A preview from the saved file (no second download), else from the URL."""
    if path:
        data = read_input(
            Path(path),
            studio.config.allowed_dir,
            "preview",
            PREVIEW_SOURCE_MAX_BYTES,
            "an image",
        )
    elif url:
        data = fetch_file(studio.client, url, "image", PREVIEW_DEADLINE_SECONDS)
    else:
        raise DoubaoError("an inline image that was not saved")
    return make_preview(data)


def make_preview(data: bytes) -> bytes:
    """A JPEG preview of an image: at most PREVIEW_SIDE_PIXELS pixels on its longest side and about PREVIEW_MAX_BYTES.
    Its size is read from its header and checked before anything is decoded (Pillow's own bomb check only warns up
    to twice its limit), and one image is decoded at a time, so that an answer of bombs costs no memory at all."""
    # Only previews need Pillow: stdio start-up does not pay for its import.
    from PIL import Image

    # Checked here, before decoding, as an error and not a warning.
    Image.MAX_IMAGE_PIXELS = None
    # Opening reads the header only.
    with Image.open(io.BytesIO(data)) as opened:
        width, height = opened.size
        if width * height > PREVIEW_MAX_PIXELS:
            raise DoubaoError(
                f"the image is {width}x{height} pixels, more than any Seedream image: not decoded"
            )
        with DECODING:
            # A JPEG decodes at a fraction of its size: faster.
            opened.draft("RGB", (PREVIEW_SIDE_PIXELS, PREVIEW_SIDE_PIXELS))
            opened.thumbnail((PREVIEW_SIDE_PIXELS, PREVIEW_SIDE_PIXELS))
            image = opened.convert("RGB")
    for side, quality in PREVIEW_STEPS:
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= PREVIEW_MAX_BYTES:
            break
    return out.getvalue()


# --- The watcher: videos saved when they finish, whoever still listens ------------------------------------------------


class Watcher:
    """One daemon thread that keeps watching the tasks made with a save folder, whoever still listens: it polls
    them (many in one list request) with the same backoff as a wait, at a bounded pace, saves the video (and its
    last frame) when it succeeds, records a failure, and stops at a final state. It uses the server's own key,
    and one connection at a time. Record errors never stop it: the record never raises."""

    def __init__(
        self,
        client: ArkClient,
        record: Record,
        api_key: str,
        config: Config,
        gap: float = WATCH_GAP_SECONDS,
    ):
        self.client, self.record, self.api_key, self.config, self.gap = (
            client,
            record,
            api_key,
            config,
            gap,
        )
        self.owner = key_fingerprint(api_key) or ""
        # A heap of (when to poll next, task id)
        self.due: list[tuple[float, str]] = []
        # Task id: save folder, the interval after the next poll.
        self.tasks: dict[str, tuple[Path, float]] = {}
        # Tasks not polled yet.
        self.new: set[str] = set()
        # Tasks a list answer left out: asked about one by one.
        self.alone: set[str] = set()
        self.condition = threading.Condition()
        # What a pause between requests waits on: a new task does not shorten it.
        self.stopping = threading.Event()
        self.shared: tuple[asyncio.AbstractEventLoop, PollBatcher] | None = None
        # The server's day's spend (set by build_server).
        self.spend: Spend | None = None
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
            self.tasks[task_id] = (folder, first * WATCH_BACKOFF)
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
            self.thread = threading.Thread(
                target=self._run, name="doubao-watcher", daemon=True
            )
            self.thread.start()

    def stop(self) -> None:
        with self.condition:
            self.stopped = True
            self.stopping.set()
            self.condition.notify()

    def _resume(self) -> None:
        orphans = self.record.orphans(self.owner)
        for task_id, save_dir in orphans[:RESUME_LOG_LINES]:
            log.info(
                "Resuming %s: it is saved into %s when it finishes.", task_id, save_dir
            )
        if len(orphans) > RESUME_LOG_LINES:
            log.info("Resuming %d more tasks.", len(orphans) - RESUME_LOG_LINES)
        # All at once, then in batches of LIST_PAGE_TASKS, one batch per gap.
        due = time.monotonic()
        for task_id, save_dir in orphans:
            self.watch(task_id, Path(save_dir), due)

    def _run(self) -> None:
        if self.resuming:
            self._resume()
        while True:
            with self.condition:
                while not self.stopped and (
                    not self.due or self.due[0][0] > time.monotonic()
                ):
                    self.condition.wait(
                        self.due[0][0] - time.monotonic() if self.due else None
                    )
                if self.stopped:
                    return
                batch: list[str] = []
                while (
                    self.due
                    and self.due[0][0] <= time.monotonic()
                    and len(batch) < LIST_PAGE_TASKS
                ):
                    batch.append(heapq.heappop(self.due)[1])
                first = [task_id for task_id in batch if task_id in self.new]
                self.new.difference_update(first)
            # Stamped here, off the callers' path.
            if first:
                self.record.watching(first)
            try:
                again = self._poll(batch)
            # A bug must not end the watching of every other task.
            except Exception:
                log.exception("Watching %s failed", ", ".join(batch)[:200])
                again = set()
            with self.condition:
                for task_id in batch:
                    folder, interval = self.tasks[task_id]
                    if task_id in again and not self.stopped:
                        self.tasks[task_id] = (
                            folder,
                            min(
                                interval * WATCH_BACKOFF, self.config.poll_intervals[1]
                            ),
                        )
                        heapq.heappush(self.due, (time.monotonic() + interval, task_id))
                    else:
                        del self.tasks[task_id]
                        self.alone.discard(task_id)
            # The pace: one request per gap at most (a stop cuts it short)
            self.stopping.wait(self.gap)
            if time.monotonic() - self.beat > WATCH_BEAT_SECONDS:
                self.beat = time.monotonic()
                self.record.heartbeat()

    def share(
        self, loop: asyncio.AbstractEventLoop | None, batcher: PollBatcher | None
    ) -> None:
        """While a server runs (its lifespan), poll through its shared batcher for this key: a task that a wait and
        the watcher both follow costs one request a poll, not two. Without one, the watcher polls on its own."""
        self.shared = (loop, batcher) if loop and batcher else None

    def _listed(self, task_ids: list[str]) -> dict[str, Task | Exception] | None:
        """These tasks in one request, each its task or why not (NotListed: the list left it out); None when the
        request failed as a whole."""
        shared = self.shared
        if shared:
            loop, batcher = shared
            try:
                return asyncio.run_coroutine_threadsafe(
                    polled_together(batcher, task_ids),
                    loop,
                ).result(
                    timeout=self.config.limits.task_deadline
                    + WATCH_SHARED_GRACE_SECONDS
                )
            # The loop stopped, or it took too long: polled again next round.
            except Exception:
                return None
        try:
            found = tasks_by_id(self.client, task_ids, self.api_key)
        except DoubaoError as error:
            return dict.fromkeys(task_ids, error)
        return {
            task_id: found.get(task_id) or NotListed(task_id) for task_id in task_ids
        }

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
            missing = [
                task_id
                for task_id, outcome in outcomes.items()
                if isinstance(outcome, NotListed)
                or (
                    isinstance(outcome, ArkAPIError)
                    and not transient_status(outcome.status)
                )
            ]
            self.alone.update(missing)
            alone, together = missing + alone, []
            again |= {
                task_id
                for task_id, outcome in outcomes.items()
                if task_id not in missing
                and (isinstance(outcome, Exception) or self._handle(outcome))
            }
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
            task = shape_task(
                self.client.get_task(task_id, self.api_key, retry=False), task_id
            )
        except DoubaoError as error:
            # Ark's refusal (not found, a revoked key) is final; anything else may pass, and is polled again.
            if (
                isinstance(error, ArkAPIError)
                and not transient_status(error.status)
                and not self.stopped
            ):
                log.warning("Stopped watching %s: %s", task_id, error)
                self.record.gave_up(task_id, str(error))
                return False
            return True
        return self._handle(task)

    def _handle(self, task: Task) -> bool:
        """What Ark said of a task: recorded, and its files saved when it succeeded. True to poll again."""
        task_id = task["task_id"]
        self.record.observed([task])
        if self.spend:
            settle_spend(self.spend, [task])
        if task["status"] not in FINAL_STATUSES:
            return True
        if task["status"] != "succeeded":
            log.warning(
                "%s is %s, so there is nothing to save: %s",
                task_id,
                task["status"],
                task.get("error_message") or task["next_step"],
            )
            return False
        folder = self.tasks[task_id][0]
        try:
            opened = open_folder(folder, self.config.allowed_dir)
        # The folder went away or became unwritable; tried again at the next start.
        except DoubaoError as error:
            log.warning("Saving %s failed: %s", task_id, error)
            self.record.failed(task_id, str(error))
            return False
        known = self.record.files_of([task_id]).get(task_id)
        saved = save_missing(
            self.client,
            self.record,
            task,
            opened,
            self.config.max_download_bytes,
            known,
        )
        if saved and saved.get("saved_files"):
            log.info(
                "Saved %s: %s",
                task_id,
                ", ".join(f["path"] for f in saved["saved_files"]),
            )
        if saved and saved.get("save_errors"):
            log.warning(
                "Saving %s failed: %s",
                task_id,
                "; ".join(e["error"] for e in saved["save_errors"]),
            )
        return False


async def polled_together(
    batcher: PollBatcher, task_ids: list[str]
) -> dict[str, Task | Exception]:
    """The watcher's polls, through a key's shared batcher: each task, or why not."""
    polls = (batcher.poll(task_id, alone_if_missing=False) for task_id in task_ids)
    outcomes = await asyncio.gather(*polls, return_exceptions=True)
    found: dict[str, Task | Exception] = {}
    for task_id, outcome in zip(task_ids, outcomes, strict=True):
        found[task_id] = (
            outcome
            if isinstance(outcome, (dict, Exception))
            else DoubaoError("the poll was interrupted")
        )
    return found


# --- The asset API: Ark's signed OpenAPI, each call signed, its answer read within a cap, mapped to data or an error --
# The asset library is not the Ark API: it takes an access key and a secret key, signed Volcengine's V4 way
# (HMAC-SHA256, as volcenginesdkcore's signv4.py does; the tests check this signer against that one), and answers
# `{ResponseMetadata: {Error}, Result}`, an error sometimes with HTTP 200. Its calls go through the same exchanges
# as Ark's (deadlines, caps, the retries a POST may have: only where nothing can have been done) and the same
# redaction, both keys included.


class AssetAPIError(DoubaoError):
    """The asset API refused a call: a non-2xx answer, or an error inside a 2xx one."""

    def __init__(
        self, action: str, status: int, code: str, message: str, request_id: str | None
    ):
        self.action, self.status, self.code, self.message = (
            action,
            status,
            code,
            message,
        )
        self.request_id = request_id
        super().__init__(str(self))

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or bool(ASSET_RATE_LIMITED.search(self.code))

    @property
    def outcome_unknown(self) -> bool:
        """A 5xx: the call may have been done."""
        return self.status >= 500

    def __str__(self) -> str:
        said = " ".join(filter(None, [str(self.status), self.code]))
        text = f"The asset library refused {self.action} ({said}): {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        hint = hint_in(ASSET_HINTS, self.code)
        if hint is None and self.status in (401, 403):
            hint = ASSET_HINTS["SignatureDoesNotMatch"]
        return " ".join(filter(None, [f"{text}.", hint]))


UNKNOWN_ACCESS_KEY = (
    "The access key is not known here: check it, and that DOUBAO_ASSET_API_URL is this "
    "account's region."
)
ASSET_HINTS = {
    "SignatureDoesNotMatch": "Check the access key and secret key (VOLCENGINE_ACCESS_KEY and VOLCENGINE_SECRET_KEY, "
    "or BYTEPLUS_ACCESS_KEY and BYTEPLUS_SECRET_KEY): they are the account's access keys from the console's key "
    "management, not the Ark API key; and DOUBAO_ASSET_REGION, if set.",
    "InvalidAccessKey": UNKNOWN_ACCESS_KEY,
    "InvalidCredential": UNKNOWN_ACCESS_KEY,
    "SubscriptionRequired": "This account cannot make assets yet: enable asset creation in the Ark console's asset "
    "library first.",
    "QuotaExceeded": "The library is full (the entry tier holds 50 assets and 50 groups): remove some with "
    "remove_asset.",
    "Forbidden": "The access key may not use the asset library: give its user the Ark permissions in the console.",
    "NotFound": "No such asset or group in this project (DOUBAO_ASSET_PROJECT): see list_assets.",
}


def sign_v4(
    request: requests.PreparedRequest,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime,
) -> None:
    """Sign a request as Volcengine's V4 does: X-Date and X-Content-Sha256 added, then content-type, host and every
    x-* header signed, with the query sorted and percent-encoded and the secret key as the key chain's root."""
    parts = urlsplit(request.url or "")
    # Bytes: asset_call sends its body encoded.
    body_bytes = cast(bytes, request.body or b"")
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.sha256(body_bytes).hexdigest()
    request.headers["X-Date"] = stamp
    request.headers["X-Content-Sha256"] = digest
    # Sent as signed: urllib3 sends the Host given, and a default port is not part of it.
    request.headers["Host"] = re.sub(r":(80|443)$", "", parts.netloc)
    signed = {
        name.lower(): str(value).strip()
        for name, value in request.headers.items()
        if name.lower() in ("content-type", "content-md5", "host")
        or name.lower().startswith("x-")
    }
    names = ";".join(sorted(signed))
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        )
    )
    canonical = "\n".join(
        [
            request.method or "POST",
            parts.path or "/",
            query,
            "".join(f"{name}:{signed[name]}\n" for name in sorted(signed)),
            names,
            digest,
        ]
    )
    scope = f"{stamp[:8]}/{region}/{ASSET_API_SERVICE}/request"
    to_sign = f"HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = secret_key.encode()
    for part in (stamp[:8], region, ASSET_API_SERVICE, "request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request.headers["Authorization"] = (
        f"HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}"
    )


class SignedV4(AuthBase):
    """The asset API's auth, made per request (its time is part of the signature), as BearerAuth is for Ark."""

    def __init__(self, settings: AssetSettings, clock: Callable[[], datetime]):
        self.settings, self.clock = settings, clock

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        sign_v4(
            request,
            self.settings.access_key,
            self.settings.secret_key,
            self.settings.region,
            self.clock(),
        )
        return request


def asset_call(
    client: ArkClient,
    settings: AssetSettings,
    action: str,
    body: Mapping[str, Any],
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> dict[str, Any]:
    """One asset API call: its Result, or AssetAPIError (an error in a 2xx answer too), or ArkConnectionError when no
    answer could be read. A POST is retried only where nothing can have been done (see retry_delay): a Create* whose
    outcome is unknown is never sent twice."""
    payload = {"ProjectName": settings.project, **body}
    data = json.dumps(payload, ensure_ascii=False).encode()
    secrets = (settings.access_key, settings.secret_key, *client.secrets)
    sent = "\n".join(strings_of(payload))
    read = partial(
        read_answer,
        cap=client.limits.max_answer_bytes,
        api=("The asset library", "DOUBAO_ASSET_API_URL"),
    )
    try:
        answer = exchange(
            client,
            "POST",
            settings.url + "/",
            client.limits.task_deadline,
            read,
            params=[("Action", action), ("Version", ASSET_API_VERSION)],
            data=data,
            headers={"Content-Type": "application/json"},
            auth=SignedV4(settings, clock),
            allow_redirects=False,
        )
    except requests.RequestException as error:
        text = f"The asset library could not be reached ({action}): {failure_reason(error, TASK_READ_TIMEOUT_SECONDS)}."
        if never_connected(error):
            text += (
                f" Check your network, proxy and DOUBAO_ASSET_API_URL ({settings.url})."
            )
        else:
            text += " It may have done it anyway: look with list_assets before trying again."
        raise ArkConnectionError(Redactor(secrets, sent)(text)) from error
    raw = answer.body.decode("utf-8", "replace")
    parsed = parsed_body(raw, secrets, sent, answer.status)
    meta = as_object(as_object(parsed).get("ResponseMetadata"))
    refusal = as_object(meta.get("Error"))
    request_id = clean_text(meta.get("RequestId"), NAME_MAX_CHARS)
    if 200 <= answer.status < 300 and not refusal:
        if not isinstance(parsed, dict):
            excerpt = make_excerpt(
                Redactor(secrets, sent)(unescape(raw)), answer.headers
            )
            raise ArkConnectionError(
                f"The asset library answered {action} with something that is not JSON: {excerpt}."
            )
        return as_object(parsed.get("Result"))
    message = clean_text(refusal.get("Message"), MESSAGE_MAX_CHARS) or error_message(
        answer, {}, raw, Redactor(secrets, sent)
    )
    code = clean_text(refusal.get("Code"), NAME_MAX_CHARS) or ""
    raise AssetAPIError(action, answer.status, code, message.rstrip(" ."), request_id)


# --- Wiring: build_server and main ------------------------------------------------------------------------------------


def build_server(
    config: Config,
    client: ArkClient | None = None,
    stopping: Stopping | None = None,
    record: Record | None = None,
    watcher: Watcher | None = None,
) -> MCPServer:
    """The MCP server: the six tools and the viewer, bound to one Studio (a configuration, an Ark client, worker
    lanes, and a task record and a watcher that saves videos on its own, when they are given)."""
    client = client or new_client(config)
    studio = Studio(config, client, stopping, record, watcher)
    if watcher:
        # It settles the day's spend of the tasks it sees finish, after their conversation.
        watcher.spend = studio.spend

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Studio]:
        # The watcher's polls join the waits' of the server's own key.
        if watcher and config.api_key:
            watcher.share(asyncio.get_running_loop(), studio.poller(config.api_key))
        try:
            yield studio
        finally:
            if watcher:
                watcher.share(None, None)

    # The viewer, for hosts that speak MCP Apps; others ignore it and get the same results.
    apps = Apps()
    apps.add_html_resource(
        VIEWER_URI,
        VIEWER_HTML,
        name="doubao-mcp viewer",
        prefers_border=True,
        description="Shows generated images, and a video player or a task's progress.",
        csp=ResourceCsp(resource_domains=list(config.media_domains)),
    )
    instructions = (
        "Generate images (Seedream) and videos (Seedance) with ByteDance Doubao models on Volcengine Ark. Videos are "
        "asynchronous tasks: generate_video returns a task_id to check with query_video_task. Result URLs expire "
        "after 24 hours."
    )
    return MCPServer(
        "doubao-mcp",
        version=__version__,
        tools=[
            one
            for spec, one in zip(TOOL_SPECS, published_tools(), strict=True)
            if offers_assets(config) or not spec.assets
        ],
        extensions=[apps],
        lifespan=lifespan,
        instructions=instructions,
    )


def new_client(config: Config) -> ArkClient:
    # The storage credentials are redacted like the key.
    storage = Uploader(config.uploads).secrets() if config.uploads else []
    assets = (
        [config.assets.access_key, config.assets.secret_key] if config.assets else []
    )
    return ArkClient(
        config.base_url,
        config.image_timeout,
        secrets=[config.api_key or "", *storage, *assets],
        limits=config.limits,
        media_domains=config.media_domains,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    # stdout is the protocol channel on stdio: every log line goes to stderr, set before MCPServer() sets its own.
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    serving_http = args.transport != "stdio"
    if not serving_http:
        # A client that stops its server sends SIGTERM; a person at a terminal, SIGINT.
        signal.signal(signal.SIGINT, exit_at_once)
        signal.signal(signal.SIGTERM, exit_at_once)
    try:
        config = replace(Config.from_env(), serving_http=serving_http)
        # DOUBAO_OUTPUT_DIR is made now if missing, and an unusable one reported now.
        choose_folder(None, config)
    except (ConfigError, DoubaoError) as error:
        # SystemExit with a message writes it to stderr.
        sys.exit(f"doubao-mcp: {error}")
    client = new_client(config)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactedLog(lambda: client.secrets))
    record = open_record(
        config, explicit=bool(os.environ.get("DOUBAO_STATE_DIR", "").strip())
    )
    if args.prune_uploads is not None:
        # stderr: a person at a terminal reads it; stdout stays the protocol's, even here.
        status, told = prune_uploads(config, record, args.prune_uploads)
        sys.stderr.write(f"doubao-mcp: {told}\n")
        sys.exit(status)
    watcher = (
        Watcher(client, record, config.api_key, config)
        if record and config.api_key
        else None
    )
    stopping = Stopping()
    server = build_server(config, client, stopping, record, watcher)
    try:
        if watcher:
            watcher.resume()
        if serving_http:
            serve_http(server, args, config, stopping)
        else:
            serve_stdio_until_closed(server, config)
    finally:
        if watcher:
            watcher.stop()
        # Ends every exchange still in flight, the watcher's too.
        client.close()
        remove_live_parts()
    end_process()


def end_process() -> None:
    """The server has stopped and cleaned up: end now, without the interpreter's teardown of every module (half a
    second after the SDK's import, longer than the server's own start), which a client restarting its server would
    wait out. Nothing is lost: the record commits each write as it is made, and what runs on the lanes' daemon
    threads ends with the process either way."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def prune_uploads(
    config: Config, record: Record | None, days: float
) -> tuple[int, str]:
    """--prune-uploads: remove this server's uploads that no call has used for `days` days, counted from the task
    record (never by listing the bucket). The exit status, and what to tell."""
    if config.uploads is None or record is None:
        return 2, (
            "--prune-uploads needs DOUBAO_UPLOADS and the task record (DOUBAO_STATE_DIR), which remembers what was "
            "uploaded."
        )
    unused_since = time.time() - timedelta(days=days).total_seconds()
    keys = record.uploads_before(config.uploads.bucket, unused_since)
    gone = Uploader(config.uploads).remove(keys)
    record.forget_uploads(config.uploads.bucket, gone)
    told = f"removed {len(gone)} of {len(keys)} uploads not used for {days:g} days from {config.uploads}."
    return (0 if len(gone) == len(keys) else 1), told


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    settings = (__doc__ or "")[(__doc__ or "").index("Environment:") :].split(
        "\n\nRun it", 1
    )[0]
    parser = argparse.ArgumentParser(
        prog="doubao-image-video-mcp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MCP server for Doubao Seedream images and Seedance videos (Volcengine Ark). Each option "
        "below also reads the variable named in it.",
        epilog=settings.replace("Environment:", "environment:", 1),
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=env.get("DOUBAO_MCP_TRANSPORT", "stdio"),
        help="stdio (default) for a local client; streamable-http (or http) to host it (DOUBAO_MCP_TRANSPORT)",
    )
    parser.add_argument(
        "--host",
        default=env.get("DOUBAO_MCP_HOST", "127.0.0.1"),
        help="HTTP bind address, default 127.0.0.1 (DOUBAO_MCP_HOST)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env.get("DOUBAO_MCP_PORT", "8000"),
        help="HTTP port, default 8000 (DOUBAO_MCP_PORT)",
    )
    parser.add_argument(
        "--allowed-hosts",
        default=env.get("DOUBAO_MCP_ALLOWED_HOSTS", ""),
        help="comma-separated Host names clients use, e.g. mcp.example.com; turns on "
        "DNS-rebinding protection for non-loopback binds (DOUBAO_MCP_ALLOWED_HOSTS)",
    )
    parser.add_argument(
        "--allowed-origins",
        default=env.get("DOUBAO_MCP_ALLOWED_ORIGINS", ""),
        help="comma-separated browser Origins allowed with --allowed-hosts (DOUBAO_MCP_ALLOWED_ORIGINS)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=env.get("DOUBAO_MCP_LOG_LEVEL", "WARNING"),
        help="stderr log level, default WARNING (DOUBAO_MCP_LOG_LEVEL)",
    )
    parser.add_argument(
        "--prune-uploads",
        type=float,
        metavar="DAYS",
        help="remove the objects this server uploaded (DOUBAO_UPLOADS) that no call has used for DAYS days, then exit",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    args = parser.parse_args(argv)
    # argparse checks no defaults.
    if args.transport not in TRANSPORTS or args.log_level not in LOG_LEVELS:
        parser.error(
            f"DOUBAO_MCP_TRANSPORT must be one of {TRANSPORTS} and DOUBAO_MCP_LOG_LEVEL one of {LOG_LEVELS}"
        )
    return args


def serve_stdio_until_closed(server: MCPServer, config: Config) -> None:
    """Serve on stdin/stdout until stdin closes; what runs on the lanes' daemon threads then ends with the process."""
    if not config.api_key:
        log.warning(
            "ARK_API_KEY is not set: tools are listed, but calls will ask for a key."
        )
    # Started by hand: say why nothing seems to happen.
    if sys.stdin.isatty():
        sys.stderr.write(
            "doubao-mcp is serving MCP on stdin/stdout and waits for an MCP client (see the README's "
            "client configuration). Ctrl-C stops it.\n"
        )
    anyio.run(serve_stdio, server)


def serve_http(
    server: MCPServer,
    args: argparse.Namespace,
    config: Config,
    stopping: Stopping,
) -> None:
    """Serve over streamable HTTP until SIGTERM or SIGINT, warning of what a non-loopback bind exposes."""
    if not is_loopback(args.host):
        if config.api_key:
            log.warning(
                "Serving on %s with ARK_API_KEY set: requests without a key of their own spend this account's credit.",
                args.host,
            )
        if not args.allowed_hosts:
            log.warning(
                "DNS-rebinding protection is off for %s: set DOUBAO_MCP_ALLOWED_HOSTS to the host names clients use.",
                args.host,
            )
    if config.assets:
        log.warning(
            "The asset tools are not offered over HTTP: every caller would use this server's one asset library, with "
            "its keys. Run the server on stdio to use them."
        )
    signal.signal(signal.SIGINT, stop_quietly)
    signal.signal(signal.SIGTERM, stop_quietly)
    where = f"[{args.host}]" if ":" in args.host else args.host
    sys.stderr.write(
        f"doubao-mcp is serving MCP over streamable HTTP at http://{where}:{args.port}/mcp. Ctrl-C stops it.\n"
    )
    hosted = http_server(
        server,
        args.host,
        args.port,
        args.allowed_hosts.split(","),
        args.allowed_origins.split(","),
        args.log_level.lower(),
        config.limits,
        stopping,
    )
    hosted.run()


@functools.cache
def published_tools() -> tuple[Tool, ...]:
    """The tools as the SDK publishes them, built once for every server in this process (the schemas are the costly
    part): arguments met halfway, lean schemas, and `answered` around each."""
    tools = []
    for spec in TOOL_SPECS:
        meta = {"ui": {"resourceUri": VIEWER_URI}} if spec.viewer else None
        registered = LenientTool.from_function(
            answered(spec),
            description=" ".join((spec.function.__doc__ or "").split()),
            annotations=ToolAnnotations(open_world_hint=True, **spec.hints),
            meta=meta,
        )
        registered.parameters = lean_schema(registered.parameters)
        registered.fn_metadata.output_schema = lean_schema(
            registered.fn_metadata.output_schema
        )
        tools.append(registered)
    return tuple(tools)


def lean_schema(node: Any, defs: dict[str, Any] | None = None) -> Any:
    """Drop pydantic's generated titles, the `anyOf: [T, null]` wrapper of optional arguments, and `$defs`
    (each is used once, and none is recursive: inlined, the reference costs more than it saves).

    Every conversation pays for tools/list in tokens; these parts make it a third longer and tell a
    model nothing that the property name and `required` do not.
    """
    if isinstance(node, list):
        return [lean_schema(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    defs = node.get("$defs", defs)
    if "$ref" in node and defs:
        return lean_schema(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    lean: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "properties":
            lean[key] = {
                name: lean_schema(schema, defs) for name, schema in value.items()
            }
        else:
            lean[key] = lean_schema(value, defs)
    # A bare {"type": "object"} already allows any keys.
    if lean.get("additionalProperties") is True and "properties" not in lean:
        del lean["additionalProperties"]
    variants: list[Any] = lean.get("anyOf", [])
    optional_value = len(variants) == 2 and {"type": "null"} in variants
    if optional_value and "default" in lean and lean["default"] is None:
        del lean["anyOf"], lean["default"]
        lean.update(next(v for v in variants if v != {"type": "null"}))
    return lean


# --- Stdio: the SDK's transport, with an answer for a line that is not JSON-RPC ---------------------------------------


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
                    parse = isinstance(item, ValidationError) and any(
                        e["type"] == "json_invalid" for e in item.errors()
                    )
                    error = (
                        ErrorData(
                            code=-32700, message="Parse error: the line is not JSON."
                        )
                        if parse
                        else ErrorData(
                            code=-32600,
                            message="Invalid request: the line is JSON but not a JSON-RPC message.",
                        )
                    )
                    await write_stream.send(
                        SessionMessage(
                            JSONRPCError(jsonrpc="2.0", id=None, error=error)
                        )
                    )

        # What MCPServer.run_stdio_async runs, fed the sorted stream.
        lowlevel = server._lowlevel_server
        async with anyio.create_task_group() as group:
            group.start_soon(sort)
            await lowlevel.run(
                inbox, write_stream, lowlevel.create_initialization_options()
            )
            group.cancel_scope.cancel()


# --- Hosting: streamable HTTP for many callers, treated as hostile ----------------------------------------------------


def is_loopback(host: str) -> bool:
    """localhost, every 127.0.0.0/8 address, and ::1."""
    host = host.strip("[]").lower()
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name in a Host header, without its port, lower case: `[::1]:8000` is `::1`, `LOCALHOST:80` `localhost`."""
    value = value.strip().lower()
    return (
        value[1 : value.index("]")]
        if value.startswith("[") and "]" in value
        else value.rsplit(":", 1)[0]
    )


class HttpGuard:
    """What a hosted server checks before the SDK sees a request, in one place: the method (a stateless server has
    no stream to GET and no session to DELETE: 405), Host and Origin against DNS rebinding (421, 403; on for
    loopback binds and with allowed hosts), and the body's size (413) and pace (408). Refusals are JSON-RPC errors
    with a sentence saying why, never a bare status."""

    def __init__(
        self,
        app: Any,
        bind: str,
        allowed_hosts: Iterable[str],
        allowed_origins: Iterable[str],
        limits: Limits,
    ):
        self.app, self.limits = app, limits
        self.loopback = is_loopback(bind)
        self.hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self.origins = {
            o.strip().lower().rstrip("/") for o in allowed_origins if o.strip()
        }
        self.checked = self.loopback or bool(self.hosts)
        # Bytes of the request bodies in flight, on the event loop.
        self.holding = 0

    def _host_allowed(self, host: str) -> bool:
        return (self.loopback and is_loopback(host_name(host))) or bool(
            {host_name(host), host.lower()} & self.hosts
        )

    def _origin_allowed(self, origin: str) -> bool:
        return (
            self.loopback and is_loopback(urlsplit(origin).hostname or "")
        ) or origin.lower().rstrip("/") in self.origins

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        limit = size_text(self.limits.max_body)
        if scope["method"] != "POST":
            return await reject(
                send,
                405,
                "This stateless MCP server answers POST only: it keeps no event stream to "
                "GET and no session to DELETE.",
                ((b"allow", b"POST"),),
            )
        if self.checked and not self._host_allowed(headers.get("host", "")):
            return await reject(
                send,
                421,
                "Host not allowed: the operator lists the names clients use in --allowed-hosts.",
            )
        if (
            self.checked
            and headers.get("origin")
            and not self._origin_allowed(headers["origin"])
        ):
            return await reject(
                send,
                403,
                "Origin not allowed: the operator lists browser origins in --allowed-origins.",
            )
        too_big = (
            413,
            f"The request body is over {limit}, the most this server takes (Ark's own limit is 64 MB of "
            "base64): pass large files as https URLs or asset:// ids.",
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_body:
            return await reject(send, *too_big)
        # Reserved before a byte is read, when declared.
        held = int(declared) if declared.isdigit() else 0
        if not self._hold(held):
            return await self._busy(send)
        await self._pass_on(scope, receive, send, held, too_big)

    async def _pass_on(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
        held: int,
        too_big: tuple[int, str],
    ) -> None:
        """Read the whole body within its deadline, then hand it to the SDK, its bytes (`held` of them already)
        held in the budget until the answer is sent."""
        chunks: list[bytes] = []
        size, more = 0, True
        try:
            try:
                # A body trickled in slowly holds nothing for long.
                with anyio.fail_after(self.limits.body_timeout):
                    while more:
                        message = await receive()
                        if message["type"] != "http.request":
                            # The client left.
                            return
                        chunks.append(message.get("body", b""))
                        size += len(chunks[-1])
                        more = message.get("more_body", False)
                        if size > self.limits.max_body:
                            return await reject(send, *too_big)
                        # A body of no declared length, held as it comes.
                        if size > held:
                            if not self._hold(size - held):
                                return await self._busy(send)
                            held = size
            except TimeoutError:
                return await reject(
                    send,
                    408,
                    f"The request body did not arrive within {self.limits.body_timeout:g} s.",
                )
            body = [b"".join(chunks)]
            # One copy of the body, handed over whole.
            chunks.clear()

            async def replay() -> dict[str, Any]:
                if body:
                    return {
                        "type": "http.request",
                        "body": body.pop(),
                        "more_body": False,
                    }
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
        await reject(
            send,
            503,
            f"The server is holding {size_text(self.holding)} of other requests, the most it holds "
            "at once: try again in a few seconds, or pass large files as https URLs.",
            ((b"retry-after", str(BUSY_RETRY_AFTER_SECONDS).encode()),),
        )


async def reject(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    status: int,
    message: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def http_server(
    server: MCPServer,
    host: str,
    port: int,
    allowed_hosts: Iterable[str],
    allowed_origins: Iterable[str],
    log_level: str,
    limits: Limits,
    stopping: Stopping,
) -> Any:
    """A uvicorn server for `server` over stateless streamable HTTP, with every limit of `limits` applied."""
    # Only hosting needs it: keeps stdio start-up lean.
    import uvicorn

    # Stateless: no session lives in this process, so any replica can answer any request. The SDK's own Host and
    # body checks are left to HttpGuard, which also knows 127.0.0.0/8, case and the pace of a body.
    app = server.streamable_http_app(
        stateless_http=True,
        host=host,
        max_request_body_size=limits.max_body + 1,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=False
        ),
    )
    # log_config=None: uvicorn's records go to our stderr handler, never to stdout.
    return graceful_server(stopping)(
        uvicorn.Config(
            HttpGuard(app, host, allowed_hosts, allowed_origins, limits),
            host=host,
            port=port,
            log_config=None,
            log_level=log_level,
            http=timed_protocol(limits),
            timeout_keep_alive=int(limits.keep_alive),
            timeout_graceful_shutdown=int(limits.grace),
            limit_concurrency=limits.max_connections,
        )
    )


def timed_protocol(limits: Limits) -> type:
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request head (see TimedH11)."""
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
            # A whole request head arrived.
            if self.cycle is not cycle:
                self._disarm()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()
            # No pipelined request started at once.
            if self.cycle is cycle and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.head_timer = self.loop.call_later(
                limits.header_timeout, self.transport.close
            )

        def _disarm(self) -> None:
            if self.head_timer:
                self.head_timer.cancel()
                self.head_timer = None

    return TimedH11


def graceful_server(stopping: Stopping) -> type:
    """uvicorn's server, whose graceful stop tells the tools first (see Server)."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's graceful stop (no new connections, calls in flight finish within the grace period), which
        first tells the tools to stop: waits then end early with what they know, and new calls are refused."""

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.loop.call_soon_threadsafe(stopping.set)
            super().handle_exit(sig, frame)

    return Server


def stop_quietly(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM once uvicorn has stopped gracefully (it raises the signal again): unwind through the
    clean-up in main(), with no traceback."""
    sys.exit(0)


def exit_at_once(signum: int, frame: Any) -> None:
    """Ctrl-C or SIGTERM on stdio: unfinished downloads' .part files removed, then exit. A graceful stop would wait
    forever for the SDK's stdin reader, a thread blocked on a read that returns only when the client (or a
    terminal) sends more; stop here instead.

    Touch no stream: the signal may land while the main thread is inside a stderr write, and a flush
    from here would be a reentrant call that raises. stderr is line-buffered, so whole lines are out."""
    remove_live_parts()
    os._exit(0)


# --- Process-wide state: the few things every server in this process shares -------------------------------------------

#: One preview decodes at a time: at most one image's pixels in memory, however many answers come at once.
DECODING = threading.Semaphore(1)
#: This process's unfinished downloads, removed at exit however it ends.
LIVE_PARTS: set[str] = set()
#: A .part file is made and listed in one step, under this lock, so that the exit misses none.
LIVE_PARTS_LOCK = threading.Lock()
#: Set at exit: a download still running on a daemon thread then makes no file.
PARTS_ENDED = threading.Event()


# --- The viewer (MCP Apps) --------------------------------------------------------------------------------------------
# One self-contained page a host that speaks MCP Apps renders beside the results of generate_image,
# generate_video and query_video_task: no external script, no build step. It talks JSON-RPC to the host over
# postMessage (SEP-1865), builds its DOM with textContent only, and loads media only from http(s) and data:.

VIEWER_TEMPLATE = """<!doctype html>
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
// How the server grows an estimate a task runs past (OVERRUN_GROWTH, OVERRUN_MARGIN_SECONDS), filled in below.
const GROWTH = __OVERRUN_GROWTH__, MARGIN = __OVERRUN_MARGIN_SECONDS__;

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
  const errors = (data.errors || [])
    .map((e) => el("li", { class: "error" }, "Image " + (e.index + 1) + ": " + e.message));
  return [el("h1", {}, data.images.length + " image" + (data.images.length === 1 ? "" : "s") +
            (data.model ? " by " + data.model : "")), grid, errors.length ? el("ul", {}, ...errors) : null,
          ...files(data), cost(data), el("p", { class: "muted" }, "Links expire 24 hours after generation.")]
    .filter(Boolean);
}

// What it cost: billed once Ark says, else the estimate, with its basis.
function cost(data) {
  const c = data.cost;
  if (!c || typeof c !== "object") return null;
  const amount = (n) => (typeof n === "number" ? n.toFixed(4).replace(/\\.?0+$/, "") + " " + c.currency : "");
  if (typeof c.billed === "number") return el("p", { class: "cost" }, "Billed " + amount(c.billed) +
                                              (c.billed_basis ? " (" + c.billed_basis + ")" : ""));
  if (typeof c.estimate === "number") return el("p", { class: "cost" }, "About " + amount(c.estimate) +
                                                (c.basis ? " (" + c.basis + ")" : ""));
  return c.basis ? el("p", { class: "cost muted" }, "Cost: " + c.basis) : null;
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
    // The server's estimate, grown as the server grows it: progress never goes back.
    const tick = () => {
      const age = Math.round((Date.now() - started) / 1000);
      const about = Math.round(Math.max(estimate, age * GROWTH + MARGIN));
      elapsed.textContent = estimate ? age + " s of about " + about + " s"
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
  return parts.concat(files(data), [cost(data)].filter(Boolean));
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
  .then((result) => {
    applyContext(result && result.hostContext);
    send({ method: "ui/notifications/initialized", params: {} });
  });
</script></body></html>
"""
VIEWER_HTML = VIEWER_TEMPLATE.replace(
    "__OVERRUN_GROWTH__", str(OVERRUN_GROWTH)
).replace(
    "__OVERRUN_MARGIN_SECONDS__",
    str(OVERRUN_MARGIN_SECONDS),
)
if __name__ == "__main__":
    main()
