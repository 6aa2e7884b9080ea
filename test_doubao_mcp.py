"""Unit and in-process tests of doubao_mcp: `responses`-mocked Ark, the fake Ark on 127.0.0.1, and the MCP SDK's
in-process client. The inner loop: `python -m pytest -m "not e2e"`."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import logging
import operator
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime
from functools import cache, partial, reduce
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx2
import mcp_types
import pytest
import requests
import responses
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

import doubao_mcp
from conftest import (
    ASSET_ACCESS,
    ASSET_PHOTO,
    ASSET_SECRET,
    BASE,
    DANCE_15,
    DANCE_20,
    DANCE_25,
    FLASH,
    KEY,
    LAST_FRAME_URL,
    LITE,
    NOT_FOUND,
    PICTURE,
    PNG,
    PRO,
    S40,
    S45,
    S55,
    SCRIPT_ENV,
    STORAGE_SECRET,
    SUCCEEDED_TASK,
    TASK_ID,
    TASKS,
    TASKS_ROUTE,
    UPLOAD_BUCKET,
    URL,
    VIDEO_BYTES,
    VIDEO_URL,
    FakeArk,
    FakeTime,
    Hold,
    SecretService,
    answer,
    ark_error,
    asset_error,
    bomb,
    call,
    data_url,
    error_text,
    finished_task_and_files,
    following,
    items,
    jpegs,
    make_server,
    make_studio,
    mp4,
    no_progress,
    plan_of,
    posted_models,
    refused,
    rows,
    sha256,
    write,
)
from doubao_mcp import ArkAPIError, ArkClient, Config, Record, Studio

pytestmark = pytest.mark.anyio


# --- Helpers: what tests in several sections share --------------------------------------------------------------------

IMAGES = f"{BASE}/images/generations"

JPEG = b"\xff\xd8\xff\xe0" + bytes(64)

# A started server keeps no task record unless a test gives it one: none lands in the developer's home.
ARK_500 = {
    "status": 500,
    "json": {"error": {"code": "InternalServiceError", "message": "oops"}},
}

ARK_429 = {
    "status": 429,
    "json": {"error": {"code": "RateLimitExceeded", "message": "slow down"}},
}


def sent_json(mock: Any, index: int = 0) -> Any:
    return json.loads(mock.calls[index].request.body)


VIDEO_SPECS = [
    (
        "doubao-seedance-2-5-260628",
        (4, 30),
        ["480p", "720p", "1080p"],
        (30, 10, 10),
        None,
    ),
    (
        "doubao-seedance-2-0-260128",
        (4, 15),
        ["480p", "720p", "1080p", "4k"],
        (9, 3, 3),
        12,
    ),
    (
        "dreamina-seedance-2-0-260128",
        (4, 15),
        ["480p", "720p", "1080p", "4k"],
        (9, 3, 3),
        12,
    ),
    ("doubao-seedance-2-0-fast-260128", (4, 15), ["480p", "720p"], (9, 3, 3), 12),
    ("doubao-seedance-2-0-mini-260615", (4, 15), ["480p", "720p"], (9, 3, 3), 12),
    (
        "doubao-seedance-1-5-pro-251215",
        (4, 12),
        ["480p", "720p", "1080p"],
        (0, 0, 0),
        None,
    ),
    ("seedance-1-5-pro-251215", (4, 12), ["480p", "720p", "1080p"], (0, 0, 0), None),
    (
        "doubao-seedance-1-0-pro-250528",
        (2, 12),
        ["480p", "720p", "1080p"],
        (0, 0, 0),
        None,
    ),
    (
        "doubao-seedance-1-0-pro-fast-251015",
        (2, 12),
        ["480p", "720p", "1080p"],
        (0, 0, 0),
        None,
    ),
    (
        "doubao-seedance-1-0-lite-i2v-250428",
        (2, 12),
        ["480p", "720p", "1080p"],
        (4, 0, 0),
        None,
    ),
    (
        "doubao-seedance-1-0-lite-t2v-250428",
        (2, 12),
        ["480p", "720p", "1080p"],
        (0, 0, 0),
        None,
    ),
]

KINDS = [
    ("reference_images", "image", "reference_image", "images"),
    ("reference_videos", "video", "reference_video", "videos"),
    ("reference_audios", "audio", "reference_audio", "audios"),
]


def media(kind: str, count: int) -> list[str]:
    return [f"{URL}{kind}-{i}" for i in range(count)]


def video_limit_cases() -> list[Any]:
    """(model, arguments, the exact body Ark must get, or None) at each limit, and (..., the refusal) one past it."""
    cases = []
    for model, (low, high), resolutions, most, total in VIDEO_SPECS:
        shown = model.rsplit("-", 1)[0]
        # Image-to-video only: text alone is refused
        needs_image = "i2v" in model
        base = {"first_frame": URL + "first"} if needs_image else {}
        content = [
            {"type": "text", "text": "a fox"},
            *items("image", "first_frame", [URL + "first"] * needs_image),
        ]
        for duration, resolution in [(high, resolutions[-1]), (low, resolutions[0])]:
            cases.append(
                pytest.param(
                    model,
                    {**base, "duration": duration, "resolution": resolution},
                    {
                        "model": model,
                        "content": content,
                        "duration": duration,
                        "resolution": resolution,
                    },
                    id=f"{model}-{duration}s-{resolution}",
                )
            )
        cases.append(
            pytest.param(
                model,
                {**base, "duration": high + 1},
                f"duration {high + 1} is over {shown}'s {low}-{high} s.",
                id=f"{model}-over",
            )
        )
        cases.append(
            pytest.param(
                model,
                {**base, "duration": low - 1},
                f"duration {low - 1} is under {shown}'s {low}-{high} s.",
                id=f"{model}-under",
            )
        )
        missing = next(
            (r for r in ["480p", "720p", "1080p", "4k"] if r not in resolutions), None
        )
        if missing:
            cases.append(
                pytest.param(
                    model,
                    {**base, "resolution": missing},
                    f"resolution {missing} is not one {shown} makes: {', '.join(resolutions)}.",
                    id=f"{model}-{missing}",
                )
            )
        left, full, body_items = total or 10**6, {}, []
        for (argument, kind, role, _), limit in zip(KINDS, most, strict=False):
            count = min(limit, left)
            left -= count
            if count:
                full[argument] = media(kind, count)
                body_items += items(kind, role, full[argument])
        if full:
            cases.append(
                pytest.param(
                    model,
                    full,
                    {"model": model, "content": content[:1] + body_items},
                    id=f"{model}-all-references",
                )
            )
        for (argument, kind, _, plural), limit in zip(KINDS, most, strict=False):
            beside = {} if kind != "audio" else {"reference_images": media("image", 1)}
            if kind == "audio" and not most[0]:
                beside = {}
            refusal = (
                f"{argument}: {shown} takes no {plural}."
                if limit == 0
                else f"{argument}: {limit + 1} {plural} is over {shown}'s {limit}."
            )
            cases.append(
                pytest.param(
                    model,
                    {**beside, argument: media(kind, limit + 1)},
                    refusal,
                    id=f"{model}-{plural}-past",
                )
            )
        if total:
            over = {
                "reference_images": media("image", most[0]),
                "reference_videos": media("video", most[1]),
                "reference_audios": media("audio", total + 1 - most[0] - most[1]),
            }
            cases.append(
                pytest.param(
                    model,
                    over,
                    f"{total + 1} references in all is over {shown}'s {total}.",
                    id=f"{model}-total-past",
                )
            )
    return cases


@pytest.fixture(scope="module")
async def limits_client() -> Any:
    """One in-process server for every case of the limit tables: the cases differ only in their arguments."""
    async with Client(
        make_server(Config(api_key=KEY, base_url=BASE, previews=False))
    ) as client:
        yield client


async def at_the_limit(
    ark: Any,
    client: Any,
    tool: str,
    route: str,
    reply: Any,
    arguments: dict[str, Any],
    expected: Any,
) -> None:
    """A call at a limit sends `expected` (a request body) upstream; one past it gets `expected` (a text) as its
    error, and nothing is sent."""
    if isinstance(expected, dict):
        ark.post(route, json=reply)
    result = await client.call_tool(tool, {"prompt": "a fox", **arguments})
    if isinstance(expected, dict):
        assert not result.is_error, result.content[0].text
        assert sent_json(ark) == expected
    # The refusal, and maybe where to go instead: "...; <model> takes <it>."
    else:
        assert expected.rstrip(".") in error_text(result)
        assert len(ark.calls) == 0


VIDEO_RULES = [
    # (model, arguments, the body's differences from a plain request, or the refusal)
    (
        "doubao-seedance-1-5-pro-251215",
        {"draft": True, "duration": -1},
        {"draft": True, "duration": -1},
    ),
    (
        "doubao-seedance-2-0-260128",
        {"draft": True},
        "draft: doubao-seedance-2-0 makes no drafts; doubao-seedance-2-5-260628 takes draft.",
    ),
    (
        "doubao-seedance-2-5-260628",
        {"draft": True, "resolution": "480p"},
        {"draft": True, "resolution": "480p"},
    ),
    (
        "doubao-seedance-2-5-260628",
        {"draft": True, "resolution": "720p"},
        "draft: doubao-seedance-2-5 makes drafts at 480p only, not 720p.",
    ),
    (
        "doubao-seedance-2-5-260628",
        {"prompt": None, "draft_task_id": "cgt-draft-2", "resolution": "1080p"},
        {
            "content": [{"type": "draft_task", "draft_task": {"id": "cgt-draft-2"}}],
            "resolution": "1080p",
        },
    ),
    (
        "doubao-seedance-2-0-fast-260128",
        {"draft_task_id": "cgt-draft"},
        "draft_task_id: doubao-seedance-2-0-fast makes no drafts; doubao-seedance-2-5-260628 takes draft_task_id.",
    ),
    ("doubao-seedance-1-0-pro-250528", {"frames": 289}, {"frames": 289}),
    (
        "doubao-seedance-1-5-pro-251215",
        {"frames": 121},
        "frames: doubao-seedance-1-5-pro takes duration, not frames.",
    ),
    (
        "doubao-seedance-1-0-pro-250528",
        {"duration": -1},
        "duration -1 (the model chooses) is not something doubao-seedance-1-0-pro takes: give 2-12 s; "
        "doubao-seedance-2-0-260128 takes duration -1.",
    ),
    (
        "doubao-seedance-1-0-pro-250528",
        {"generate_audio": True},
        "generate_audio: doubao-seedance-1-0-pro makes silent videos; doubao-seedance-2-0-260128 takes generate_audio.",
    ),
    (
        "doubao-seedance-2-0-260128",
        {"web_search": True},
        {"tools": [{"type": "web_search"}]},
    ),
    (
        "doubao-seedance-2-0-260128",
        {"web_search": True, "reference_images": [URL + "a"]},
        "web_search: doubao-seedance-2-0 searches the web only for text-to-video",
    ),
    (
        "doubao-seedance-1-5-pro-251215",
        {"web_search": True},
        "web_search: doubao-seedance-1-5-pro cannot search the web; doubao-seedance-2-0-260128 takes web_search.",
    ),
    (
        "doubao-seedance-2-0-260128",
        {"reference_audios": [URL + "a.mp3"]},
        "reference_audios: doubao-seedance-2-0 needs a reference image or video beside them; "
        "doubao-seedance-2-5-260628 takes reference_audios alone.",
    ),
    (
        "doubao-seedance-2-5-260628",
        {"reference_audios": [URL + "a.mp3"]},
        {
            "content": [
                {"type": "text", "text": "a fox"},
                *items("audio", "reference_audio", [URL + "a.mp3"]),
            ]
        },
    ),
    (
        "doubao-seedance-1-0-lite-t2v-250428",
        {"first_frame": URL + "f"},
        "first_frame: doubao-seedance-1-0-lite-t2v makes videos from text only; doubao-seedance-2-0-260128 takes "
        "first_frame.",
    ),
    (
        "doubao-seedance-1-0-lite-i2v-250428",
        {},
        "doubao-seedance-1-0-lite-i2v needs an image: give first_frame or reference_images.",
    ),
    (
        "doubao-seedance-1-0-pro-fast-251015",
        {"first_frame": URL + "f", "last_frame": URL + "l"},
        "last_frame: doubao-seedance-1-0-pro-fast takes a first frame but no last frame; doubao-seedance-2-0-260128 "
        "takes last_frame.",
    ),
    (
        "doubao-seedance-1-5-pro-251215",
        {"prompt": None, "first_frame": URL + "f"},
        "prompt is required for doubao-seedance-1-5-pro.",
    ),
    (
        "doubao-seedance-2-0-260128",
        {"prompt": None, "reference_images": [URL + "a"]},
        {"content": items("image", "reference_image", [URL + "a"])},
    ),
    (
        "doubao-seedance-1-5-pro-251215",
        {"prompt": None, "draft_task_id": "cgt-draft-1"},
        {"content": [{"type": "draft_task", "draft_task": {"id": "cgt-draft-1"}}]},
    ),
]

# (id, named sizes, a WIDTHxHEIGHT it makes or None, one it does not or None, most reference images, sets)
IMAGE_SPECS = [
    ("doubao-seedream-5-0-260128", ["2K", "3K", "4K"], "3072x2048", None, 14, True),
    ("seedream-5-0-260128", ["2K", "3K", "4K"], "3072x2048", None, 14, True),
    # 921,600..4,624,220 pixels (December 2026), no multiple-of-16 rule: 1500x1000 was made live.
    (
        "doubao-seedream-5-0-pro-260628",
        ["1K", "1.5K", "2K", "auto"],
        "2150x2150",
        "2151x2150",
        10,
        False,
    ),
    (
        "doubao-seedream-5-0-flash-260915",
        ["1K", "1.5K", "2K"],
        "1500x1000",
        "1279x720",
        10,
        False,
    ),
    ("doubao-seedream-4-5-251128", ["2K", "4K"], "2560x1440", "2048x1536", 14, True),
    (
        "doubao-seedream-4-0-250828",
        ["1K", "2K", "4K"],
        "1280x720",
        "1000x900",
        10,
        True,
    ),
    ("doubao-seedream-3-0-t2i-250415", [], "512x512", "4096x4096", 0, False),
    ("doubao-seededit-3-0-i2i-250628", ["adaptive"], None, "1024x1024", 1, False),
]


def image_limit_cases() -> list[Any]:
    cases = []
    for model, sizes, fits, too_big, most, sets in IMAGE_SPECS:
        shown = model.rsplit("-", 1)[0]
        need = {"images": [URL + "only"]} if "seededit" in model else {}
        body = {
            "model": model,
            "prompt": "a fox",
            **({"image": URL + "only"} if need else {}),
        }
        for size in sizes + [fits] * bool(fits):
            cases.append(
                pytest.param(
                    model,
                    {**need, "size": size},
                    {**body, "size": size},
                    id=f"{model}-{size}",
                )
            )
        missing = next(
            s
            for s in ["1K", "1.5K", "2K", "3K", "4K", "auto", "adaptive"]
            if s not in sizes
        )
        cases.append(
            pytest.param(
                model,
                {**need, "size": missing},
                f"size {missing} is not one {shown} makes",
                id=f"{model}-{missing}",
            )
        )
        if too_big:
            cases.append(
                pytest.param(
                    model,
                    {**need, "size": too_big},
                    f"size {too_big} ",
                    id=f"{model}-{too_big}",
                )
            )
        if most > 1:
            cases.append(
                pytest.param(
                    model,
                    {"images": media("image", most)},
                    {**body, "image": media("image", most)},
                    id=f"{model}-{most}-images",
                )
            )
        cases.append(
            pytest.param(
                model,
                {"images": media("image", most + 1)},
                f"images: {most + 1} reference images is over {shown}'s {most}."
                if most
                else f"images: {shown} takes no reference images.",
                id=f"{model}-images-past",
            )
        )
        set_body = {
            **body,
            "sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 4},
        }
        cases.append(
            pytest.param(
                model,
                {**need, "max_images": 4},
                set_body
                if sets
                else f"max_images: {shown} makes single images, not sets.",
                id=f"{model}-set",
            )
        )
    cases.append(
        pytest.param(
            "doubao-seededit-3-0-i2i-250628",
            {},
            "images: doubao-seededit-3-0-i2i needs exactly 1 reference image.",
            id="seededit-none",
        )
    )
    return cases


WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)

MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(64)


async def wait_for(
    finish_at: float,
    wait_seconds: float,
    failures: tuple[Exception, ...] = (),
    estimate: float = 120,
    reports: list[tuple[float, float, str]] | None = None,
) -> tuple[Any, list]:
    """Run wait_for_task on a task that succeeds at `finish_at` fake seconds and should take about `estimate`;
    returns it and the poll times. The first polls raise `failures`."""
    failing = list(failures)
    now, polls = FakeTime(), []

    async def poll() -> Any:
        polls.append(round(now.now, 3))
        if failing:
            raise failing.pop(0)
        return doubao_mcp.shape_task(
            {
                "id": "cgt-1",
                "status": "succeeded" if now.now >= finish_at else "running",
            }
        )

    async def report(age: float, total: float, message: str) -> None:
        if reports is not None:
            reports.append((age, total, message))

    queued = doubao_mcp.shape_task({"id": "cgt-1", "status": "queued"})
    task = await doubao_mcp.wait_for_task(
        poll,
        queued,
        wait_seconds,
        report,
        estimate=estimate,
        clock=now.clock,
        sleep=now.sleep,
    )
    return task, polls


def fast_polls(**changes: Any) -> Config:
    return replace(Config.from_env(), poll_intervals=(0.01, 0.02), **changes)


MOV_BYTES = b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  " + bytes(512)


def trickle(raw: bytes, every: float) -> Any:
    """A fault that sends a whole raw HTTP response one byte at a time, `every` seconds apart: each read sees
    a byte long before any read timeout, so only a deadline ends it."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        for byte in raw:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)
        handler.close_connection = True

    return respond


def raw_response(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    length: int | None = None,
) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: "
        f"{len(body) if length is None else length}\r\n\r\n"
    ).encode() + body


VIDEO_CALL = ("generate_video", {"prompt": "a fox"})

QUERY_CALL = ("query_video_task", {"task_id": "cgt-done"})

IMAGE_CALL = ("generate_image", {"prompt": "a fox"})

IMAGES_ROUTE = "/api/v3/images/generations"

UPSTREAM_FAULTS = {
    "400": (
        ("POST", TASKS_ROUTE),
        ark_error(400, "InvalidParameter", "duration is invalid"),
        VIDEO_CALL,
        "Ark API error 400 InvalidParameter: duration is invalid",
    ),
    "401": (
        ("POST", TASKS_ROUTE),
        ark_error(401, "AuthenticationError", "bad key"),
        VIDEO_CALL,
        "Check ARK_API_KEY",
    ),
    "403": (
        ("POST", IMAGES_ROUTE),
        ark_error(403, "AccessDenied", "no access"),
        IMAGE_CALL,
        "Ark API error 403 AccessDenied: no access",
    ),
    "404": (
        ("POST", TASKS_ROUTE),
        ark_error(404, "ModelNotOpen", "not activated"),
        VIDEO_CALL,
        "are not available to this account (Ark says ModelNotOpen). Activate one in the Ark console",
    ),
    "429 with Retry-After": (
        ("GET", TASKS_ROUTE),
        ark_error(429, "RateLimitExceeded", "slow", Retry_After="2"),
        QUERY_CALL,
        "Ark API error 429 RateLimitExceeded: slow",
    ),
    "429 without Retry-After": (
        ("POST", TASKS_ROUTE),
        ark_error(429, "ServerOverloaded", "busy"),
        VIDEO_CALL,
        "Ark API error 429 ServerOverloaded: busy",
    ),
    "500": (
        ("POST", TASKS_ROUTE),
        ark_error(500, "InternalServiceError", "oops"),
        VIDEO_CALL,
        "retry in a minute",
    ),
    "502": (
        ("GET", TASKS_ROUTE),
        ark_error(502, "BadGateway", "upstream"),
        QUERY_CALL,
        "Ark API error 502 BadGateway",
    ),
    "503": (
        ("GET", TASKS_ROUTE),
        ark_error(503, "ServiceUnavailable", "later"),
        QUERY_CALL,
        "Ark API error 503",
    ),
    "HTML body": (
        ("POST", TASKS_ROUTE),
        answer(502, "<html><h1>502 Bad Gateway</h1></html>", "text/html"),
        VIDEO_CALL,
        "Ark API error 502: Bad Gateway; non-JSON response (text/html): '502 Bad Gateway'",
    ),
    "empty body": (
        ("POST", TASKS_ROUTE),
        answer(503, ""),
        VIDEO_CALL,
        "Service Unavailable; empty response",
    ),
    "invalid JSON": (
        ("POST", TASKS_ROUTE),
        answer(500, "{oops"),
        VIDEO_CALL,
        "non-JSON response (application/json)",
    ),
    "truncated JSON": (
        ("GET", TASKS_ROUTE),
        answer(500, '{"error": {"code": "Inter'),
        QUERY_CALL,
        '\'{"error":',
    ),
    "200 with a JSON array": (
        ("POST", TASKS_ROUTE),
        answer(200, "[1, 2]"),
        VIDEO_CALL,
        "Ark answered 200 with a body that is not a JSON object",
    ),
    "200 with wrong types": (
        ("GET", TASKS_ROUTE),
        answer(200, '{"id": 7, "status": null}'),
        QUERY_CALL,
        "a task record without a task id or status",
    ),
    "200 image with wrong types": (
        ("POST", IMAGES_ROUTE),
        answer(200, '{"data": {"url": 5}}'),
        IMAGE_CALL,
        "an image result without a data list",
    ),
    "200 that is not JSON": (
        ("GET", TASKS_ROUTE),
        answer(200, "<html>maintenance</html>", "text/html"),
        QUERY_CALL,
        "not a JSON object: non-JSON response (text/html): 'maintenance'",
    ),
    "read timeout": (
        ("POST", IMAGES_ROUTE),
        answer(200, "{}", delay=2),
        IMAGE_CALL,
        "answer within 0.5 s",
    ),
    "connection dropped mid-body": (
        ("GET", TASKS_ROUTE),
        answer(200, '{"id": "cgt', length=500),
        QUERY_CALL,
        "IncompleteRead",
    ),
    "error page echoing the key": (
        ("POST", TASKS_ROUTE),
        answer(502, f"Authorization: Bearer {KEY}", "text/plain"),
        VIDEO_CALL,
        "Bearer ***",
    ),
    "connection refused": (None, None, VIDEO_CALL, "Connection refused"),
}


async def run_case(
    fake: FakeArk,
    config: Config,
    tool: str,
    arguments: dict[str, Any],
    save_dir: Path,
    reachable: bool = True,
) -> str:
    """One failing call, then the checks every case shares; returns the error text."""
    async with Client(make_server(config)) as client:
        result = await client.call_tool(tool, arguments)
        text = result.content[0].text
        fake.faults.clear()
        following = await client.call_tool("list_video_tasks", {})
    assert result.is_error, text
    assert KEY not in text
    # The server still answers: with a result, or, where Ark stays unreachable, with the same clear error.
    assert following.is_error is not reachable, following.content
    # Nothing half-written
    assert list(save_dir.iterdir()) == []
    return text


DOWNLOAD_FAULTS = {
    "body shorter than its Content-Length": (
        answer(200, VIDEO_BYTES[:100], "video/mp4", length=len(VIDEO_BYTES)),
        "IncompleteRead",
    ),
    "redirect to a non-http scheme": (
        answer(302, "", "text/plain", Location="file:///etc/passwd"),
        "redirected to a URL that is not http(s)",
    ),
    "server error": (
        answer(500, "<h1>oops</h1>", "text/html"),
        "the download answered HTTP 500",
    ),
}

REQUIRED = {
    "generate_image": {"prompt": "a"},
    "generate_video": {"prompt": "a"},
    "query_video_task": {"task_id": "cgt-1"},
    "cancel_video_task": {"task_id": "cgt-1"},
}

BAD_INPUTS = [
    *[
        (tool, {"prompt": prompt}, "prompt")
        for tool in ("generate_image", "generate_video")
        for prompt in ("", " \t\n ", "x" * 100_000)
    ],
    ("generate_video", {"resolution": "8k"}, "resolution"),
    ("generate_video", {"ratio": "2:1"}, "ratio"),
    ("generate_video", {"service_tier": "cheap"}, "service_tier"),
    ("list_video_tasks", {"status": "done"}, "status"),
    ("generate_image", {"size": "huge"}, "size"),
    *[
        (tool, {name: value}, name)
        for tool, name in [
            ("generate_image", "max_images"),
            ("generate_image", "seed"),
            ("generate_image", "guidance_scale"),
            ("generate_video", "duration"),
            ("generate_video", "frames"),
            ("generate_video", "seed"),
            ("generate_video", "wait_seconds"),
            ("list_video_tasks", "page_num"),
            ("list_video_tasks", "page_size"),
            ("query_video_task", "wait_seconds"),
        ]
        for value in (-5, 10**12)
    ],
    *[
        (tool, {"task_id": task_id}, "task_id")
        for tool in ("query_video_task", "cancel_video_task")
        for task_id in ("a/b", "..", "%2F", "cgt\n1", "cgt-ü", "c" * 10_000)
    ],
    ("list_video_tasks", {"task_ids": ["cgt-1", "../x"]}, "task_ids"),
]


def bad_files(folder: Path) -> list[tuple[str, str, str]]:
    """(argument value, save_dir or "", expected text) for the file inputs."""
    return [
        (str(folder / "missing.png"), "", "missing.png does not exist"),
        (str(folder), "", "is a folder, not a JPEG"),
        (
            write(folder / "notes.png", b"plain text"),
            "",
            "is not a JPEG, PNG, WebP, BMP, TIFF or GIF image",
        ),
        (
            write(folder / "huge.png", PNG, size=31 * 2**20),
            "",
            "huge.png is 31.0 MB, over Ark's",
        ),
        ("file:///etc/passwd", "", "/etc/passwd is not a JPEG, PNG"),
        (
            "https://img.test/a.png",
            write(folder / "a-file"),
            "is a file (or inside one), not a folder",
        ),
        *(
            [("https://img.test/a.png", "/sys", "cannot hold new files")]
            if Path("/sys/kernel").is_dir()
            else []
        ),
    ]


def small_lanes(fake: FakeArk, **changes: Any) -> Config:
    return Config(
        api_key=KEY,
        base_url=fake.url,
        limits=doubao_mcp.Limits(
            **{"quick_threads": 2, "slow_threads": 4, "slot_wait": 0.3, **changes}
        ),
    )


def lane_threads(before: set[threading.Thread]) -> dict[str, int]:
    """Worker threads started since `before`, by lane."""
    names = [
        thread.name
        for thread in set(threading.enumerate()) - before
        if thread.name.startswith("doubao-")
    ]
    return {name: names.count(name) for name in set(names)}


TRICKLED_TASK = raw_response(
    200, json.dumps({"id": "cgt-done", "status": "running"}).encode()
)


def endless_video(every: float, chunk: bytes) -> Any:
    """A result URL that keeps the connection open and keeps sending, `chunk` every `every` seconds, forever."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        # No length: the body ends when the connection does
        handler.send_header("Content-Type", "video/mp4")
        handler.end_headers()
        handler.wfile.write(VIDEO_BYTES[:16])
        with contextlib.suppress(OSError):
            for _ in range(int(60 / every)):
                handler.wfile.write(chunk)
                handler.wfile.flush()
                time.sleep(every)

    return respond


NESTED = "[" * 100_000 + "]" * 100_000

ECHO = f"key={KEY}"


@contextlib.asynccontextmanager
async def hosting(
    fake: FakeArk,
    bind: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] = (),
    allowed_origins: tuple[str, ...] = (),
    **limits: Any,
) -> Any:
    """The server over streamable HTTP in this process, on a socket made here: clients connect at once."""
    config = Config(
        api_key=KEY,
        base_url=fake.url,
        serving_http=True,
        limits=doubao_mcp.Limits(**limits),
    )
    stopping = doubao_mcp.Stopping()
    listener = socket.socket()
    listener.bind((bind, 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    hosted = doubao_mcp.http_server(
        make_server(config, stopping=stopping),
        bind,
        port,
        allowed_hosts,
        allowed_origins,
        "warning",
        config.limits,
        stopping,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(hosted.serve, [listener])
        try:
            yield f"http://{bind}:{port}"
        finally:
            hosted.should_exit = True


def tools_list(host: str | None = None, origin: str | None = None) -> dict[str, Any]:
    return {
        "json": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        "headers": {
            "Accept": "application/json, text/event-stream",
            **({"Host": host} if host else {}),
            **({"Origin": origin} if origin else {}),
        },
    }


def record_server(tmp_path: Path, **changes: Any) -> tuple[Any, doubao_mcp.Record]:
    """The server in-process with a task record in tmp_path/state (and no watcher)."""
    config = replace(Config.from_env(), **changes)
    record = doubao_mcp.Record(tmp_path / "state", config.base_url)
    return make_server(config, record=record), record


async def session_calls(
    fake: FakeArk, *calls: tuple[str, dict[str, Any]], **settings: Any
) -> list[Any]:
    """Calls made one after another to one server, as a client's conversation makes them."""
    async with Client(
        make_server(Config(api_key=KEY, base_url=fake.url, **settings))
    ) as client:
        return [await client.call_tool(tool, arguments) for tool, arguments in calls]


V1_SCHEMA = """
CREATE TABLE tasks (task_id TEXT PRIMARY KEY, base_url TEXT NOT NULL, owner TEXT, model TEXT, prompt TEXT,
    parameters TEXT, save_dir TEXT, last_frame INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, video_url TEXT,
    last_frame_url TEXT, error TEXT, created REAL NOT NULL, updated REAL NOT NULL, finished REAL, files TEXT,
    save_error TEXT, watcher TEXT, watched REAL, saver TEXT, saving REAL);
PRAGMA user_version = 1;
"""

# A key holding a quote, a backslash and a slash
SLASHY = 'ark-"quoted\\key/0f3c9a7e-5b1d-4c2e-9f8a'

ROOT = Path(__file__).parent

HOSTING_OPTIONS = {
    "DOUBAO_MCP_TRANSPORT",
    "DOUBAO_MCP_HOST",
    "DOUBAO_MCP_PORT",
    "DOUBAO_MCP_ALLOWED_HOSTS",
    "DOUBAO_MCP_ALLOWED_ORIGINS",
}


def settings_in_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        doubao_mcp.main(["--help"])
    return capsys.readouterr().out


@cache
def pyproject() -> dict[str, Any]:
    try:
        import tomllib
    # Python 3.10: pip, in every venv, carries the same parser
    except ImportError:
        from pip._vendor import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def release_file(name: str) -> Any:
    return json.loads((ROOT / name).read_text())


def bundle_environment(manifest: dict[str, Any], **chosen: Any) -> dict[str, str]:
    """The server's environment as Claude Desktop makes it from the bundle's manifest: each user_config value (or its
    default) put in for ${user_config.KEY}, booleans as "true"/"false" (as @anthropic-ai/mcpb's config.js does)."""
    values = {
        key: option["default"]
        for key, option in manifest["user_config"].items()
        if "default" in option
    }
    values.update(chosen)
    variables = {
        f"user_config.{key}": str(value).lower()
        if isinstance(value, bool)
        else str(value)
        for key, value in values.items()
    }
    return {
        name: re.sub(
            r"\$\{([^}]+)\}", lambda m: variables.get(m.group(1), m.group(0)), value
        )
        for name, value in manifest["server"]["mcp_config"]["env"].items()
    }


def prose(page: Path) -> str:
    """A markdown page without its fenced code, where a `#` line or a `](...)` is code, not a heading or a link."""
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)


@cache
def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors: a heading lowercased, punctuation dropped, spaces made hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", prose(page), re.MULTILINE)
    }


def docs_text() -> str:
    return "\n".join(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))


def poison(state: Path, *rows: dict[str, Any]) -> None:
    """Rows another program (or a bad disk) wrote into the record's tasks table, as given."""
    with contextlib.closing(sqlite3.connect(state / "tasks.sqlite3")) as db:
        for row in rows:
            row = {
                "base_url": BASE,
                "owner": doubao_mcp.key_fingerprint(KEY),
                "model": DANCE_20,
                "status": "succeeded",
                "created": 0,
                "updated": 0,
                "parameters": "{}",
                **row,
            }
            db.execute(
                f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
        db.commit()


KEY_FORMS = {
    "percent-encoded, lower case": "".join(f"%{b:02x}" for b in KEY.encode()),
    "cut short": KEY[:30],
    "upper case": KEY.upper(),
    "base64 of its header": base64.b64encode(f"Bearer {KEY}".encode()).decode(),
    "url-safe base64": base64.urlsafe_b64encode(
        f"Authorization: Bearer {KEY}!".encode()
    ).decode(),
    "tail": KEY[-14:],
}


def http_caller(url: str, key: str) -> Client:
    return Client(
        streamable_http_client(
            f"{url}/mcp", http_client=httpx2.AsyncClient(headers={"X-API-Key": key})
        )
    )


# --- Errors: what a call can fail with, and the one place an error's advice is decided --------------------------------


@pytest.mark.parametrize(
    "status, body, headers, expected",
    [
        (
            401,
            {
                "error": {
                    "code": "AuthenticationError",
                    "message": "the API key is invalid",
                }
            },
            {},
            "Ark API error 401 AuthenticationError: the API key is invalid (request id {sent}). Check ARK_API_KEY",
        ),
        (
            404,
            {
                "error": {
                    "code": "ModelNotOpen",
                    "message": "Your account has not activated the model. Request id: 02174",
                }
            },
            {},
            "Ark API error 404 ModelNotOpen: Your account has not activated the model (request id 02174). "
            "Activate doubao-seedance-2-0-260128 in the Ark console (Model activation), or set DOUBAO_VIDEO_MODEL to a "
            "model or endpoint id your account has.",
        ),
        (
            400,
            {
                "error": {
                    "code": "InvalidParameter",
                    "message": "bad duration",
                    "param": "duration",
                }
            },
            {"X-Request-Id": "req-9"},
            "Ark API error 400 InvalidParameter: bad duration (param duration, request id req-9).",
        ),
        (
            400,
            {
                "error": {
                    "code": "InputTextSensitiveContentDetected",
                    "message": "flagged",
                }
            },
            {},
            "rephrase the prompt or use another image",
        ),
        (
            403,
            {"error": {"code": "AccountOverdueError", "message": "overdue"}},
            {},
            "top it up",
        ),
        (
            429,
            {
                "error": {
                    "code": "RateLimitExceeded.EndpointRPM",
                    "message": "slow down",
                }
            },
            {},
            "Ark API error 429 RateLimitExceeded.EndpointRPM: slow down",
        ),
        (
            429,
            {"error": {"code": "QuotaExceeded", "message": "too many"}},
            {},
            "120 per account",
        ),
        (
            500,
            {"error": {"code": "InternalServiceError", "message": "oops"}},
            {},
            "retry in a minute",
        ),
        (
            502,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            {"Content-Type": "text/html"},
            "Ark API error 502: Bad Gateway; non-JSON response (text/html): '502 Bad Gateway' (request id {sent}). "
            "Ark failed on its side",
        ),
        (503, "", {}, "Ark API error 503: Service Unavailable; empty response"),
        (
            500,
            '{"error": {"code": "Internal',
            {"Content-Type": "application/json"},
            "non-JSON response (application/json)",
        ),
        (
            302,
            "",
            {"Location": "https://elsewhere.test/"},
            "Ark API error 302: redirect to https://elsewhere.test/",
        ),
    ],
)
async def test_non_2xx_answers_become_one_clear_error(
    ark: Any,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One model: no falling through
    monkeypatch.setenv("DOUBAO_VIDEO_MODEL", "doubao-seedance-2-0-260128")
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    ark.post(TASKS, status=status, headers=headers, **kwargs)
    text = error_text(await call("generate_video", {"prompt": "a"}))
    sent = ark.calls[0].request.headers["X-Client-Request-Id"]
    assert expected.format(sent=sent) in text
    assert KEY not in text


async def test_model_hint_names_the_image_variable_for_image_calls(ark: Any) -> None:
    ark.post(
        IMAGES,
        status=404,
        json={
            "error": {"code": "InvalidEndpointOrModel.NotFound", "message": "no model"}
        },
    )
    assert "set DOUBAO_IMAGE_MODEL" in error_text(
        await call("generate_image", {"prompt": "a"})
    )


def test_the_error_carries_status_code_message_param_and_request_id(ark: Any) -> None:
    ark.get(
        f"{TASKS}/cgt-1",
        status=400,
        headers={"X-Client-Request-Id": "echoed"},
        json={
            "error": {
                "code": "InvalidParameter.TaskId",
                "message": "bad id",
                "param": "id",
            }
        },
    )
    with pytest.raises(ArkAPIError) as raised:
        ArkClient(BASE).get_task("cgt-1", KEY)
    error = raised.value
    assert (error.status, error.code, error.message, error.param, error.request_id) == (
        400,
        "InvalidParameter.TaskId",
        "bad id",
        "id",
        "echoed",
    )


@pytest.mark.parametrize(
    "failure, expected",
    [
        (requests.ReadTimeout("read timed out"), "no answer within 15 s"),
        (requests.ConnectTimeout("connect timed out"), "timed out while connecting"),
        (
            requests.ConnectionError("[Errno 111] Connection refused"),
            "[Errno 111] Connection refused",
        ),
    ],
)
async def test_timeouts_and_connection_failures_are_explained(
    ark: Any, failure: Exception, expected: str
) -> None:
    ark.get(f"{TASKS}/cgt-1", body=failure)
    text = error_text(await call("query_video_task", {"task_id": "cgt-1"}))
    assert f"Ark request failed (GET {TASKS}/cgt-1): {expected}. " in text


@pytest.mark.parametrize(
    "body, expected",
    [
        ("<html>maintenance</html>", "not a JSON object: non-JSON response"),
        ("[1, 2]", "not a JSON object"),
        ('{"data": "nope"}', "an image result without a data list"),
    ],
)
async def test_unreadable_2xx_bodies_are_explained(
    ark: Any, body: str, expected: str
) -> None:
    ark.post(IMAGES, body=body, content_type="application/json")
    assert expected in error_text(await call("generate_image", {"prompt": "a"}))


async def test_a_task_record_with_wrong_types_is_explained_not_crashed(
    ark: Any,
) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": 12, "status": ["running"]})
    ark.get(
        f"{TASKS}/cgt-2",
        json={
            "id": "cgt-2",
            "status": "running",
            "content": "x",
            "duration": "5",
            "usage": [1],
            "created_at": "yesterday",
        },
    )
    assert "without a task id or status" in error_text(
        await call("query_video_task", {"task_id": "cgt-1"})
    )
    shaped = (await call("query_video_task", {"task_id": "cgt-2"})).structured_content
    # An unknown model's prior
    assert shaped == {
        "task_id": "cgt-2",
        "status": "running",
        "created_at": "yesterday",
        "estimate_seconds": 90,
        "next_step": doubao_mcp.NEXT_STEP["running"].format(task_id="cgt-2"),
    }


@pytest.mark.parametrize(
    "code, param, advice",
    [
        (
            "OutputAudioSensitiveContentDetected",
            None,
            "call again with generate_audio: false",
        ),
        (
            "OutputAudioSensitiveContentDetected.PolicyViolation",
            None,
            "generate_audio: false",
        ),
        (
            "InvalidParameter.TaskTypeConstraint",
            "camera_fixed",
            "This kind of task does not take camera_fixed",
        ),
        # December 2026's codes (ARK_API.md).
        (
            "SetLimitExceeded",
            None,
            "Safe Experience Mode limit for this model is used up",
        ),
        (
            "RateLimitExceeded.EndpointRPMExceeded",
            None,
            "requests-per-minute limit is reached",
        ),
        (
            "RateLimitExceeded.EndpointTPMExceeded",
            None,
            "tokens-per-minute limit is reached",
        ),
        ("InputMediaMayContainRealPerson", None, "pass its asset:// id instead"),
        (
            "OutputVideoSensitiveContentDetected.PolicyViolation",
            None,
            "likely copyright or policy violation",
        ),
        ("InvalidResolutionParameter", None, "Seedance 2.5 premium renders 4k only"),
        ("LastFrameNotSupported", None, "This model takes no last frame"),
        ("RefImageNotSupported", None, "This model takes no reference images"),
        ("RequestBodyTooLarge", None, "set DOUBAO_UPLOADS to upload local files first"),
    ],
)
async def test_new_ark_errors_say_what_to_change(
    ark: Any, code: str, param: str | None, advice: str
) -> None:
    ark.post(
        TASKS,
        status=400,
        json={"error": {"code": code, "message": "refused", "param": param}},
    )
    assert advice in error_text(await call("generate_video", {"prompt": "a fox"}))


async def test_seedream_refusing_an_asset_id_says_they_are_for_seedance_only(
    ark: Any,
) -> None:
    """Seedream 4.5 is sent the id, and Ark's 400 gets the hint; 5.0 pro's 400 is known, so it is refused before
    anything is sent (the mock fails the test on any request it was not given)."""
    ark.post(
        IMAGES,
        status=400,
        json={"error": {"code": "InvalidParameter", "message": "bad image"}},
    )
    asset = ["asset://asset-20261201-abc"]
    result = await call(
        "generate_image", {"prompt": "me", "model": S45, "images": asset}
    )
    assert "asset:// ids work on Seedance 2.x videos only" in error_text(result)
    assert json.loads(ark.calls[0].request.body)["image"] == asset[0]
    result = await call(
        "generate_image", {"prompt": "me", "model": PRO, "images": asset}
    )
    assert error_text(result).endswith(
        "images: doubao-seedream-5-0-pro refuses asset:// ids (Ark answers 400); pass the image as a URL or a file."
    )
    assert len(ark.calls) == 1


async def test_a_running_task_ark_cannot_cancel_says_to_wait_then_delete(
    ark: Any,
) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "succeeded"})
    ark.delete(
        f"{TASKS}/cgt-1",
        status=409,
        json={"error": {"code": "TaskRunningCannotCancel", "message": "running"}},
    )
    text = error_text(await call("cancel_video_task", {"task_id": "cgt-1"}))
    assert "Wait until it finishes, then call cancel_video_task again" in text


@pytest.mark.parametrize(
    ("message", "advice"),
    [
        # Not in the table, and close to an id that is: a typo.
        (
            "The model or endpoint doubao-seedream-4.5-251128 does not exist.",
            "No model doubao-seedream-4.5-251128 is known here: did you mean doubao-seedream-4-5-251128?",
        ),
        # Ark says the account has not activated it: activation, whatever the id looks like.
        (
            "Your account has not activated the model doubao-seedream-4.5-251128.",
            "Activate doubao-seedream-4.5-251128 in the Ark console",
        ),
    ],
)
async def test_a_misspelt_model_is_told_what_it_was_likely_meant_to_be(
    ark: Any, message: str, advice: str
) -> None:
    code = "InvalidEndpointOrModel.NotFound" if "exist" in message else "ModelNotOpen"
    ark.post(IMAGES, status=404, json={"error": {"code": code, "message": message}})
    text = error_text(
        await call(
            "generate_image", {"prompt": "a fox", "model": "doubao-seedream-4.5-251128"}
        )
    )
    assert advice in text


@pytest.mark.parametrize(
    ("arguments", "refused"),
    [
        (
            {"resolution": "1080p"},
            "resolution 1080p is not one dreamina-seedance-2-5-premium makes: 4k;",
        ),
        ({"resolution": "4k"}, None),
        ({"draft": True, "resolution": "480p"}, None),
        (
            {"draft_task_id": "cgt-draft-1", "resolution": "1080p"},
            "resolution 1080p is not one",
        ),
    ],
)
async def test_seedance_2_5_premium_renders_4k_only_and_drafts_at_480p(
    ark: Any, arguments: dict[str, Any], refused: str | None
) -> None:
    byteplus = "https://ark.ap-southeast.bytepluses.com/api/v3"
    if not refused:
        ark.post(f"{byteplus}/contents/generations/tasks", json={"id": "cgt-1"})
    result = await call(
        "generate_video",
        {
            "prompt": "a fox",
            "model": "dreamina-seedance-2-5-premium-260915",
            **arguments,
        },
        Config(api_key=KEY, base_url=byteplus),
    )
    if refused:
        assert refused in error_text(result) and len(ark.calls) == 0
    else:
        assert sent_json(ark)["resolution"] == arguments["resolution"]


def test_on_byteplus_seedance_1_5_pro_names_2_0_mini_as_its_successor() -> None:
    advice = doubao_mcp.lifecycle_of(
        "video", "seedance-1-5-pro-251215", doubao_mcp.BYTEPLUS
    ).advice(doubao_mcp.BYTEPLUS)
    assert "use dreamina-seedance-2-0-mini-260615" in advice


async def test_a_bare_404_points_at_ark_base_url_not_at_the_model(ark: Any) -> None:
    ark.get(
        "https://ark.test/contents/generations/tasks/cgt-1",
        status=404,
        body="<html>404 Not Found</html>",
    )
    text = error_text(
        await call(
            "query_video_task",
            {"task_id": "cgt-1"},
            Config(api_key=KEY, base_url="https://ark.test"),
        )
    )
    assert (
        "check ARK_BASE_URL (https://ark.test). Ark's address ends in /api/v3" in text
        and "Activate" not in text
    )


async def test_a_404_from_a_base_url_without_api_v3_points_at_ark_base_url_whatever_its_body(
    ark: Any,
) -> None:
    ark.post(
        "https://ark.test/images/generations",
        status=404,
        json={"error": {"code": "NotFound", "message": "no route"}},
    )
    text = error_text(
        await call(
            "generate_image",
            {"prompt": "a"},
            Config(api_key=KEY, base_url="https://ark.test"),
        )
    )
    assert (
        "check ARK_BASE_URL (https://ark.test). Ark's address ends in /api/v3" in text
        and "Activate" not in text
    )


async def test_model_not_open_for_an_explicit_model_names_that_model(ark: Any) -> None:
    ark.post(
        TASKS,
        status=404,
        json={"error": {"code": "ModelNotOpen", "message": "not open"}},
    )
    text = error_text(
        await call(
            "generate_video", {"prompt": "a", "model": "doubao-seedance-2-5-260628"}
        )
    )
    assert (
        "Activate doubao-seedance-2-5-260628 in the Ark console" in text
        and "DOUBAO_VIDEO_MODEL" not in text
    )


async def test_a_failed_tasks_next_step_reads_its_code_like_an_error(ark: Any) -> None:
    ark.get(
        f"{TASKS}/cgt-x",
        json={
            "id": "cgt-x",
            "status": "failed",
            "error": {
                "code": "OutputAudioSensitiveContentDetected",
                "message": "audio",
            },
        },
    )
    result = await call("query_video_task", {"task_id": "cgt-x"})
    assert result.structured_content["next_step"] == (
        "Generation failed: Ark's moderation blocked the generated "
        "audio, not the picture: call again with generate_audio: false."
    )


async def test_cancelling_a_running_task_explains_arks_refusal(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    ark.delete(
        f"{TASKS}/cgt-1",
        status=400,
        json={
            "error": {
                "code": "InvalidParameter",
                "message": "task cannot be deleted in status running. Request id: 0217abc",
            }
        },
    )
    text = error_text(await call("cancel_video_task", {"task_id": "cgt-1"}))
    assert (
        "Ark API error 400 InvalidParameter: task cannot be deleted in status running (request id 0217abc)."
        in text
    )
    assert (
        "The task is running: Ark cannot cancel or delete it now. Wait until it finishes"
        in text
    )


# --- Settings: Limits and Config, read once from the environment ------------------------------------------------------


def test_config_reads_the_official_names_first() -> None:
    config = Config.from_env(
        {
            "ARK_API_KEY": "official",
            "DOUBAO_API_KEY": "legacy",
            "ARK_BASE_URL": "https://ark.ap-southeast.bytepluses.com/api/v3/",
            "DOUBAO_IMAGE_MODEL": "img-model",
            "DOUBAO_IMAGE_ENDPOINT_ID": "ep-img",
            "DOUBAO_VIDEO_MODEL": "vid-model",
            "DOUBAO_VIDEO_ENDPOINT_ID": "ep-vid",
            "ARK_TIMEOUT": "42",
        }
    )
    assert (config.api_key, config.base_url) == (
        "official",
        "https://ark.ap-southeast.bytepluses.com/api/v3",
    )
    assert (config.image_model, config.video_model, config.image_timeout) == (
        "img-model",
        "vid-model",
        42.0,
    )


def test_config_accepts_the_typescript_servers_names() -> None:
    config = Config.from_env(
        {
            "DOUBAO_API_KEY": "legacy",
            "DOUBAO_IMAGE_ENDPOINT_ID": "ep-img",
            "DOUBAO_VIDEO_ENDPOINT_ID": "ep-vid",
        }
    )
    assert (config.api_key, config.image_model, config.video_model) == (
        "legacy",
        "ep-img",
        "ep-vid",
    )


def test_a_model_setting_is_the_only_model_never_a_list() -> None:
    config = Config.from_env(
        {"DOUBAO_IMAGE_MODEL": "ep-img", "DOUBAO_VIDEO_ENDPOINT_ID": "ep-vid"}
    )
    assert (
        doubao_mcp.models_for(config, "image"),
        doubao_mcp.models_for(config, "video"),
    ) == (("ep-img",), ("ep-vid",))


@pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="the XDG folders are Linux's"
)
def test_the_task_record_lives_in_the_users_data_folder_unless_moved_or_turned_off(
    tmp_path: Path,
) -> None:
    home = Path.home()
    assert Config.from_env({}).state_dir == home / ".local" / "share" / "doubao-mcp"
    assert (
        Config.from_env({"XDG_DATA_HOME": str(tmp_path)}).state_dir
        == tmp_path / "doubao-mcp"
    )
    assert (
        Config.from_env({"DOUBAO_STATE_DIR": str(tmp_path / "s")}).state_dir
        == tmp_path / "s"
    )
    assert Config.from_env({"DOUBAO_STATE_DIR": "tasks"}).state_dir == home / "tasks"
    assert Config.from_env({"DOUBAO_STATE_DIR": "~/t"}).state_dir == home / "t"
    assert Config.from_env({"DOUBAO_STATE_DIR": "OFF"}).state_dir is None


@pytest.mark.parametrize(
    "env, named",
    [
        ({"ARK_BASE_URL": "ark.cn-beijing.volces.com/api/v3"}, "ARK_BASE_URL"),
        ({"ARK_TIMEOUT": "soon"}, "ARK_TIMEOUT"),
        ({"ARK_TIMEOUT": "-1"}, "ARK_TIMEOUT"),
    ],
)
def test_config_refuses_bad_values_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Config.from_env(env)


def test_config_repr_hides_the_key() -> None:
    assert KEY not in repr(Config.from_env())


def test_allowed_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="DOUBAO_ALLOWED_DIR must be an existing folder"
    ):
        Config.from_env({"DOUBAO_ALLOWED_DIR": str(tmp_path / "missing")})
    assert (
        Config.from_env({"DOUBAO_ALLOWED_DIR": str(tmp_path)}).allowed_dir
        == tmp_path.resolve()
    )


def test_help_lists_every_setting_the_docs_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    table = configuration[
        configuration.index("## Settings") : configuration.index(
            "## Client configuration"
        )
    ]
    readme = (ROOT / "README.md").read_text()
    documented = set(
        re.findall(
            r"`((?:ARK|DOUBAO)_[A-Z_]+)`", table + readme[readme.index("## Settings") :]
        )
    )
    shown = settings_in_help(capsys)
    assert len(documented) >= 12 and not [
        name for name in documented if name not in shown
    ], documented


class StartUp(NamedTuple):
    status: int
    stdout: str
    stderr: str


def start_up(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    **env: str,
) -> StartUp:
    """main() as the console script runs it, in this process, with `env` (and PATH) as the whole environment: for
    a start-up that ends before serving. What the interpreter would make of its SystemExit: the status, and the
    message it writes to stderr."""
    for name in set(os.environ) - {"PATH"}:
        monkeypatch.delenv(name)
    for name, value in {**SCRIPT_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    handlers = {
        number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)
    }
    # main() sets the root logger up as the process's own; the test process's capture is put back after.
    root = logging.getLogger()
    logged = (root.handlers[:], root.level)
    try:
        with pytest.raises(SystemExit) as exited:
            doubao_mcp.main(list(argv))
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        root.handlers[:], root.level = logged
    out, err = capsys.readouterr()
    code = exited.value.code
    if isinstance(code, str):
        return StartUp(1, out, err + code + "\n")
    return StartUp(code or 0, out, err)


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--transport", "carrier-pigeon"], {}, "invalid choice: 'carrier-pigeon'"),
        ([], {"DOUBAO_MCP_TRANSPORT": "pigeon"}, "DOUBAO_MCP_TRANSPORT must be one of"),
        ([], {"DOUBAO_MCP_LOG_LEVEL": "chatty"}, "DOUBAO_MCP_LOG_LEVEL one of"),
        (["--port", "eighty"], {}, "invalid int value: 'eighty'"),
        (
            [],
            {"DOUBAO_ALLOWED_DIR": "/no/such/folder"},
            "DOUBAO_ALLOWED_DIR must be an existing folder",
        ),
        ([], {"ARK_BASE_URL": "ftp://ark"}, "ARK_BASE_URL must be an http(s) URL"),
        (
            [],
            {"DOUBAO_MEDIA_DOMAINS": "media.example.com/x"},
            "DOUBAO_MEDIA_DOMAINS entries are origins",
        ),
    ],
)
def test_bad_options_stop_start_up_with_a_message_on_stderr_only(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    run = start_up(monkeypatch, capsys, *argv, **env)
    assert run.status != 0 and run.stdout == ""
    assert message in run.stderr


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"DOUBAO_OUTPUT_DIR": "/proc/no-such-folder"},
            "DOUBAO_OUTPUT_DIR /proc/no-such-folder cannot be made",
        ),
        (
            {"DOUBAO_VIDEO_MODEL": "doubao seedance"},
            "DOUBAO_VIDEO_MODEL must be a model id",
        ),
        (
            {"DOUBAO_IMAGE_ENDPOINT_ID": "ep/../x"},
            "DOUBAO_IMAGE_ENDPOINT_ID must be a model id",
        ),
        # A limit that does not parse is never read as no limit.
        ({"DOUBAO_DAILY_LIMIT": "lots"}, "DOUBAO_DAILY_LIMIT must be an amount in CNY"),
        (
            {"DOUBAO_PRICES": "/no/such/prices.json"},
            "DOUBAO_PRICES (/no/such/prices.json) cannot be read",
        ),
    ],
)
def test_unusable_settings_are_reported_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    run = start_up(monkeypatch, capsys, ARK_API_KEY=KEY, **env)
    assert run.status != 0 and run.stdout == "" and message in run.stderr


@pytest.mark.parametrize(
    "key", ["ark-key-with-a-newline\nX-Evil: 1", "ark-key-\u00e9\u4e2d-non-latin-1"]
)
def test_an_unusable_key_is_refused_at_start_up_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    run = start_up(monkeypatch, capsys, ARK_API_KEY=key)
    assert run.status != 0 and run.stdout == ""
    assert (
        "ARK_API_KEY contains a control character or a character outside Latin-1"
        in run.stderr
    )
    assert key.split("\n")[0] not in run.stderr


def test_an_unusable_record_folder_that_was_asked_for_stops_start_up(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    asked = start_up(
        monkeypatch, capsys, ARK_API_KEY=KEY, DOUBAO_STATE_DIR=str(blocker / "state")
    )
    assert asked.status == 1 and asked.stdout == ""
    assert "the task record cannot be kept in" in asked.stderr
    assert "Set DOUBAO_STATE_DIR to a writable folder, or to off" in asked.stderr


def test_help_needs_no_key_and_names_every_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    helped = start_up(
        monkeypatch, capsys, "--help", ARK_BASE_URL="http://127.0.0.1:9/unreachable"
    )
    assert helped.status == 0
    for name in (
        "ARK_API_KEY",
        "ARK_BASE_URL",
        "DOUBAO_OUTPUT_DIR",
        "DOUBAO_ALLOWED_DIR",
        "DOUBAO_STATE_DIR",
        "--transport",
        "DOUBAO_MCP_HOST",
        "DOUBAO_MCP_PORT",
        "DOUBAO_MCP_ALLOWED_HOSTS",
        "DOUBAO_MCP_LOG_LEVEL",
    ):
        assert name in " ".join(helped.stdout.split()), name


# --- Arguments: met halfway, then checked, before anything is sent ----------------------------------------------------


@pytest.mark.parametrize(
    "tool, arguments, refusal",
    [
        (
            "generate_video",
            {"prompt": "fox", "aspect_ratio": "9:16", "image": "https://x/y.png"},
            "'aspect_ratio' is not an argument of generate_video: use ratio. "
            "'image' is not an argument of generate_video: use first_frame or reference_images.",
        ),
        (
            "generate_image",
            {"prompt": "fox", "image": "https://x/y.png", "n": 2},
            "'image' is not an argument of generate_image: use images. 'n' is not an argument of generate_image: use "
            "max_images.",
        ),
        (
            "generate_image",
            {"prompt": "fox", "negativePrompt": "ugly"},
            "'negativePrompt' is not an argument of "
            "generate_image: its arguments are prompt, model, images,",
        ),
        (
            "query_video_task",
            {"taskId": "cgt-1"},
            "'taskId' is not an argument of query_video_task: use task_id.",
        ),
        ("generate_video", {"prompt": "fox", "durations": 5}, "use duration."),
    ],
)
async def test_unknown_arguments_are_refused_naming_the_real_one(
    ark: Any, tool: str, arguments: dict[str, Any], refusal: str
) -> None:
    assert refusal in error_text(await call(tool, arguments))
    assert len(ark.calls) == 0


async def test_bad_arguments_get_one_sentence_each_not_a_validation_dump(
    ark: Any,
) -> None:
    text = error_text(
        await call(
            "generate_video",
            {
                "prompt": " ",
                "ratio": "2:1",
                "duration": "ten",
                "seed": -5,
                "camera_fixed": "maybe",
            },
        )
    )
    assert text == (
        "Error executing tool generate_video: prompt is ''; it must contain text. ratio is '2:1'; it takes "
        "'16:9', '4:3', '1:1', '3:4', '9:16', '21:9' or 'adaptive'. duration is 'ten'; it takes a whole "
        "number. seed is -5; the least it takes is -1. camera_fixed is 'maybe'; it takes true or false."
    )
    assert (
        "pydantic" not in text
        and "validation error" not in text
        and len(ark.calls) == 0
    )


async def test_forgiving_where_the_meaning_is_unambiguous(
    ark: Any, tmp_path: Path
) -> None:
    """Whitespace around ids, models and paths; the case of enums and size tiers; one string for a list; numbers
    as strings."""
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.post(IMAGES, json={"data": []})
    ark.get(TASKS, json={"total": 0, "items": []})
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "queued"})
    video = await call(
        "generate_video",
        {
            "prompt": "a fox ",
            "model": " doubao-seedance-2-0-260128 ",
            "resolution": "4K",
            "ratio": "ADAPTIVE",
            "duration": "5",
            "reference_images": " https://img.test/a.png ",
            "service_tier": "Flex",
        },
    )
    image = await call(
        "generate_image",
        {
            "prompt": "a fox",
            "size": "2k",
            "max_images": "3",
            "output_format": "PNG",
            "save_dir": f" {tmp_path} ",
        },
    )
    listing = await call("list_video_tasks", {"status": "Running", "task_ids": "cgt-1"})
    query = await call("query_video_task", {"task_id": " cgt-1\n"})
    assert not any(r.is_error for r in (video, image, listing, query)), [
        r.content[0].text for r in (video, image)
    ]
    assert sent_json(ark, 0) == {
        "model": "doubao-seedance-2-0-260128",
        "resolution": "4k",
        "ratio": "adaptive",
        "duration": 5,
        "service_tier": "flex",
        "content": [
            {"type": "text", "text": "a fox"},
            *items("image", "reference_image", ["https://img.test/a.png"]),
        ],
    }
    assert sent_json(ark, 1) == {
        "model": "doubao-seedream-4-5-251128",
        "prompt": "a fox",
        "size": "2K",
        "output_format": "png",
        "sequential_image_generation": "auto",
        "sequential_image_generation_options": {"max_images": 3},
    }
    assert parse_qsl(urlsplit(ark.calls[2].request.url).query) == [
        ("page_size", "1"),
        ("filter.status", "running"),
        ("filter.task_ids", "cgt-1"),
    ]


async def test_a_wrong_json_type_for_any_parameter_is_refused(tmp_path: Path) -> None:
    """Every parameter of every tool, read from the schema the server publishes, with a value of the wrong JSON
    type: an object, or a list where an object is expected. Nothing reaches Ark, and the server keeps serving."""
    with FakeArk() as fake:
        async with Client(
            make_server(Config(api_key=KEY, base_url=fake.url))
        ) as client:
            cases = [
                (
                    tool.name,
                    name,
                    ["not", "valid"]
                    if schema.get("type") == "object"
                    else {"not": "valid"},
                )
                for tool in (await client.list_tools()).tools
                for name, schema in tool.input_schema["properties"].items()
            ]
            for tool, name, wrong in cases:
                result = await client.call_tool(
                    tool, {**REQUIRED.get(tool, {}), name: wrong}
                )
                text = result.content[0].text
                assert (
                    result.is_error and f"{name} is " in text and "pydantic" not in text
                ), (tool, name, text)
            following = await client.call_tool("list_video_tasks", {})
        assert len(cases) > 40 and not following.is_error
        # Only the follow-up
        assert [r["path"] for r in fake.requests] == [TASKS_ROUTE]
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool, arguments, name", BAD_INPUTS)
async def test_bad_inputs_are_refused_before_any_request(
    tool: str, arguments: dict[str, Any], name: str, tmp_path: Path
) -> None:
    with FakeArk() as fake:
        arguments = {**REQUIRED.get(tool, {}), **arguments}
        text = await run_case(
            fake, Config(api_key=KEY, base_url=fake.url), tool, arguments, tmp_path
        )
        assert name in text and [r["path"] for r in fake.requests] == [TASKS_ROUTE]


@pytest.mark.parametrize("wait", [-1, 601, "long"])
async def test_wait_seconds_is_bounded(ark: Any, wait: Any) -> None:
    assert "wait_seconds" in error_text(
        await call("query_video_task", {"task_id": "cgt-1", "wait_seconds": wait})
    )
    assert len(ark.calls) == 0


@pytest.mark.parametrize(
    "task_id",
    [
        "",
        "   ",
        "cgt 1",
        "cgt/1",
        "../tasks",
        "cgt-1..2",
        "cgt-1%2F",
        "cgt\n1",
        "cgt-ü",
        "c" * 129,
    ],
)
async def test_task_ids_are_checked_before_any_request(ark: Any, task_id: str) -> None:
    for tool in ("query_video_task", "cancel_video_task"):
        assert "task_id" in error_text(await call(tool, {"task_id": task_id}))
    assert "task_ids" in error_text(
        await call("list_video_tasks", {"task_ids": ["cgt-ok", task_id]})
    )
    assert len(ark.calls) == 0


async def test_generate_video_waits_at_most_55_s_so_its_task_id_beats_a_60_s_client_timeout(
    ark: Any,
) -> None:
    async with Client(make_server()) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        refused = await client.call_tool(
            "generate_video", {"prompt": "a fox", "wait_seconds": 90}
        )
    assert (
        tools["generate_video"].input_schema["properties"]["wait_seconds"]["maximum"]
        == 55
    )
    assert (
        tools["query_video_task"].input_schema["properties"]["wait_seconds"]["maximum"]
        == 600
    )
    assert (
        "wait_seconds is 90; the most it takes is 55." in error_text(refused)
        and len(ark.calls) == 0
    )
    assert (
        "If the call times out, find the task with list_video_tasks"
        in tools["generate_video"].description
    )


# --- Tools: each published, its arguments checked, its work handed to the studio, its result wrapped ------------------


async def test_tools_declare_output_schemas_and_annotations() -> None:
    async with Client(make_server()) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}

    # All four stated, none left to the spec's defaults: some clients read a missing hint as unknown.
    hints = {
        name: (
            t.annotations.read_only_hint,
            t.annotations.destructive_hint,
            t.annotations.idempotent_hint,
            t.annotations.open_world_hint,
        )
        for name, t in tools.items()
    }
    assert hints == {
        "generate_image": (False, False, False, True),
        "generate_video": (False, False, False, True),
        "query_video_task": (True, False, True, True),
        "list_video_tasks": (True, False, True, True),
        "cancel_video_task": (False, True, False, True),
        "list_models": (True, False, True, True),
    }
    assert tools["query_video_task"].output_schema["required"] == [
        "task_id",
        "status",
        "next_step",
    ]
    assert tools["generate_image"].input_schema["properties"]["max_images"] == {
        "description": "Above 1: a set of up to this many related images.",
        "maximum": 15,
        "minimum": 1,
        "type": "integer",
    }
    listing = json.dumps(
        [
            t.model_dump(mode="json", by_alias=True, exclude_none=True)
            for t in tools.values()
        ]
    )
    assert '"title": "Prompt"' not in listing and "$ref" not in listing


async def test_usage_is_published_as_an_open_object_and_echo_fields_stay_allowed() -> (
    None
):
    """A typed client (fastmcp) builds its result type from the output schema: nested usage must fit, and
    the task fields left out of the schema must still be allowed."""
    async with Client(make_server()) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    task_schema = tools["query_video_task"].output_schema
    assert task_schema["properties"]["usage"] == {"type": "object"}
    assert (
        task_schema["additionalProperties"] is True
        and "duration" not in task_schema["properties"]
    )
    listed = tools["list_video_tasks"].output_schema["properties"]["tasks"]["items"]
    assert listed == {
        **task_schema,
        "properties": {
            k: v for k, v in task_schema["properties"].items() if k != "next_step"
        },
        "required": ["task_id", "status"],
    }


@pytest.mark.parametrize("keys", [True, False], ids=["asset tools", "none"])
async def test_tool_definitions_stay_within_their_token_budget(
    monkeypatch: pytest.MonkeyPatch, keys: bool
) -> None:
    """Every conversation pays for tools/list: names, descriptions and input schemas within 8,000 characters
    of compact JSON (the brief's budget, with and without the optional asset tools), and the whole listing (output
    schemas and annotations too) within 12,000, or 15,000 with the asset tools."""
    if keys:
        monkeypatch.setenv("VOLCENGINE_ACCESS_KEY", "ak")
        monkeypatch.setenv("VOLCENGINE_SECRET_KEY", "sk")
    async with Client(make_server()) as client:
        tools = (await client.list_tools()).tools
    assert len(tools) == 10 if keys else 6
    facing = [
        {"name": t.name, "description": t.description, "input_schema": t.input_schema}
        for t in tools
    ]
    whole = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]

    def size(value):
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    print("tools/list:", size(facing), "facing,", size(whole), "whole")
    assert size(facing) <= 8000, size(facing)
    assert size(whole) <= (15000 if keys else 12000), size(whole)


async def test_result_text_is_compact_json_in_the_order_of_the_structured_content(
    ark: Any,
) -> None:
    ark.get(
        TASKS,
        json={
            "total": 2,
            "items": [SUCCEEDED_TASK, {"id": "cgt-2", "status": "running"}],
        },
    )
    result = await call("list_video_tasks", {})
    listing = result.structured_content
    assert result.content[0].text == json.dumps(
        listing, ensure_ascii=False, separators=(",", ":")
    )
    assert list(json.loads(result.content[0].text)["tasks"][0]) == list(
        listing["tasks"][0]
    )
    # Said once per call, not once per task
    assert all("next_step" not in task for task in listing["tasks"])


async def test_list_models_is_a_compact_catalog_of_this_regions_ids_limits_prices_and_defaults(
    ark: Any,
) -> None:
    byteplus = Config(
        api_key=KEY, base_url="https://ark.ap-southeast.bytepluses.com/api/v3"
    )
    ark.post(
        "https://ark.ap-southeast.bytepluses.com/api/v3/images/generations",
        status=404,
        json={
            "error": {"code": "ModelNotOpen", "message": "has not activated the model"}
        },
    )
    ark.post(
        "https://ark.ap-southeast.bytepluses.com/api/v3/images/generations",
        json={"data": [{"url": "https://cdn.test/1.png"}]},
    )
    async with Client(make_server(byteplus)) as client:
        await client.call_tool("generate_image", {"prompt": "a fox"})
        both = await client.call_tool("list_models", {})
        videos = await client.call_tool("list_models", {"kind": "video"})
    assert len(both.content[0].text) <= 4000
    catalog = {m["family"]: m for m in both.structured_content["models"]}
    assert both.structured_content["currency"] == "USD"
    assert catalog["seedream-4-5"] == {
        "kind": "image",
        "family": "seedream-4-5",
        "ids": ["seedream-4-5-251128"],
        "takes": "2K/4K, WxH 3.7-16.8 MP, refs 0-14, sets",
        "price": "0.04 USD/image",
        "default": 1,
        "refused": "Ark said this key cannot use it",
    }
    assert catalog["seedance-1-5-pro"]["lifecycle"].endswith(
        "use dreamina-seedance-2-0-mini-260615"
    )
    assert catalog["seedance-2-5-premium"]["takes"].startswith(
        "4-30 s or -1, 4k, refs 30/10/10, drafts 480p"
    )
    assert "seedream-5-0-lite" not in catalog
    assert {m["kind"] for m in videos.structured_content["models"]} == {"video"}


async def test_without_a_key_tools_are_listed_and_calls_name_ark_api_key(
    ark: Any,
) -> None:
    config = Config.from_env({"ARK_BASE_URL": BASE})
    async with Client(make_server(config)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("query_video_task", {"task_id": "cgt-1"})
    assert names == {
        "generate_image",
        "generate_video",
        "query_video_task",
        "list_video_tasks",
        "cancel_video_task",
        "list_models",
    }
    assert "set ARK_API_KEY" in error_text(result)
    assert len(ark.calls) == 0


async def test_an_unexpected_failure_becomes_a_clear_error_and_the_server_keeps_serving(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(doubao_mcp, "shape_images", broken)
    ark.post(IMAGES, json={"data": []})
    ark.get(TASKS, json={"total": 0, "items": []})
    async with Client(make_server()) as client:
        failed = await client.call_tool("generate_image", {"prompt": "a"})
        following = await client.call_tool("list_video_tasks", {})
    assert (
        "generate_image failed unexpectedly (RecursionError); the server's log has the details"
        in error_text(failed)
    )
    assert not following.is_error


async def test_an_unexpected_failure_names_only_what_this_tool_may_have_spent(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(doubao_mcp, "shape_images", broken)
    monkeypatch.setattr(doubao_mcp, "shape_task", broken)
    ark.post(IMAGES, json={"data": []})
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    image = error_text(await call("generate_image", {"prompt": "a fox"}))
    query = error_text(await call("query_video_task", {"task_id": "cgt-1"}))
    assert (
        "generate_image failed unexpectedly (RuntimeError)" in image
        and "may have made (and billed) the images" in image
    )
    assert (
        "video task" not in image
        and "video task" not in query
        and "query_video_task failed unexpectedly" in query
    )


async def test_while_stopping_a_wait_that_arrived_is_answered_and_only_new_work_is_refused(
    ark: Any,
) -> None:
    """Item 13: a SIGTERM must answer every wait that reached the server."""
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    stopping = doubao_mcp.Stopping()
    stopping.set()
    config = Config.from_env()
    async with Client(make_server(config, stopping=stopping)) as client:
        waited = await client.call_tool(
            "query_video_task", {"task_id": "cgt-1", "wait_seconds": 600}
        )
        refused = await client.call_tool("generate_video", {"prompt": "a fox"})
    assert (
        waited.structured_content["status"] == "running"
        and "stopping" in waited.structured_content["next_step"]
    )
    assert "This server is stopping" in error_text(refused)


async def test_generate_image_sends_every_argument_and_returns_images_errors_and_usage(
    ark: Any,
) -> None:
    ark.post(
        IMAGES,
        json={
            "model": "doubao-seedream-4-0-250828",
            "created": 1757321139,
            "data": [
                {"url": "https://cdn.test/1.jpeg", "size": "2048x2048"},
                {
                    "error": {
                        "code": "OutputImageSensitiveContentDetected",
                        "message": "blocked",
                    }
                },
                {"url": "https://cdn.test/3.jpeg", "size": "2048x2048"},
            ],
            "usage": {
                "generated_images": 2,
                "output_tokens": 32768,
                "total_tokens": 32768,
            },
        },
    )
    result = await call(
        "generate_image",
        {
            "prompt": "a red fox in snow",
            "model": "doubao-seedream-4-0-250828",
            "images": ["https://img.test/a.png", "data:image/png;base64,iVBORw0KGgo="],
            "size": "2K",
            "max_images": 3,
            "seed": 7,
            "guidance_scale": 5.5,
            "watermark": False,
        },
    )
    assert not result.is_error
    request = ark.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Client-Request-Id"]
    assert sent_json(ark) == {
        "model": "doubao-seedream-4-0-250828",
        "prompt": "a red fox in snow",
        "image": ["https://img.test/a.png", "data:image/png;base64,iVBORw0KGgo="],
        "size": "2K",
        "seed": 7,
        "guidance_scale": 5.5,
        "watermark": False,
        "sequential_image_generation": "auto",
        "sequential_image_generation_options": {"max_images": 3},
    }
    assert result.structured_content == {
        "model": "doubao-seedream-4-0-250828",
        "created_at": "2025-09-08T08:45:39Z",
        "images": [
            {"index": 0, "url": "https://cdn.test/1.jpeg", "size": "2048x2048"},
            {"index": 2, "url": "https://cdn.test/3.jpeg", "size": "2048x2048"},
        ],
        "errors": [
            {
                "index": 1,
                "code": "OutputImageSensitiveContentDetected",
                "message": "blocked",
            }
        ],
        "usage": {"generated_images": 2, "output_tokens": 32768, "total_tokens": 32768},
        "cost": {
            "currency": "CNY",
            "basis": "no price is known for doubao-seedream-4-0-250828 images at 2K in CNY: see docs/cost.md to "
            "give one in DOUBAO_PRICES",
            "billed_basis": "2 images; no price is known for its model",
        },
        "note": f"{IN_MEMORY_NOTE} {doubao_mcp.URL_LIFETIME_NOTE}",
    }
    assert json.loads(result.content[0].text) == result.structured_content


IN_MEMORY_NOTE = (
    "Today's spend under DOUBAO_DAILY_LIMIT is kept in memory (the task record is off): a restart forgets it, and "
    "other server processes do not see it."
)


async def test_generate_image_sends_only_what_was_given_with_the_env_default_model(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOUBAO_IMAGE_MODEL", "ep-20250101-image")
    ark.post(IMAGES, json={"data": [{"url": "https://cdn.test/1.jpeg"}]})
    result = await call(
        "generate_image", {"prompt": "a cat", "images": ["https://img.test/a.png"]}
    )
    assert sent_json(ark) == {
        "model": "ep-20250101-image",
        "prompt": "a cat",
        "image": "https://img.test/a.png",
    }
    assert result.structured_content["images"] == [
        {"index": 0, "url": "https://cdn.test/1.jpeg"}
    ]


async def test_an_explicit_model_argument_wins_over_the_environment(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOUBAO_IMAGE_MODEL", "ep-from-env")
    monkeypatch.setenv("DOUBAO_VIDEO_MODEL", "ep-from-env")
    ark.post(IMAGES, json={"data": []})
    ark.post(TASKS, json={"id": "cgt-1"})
    await call(
        "generate_image", {"prompt": "a", "model": "doubao-seedream-3-0-t2i-250415"}
    )
    await call(
        "generate_video",
        {"prompt": "a", "model": "doubao-seedance-1-0-lite-t2v-250428"},
    )
    assert sent_json(ark, 0)["model"] == "doubao-seedream-3-0-t2i-250415"
    assert sent_json(ark, 1)["model"] == "doubao-seedance-1-0-lite-t2v-250428"


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n"}, "must contain text"),
        ({"prompt": "x" * 100_000}, "at most 5000 characters"),
        (
            {"prompt": "a", "size": "huge"},
            "must be a named size such as 2K, 1.5K, auto or adaptive, or WIDTHxHEIGHT",
        ),
        ({"prompt": "a", "size": "32x32"}, "sides of 64 to 16384 pixels"),
        ({"prompt": "a", "size": "4096x128"}, "aspect ratio within 16:1"),
        ({"prompt": "a", "max_images": 16}, "max_images"),
        ({"prompt": "a", "max_images": "many"}, "max_images"),
        ({"prompt": "a", "seed": -2}, "seed"),
        ({"prompt": "a", "guidance_scale": 11}, "guidance_scale"),
        ({"prompt": "a", "watermark": "maybe"}, "watermark"),
        ({"prompt": "a", "model": "two words"}, "must be an Ark model id"),
        (
            {"prompt": "a", "images": ["ftp://host/a.png"]},
            "images: 'ftp://host/a.png' is not an https URL",
        ),
        (
            {"prompt": "a", "images": ["https://img.test/a.png"] * 15},
            "images: 15 reference images is over doubao-seedream-4-5's 14.",
        ),
        (
            {"prompt": "a", "images": ["https://img.test/a.png"] * 51, "model": "ep-x"},
            "images",
        ),
        (
            {"prompt": "a", "images": ["https://img.test/a.png"] * 5, "max_images": 11},
            "total 15 at most, got 5 + 11",
        ),
    ],
)
async def test_generate_image_refuses_bad_arguments_before_any_request(
    ark: Any, arguments: dict[str, Any], message: str
) -> None:
    text = error_text(await call("generate_image", arguments))
    assert message in text
    assert text.startswith("Error executing tool generate_image")
    assert len(ark.calls) == 0


async def test_generate_video_sends_parameters_as_top_level_fields_and_frames_as_roles(
    ark: Any,
) -> None:
    ark.post(TASKS, json={"id": "cgt-20250331175019-6htr8"})
    result = await call(
        "generate_video",
        {
            "prompt": "the fox runs",
            "first_frame": "https://img.test/first.png",
            "last_frame": "data:image/jpeg;base64,/9j/4AAQ",
            "resolution": "1080p",
            "ratio": "16:9",
            "duration": 10,
            "seed": 4294967295,
            "camera_fixed": True,
            "watermark": False,
            "generate_audio": True,
            "return_last_frame": True,
            "service_tier": "flex",
            "callback_url": "https://hooks.test/ark",
        },
    )
    assert ark.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    assert sent_json(ark) == {
        "model": "doubao-seedance-2-0-260128",
        "content": [
            {"type": "text", "text": "the fox runs"},
            {
                "type": "image_url",
                "image_url": {"url": "https://img.test/first.png"},
                "role": "first_frame",
            },
            {
                "type": "image_url",
                "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"},
                "role": "last_frame",
            },
        ],
        "resolution": "1080p",
        "ratio": "16:9",
        "duration": 10,
        "seed": 4294967295,
        "camera_fixed": True,
        "watermark": False,
        "generate_audio": True,
        "return_last_frame": True,
        "service_tier": "flex",
        "callback_url": "https://hooks.test/ark",
    }
    task = result.structured_content
    assert (task["task_id"], task["status"], task["model"]) == (
        "cgt-20250331175019-6htr8",
        "queued",
        "doubao-seedance-2-0-260128",
    )
    assert (
        "query_video_task" in task["next_step"]
        and "cgt-20250331175019-6htr8" in task["next_step"]
    )


async def test_generate_video_text_only_and_reference_images(ark: Any) -> None:
    ark.post(TASKS, json={"id": "cgt-a"})
    ark.post(TASKS, json={"id": "cgt-b"})
    await call(
        "generate_video",
        {"prompt": "waves", "frames": 121, "model": "doubao-seedance-1-0-pro-250528"},
    )
    await call(
        "generate_video",
        {
            "prompt": "a cat and a hat",
            "model": "doubao-seedance-1-0-lite-i2v-250428",
            "reference_images": [
                "https://img.test/cat.png",
                "https://img.test/hat.png",
            ],
        },
    )
    assert sent_json(ark, 0) == {
        "model": "doubao-seedance-1-0-pro-250528",
        "content": [{"type": "text", "text": "waves"}],
        "frames": 121,
    }
    assert sent_json(ark, 1)["content"][1:] == [
        {
            "type": "image_url",
            "image_url": {"url": "https://img.test/cat.png"},
            "role": "reference_image",
        },
        {
            "type": "image_url",
            "image_url": {"url": "https://img.test/hat.png"},
            "role": "reference_image",
        },
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"last_frame": "https://img.test/l.png"}, "last_frame needs first_frame"),
        (
            {
                "first_frame": "https://img.test/f.png",
                "reference_images": ["https://img.test/r.png"],
            },
            "either first_frame/last_frame or reference images, videos and audios, not both",
        ),
        (
            {
                "first_frame": "https://img.test/f.png",
                "reference_audios": ["https://img.test/r.mp3"],
            },
            "not both",
        ),
        (
            {
                "reference_images": ["https://img.test/r.png"] * 10,
                "model": "doubao-seedance-2-0-260128",
            },
            "reference_images: 10 images is over doubao-seedance-2-0's 9; "
            "doubao-seedance-2-5-260628 takes 10 reference_images.",
        ),
        (
            {"reference_images": ["https://img.test/r.png"] * 31},
            "reference_images: 31 images is over doubao-seedance-2-0's 9.",
        ),
        ({"duration": 5, "frames": 121}, "duration or frames, not both"),
        (
            {"duration": 0},
            "must be seconds (1-600; each model takes its own range), or -1",
        ),
        ({"duration": -2}, "must be seconds"),
        (
            {"duration": 16, "model": "doubao-seedance-2-0-260128"},
            "duration 16 is over doubao-seedance-2-0's 4-15 s; doubao-seedance-2-5-260628 takes duration 16.",
        ),
        ({"duration": 31}, "duration 31 is over doubao-seedance-2-0's 4-15 s."),
        ({"frames": 30}, "25 + 4n"),
        ({"frames": 121}, "frames: doubao-seedance-2-0 takes duration, not frames."),
        ({"resolution": "8k"}, "resolution"),
        (
            {"resolution": "4k", "model": "doubao-seedance-2-0-fast-260128"},
            "resolution 4k is not one doubao-seedance-2-0-fast makes: 480p, 720p; doubao-seedance-2-0-260128 takes "
            "resolution 4k.",
        ),
        ({"ratio": "2:1"}, "ratio"),
        ({"service_tier": "cheap"}, "service_tier"),
        ({"seed": 2**32}, "seed"),
        ({"camera_fixed": "yes please"}, "camera_fixed"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"first_frame": "/no/such/file.png"}, "first_frame"),
    ],
)
async def test_generate_video_refuses_impossible_requests_before_any_request(
    ark: Any, arguments: dict[str, Any], message: str
) -> None:
    text = error_text(await call("generate_video", {"prompt": "a scene", **arguments}))
    assert message in text
    assert len(ark.calls) == 0


async def test_query_video_task_returns_the_normalized_view(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-20250331175019-6htr8", json=SUCCEEDED_TASK)
    result = await call("query_video_task", {"task_id": "cgt-20250331175019-6htr8"})
    assert ark.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    assert result.structured_content == {
        "task_id": "cgt-20250331175019-6htr8",
        "status": "succeeded",
        "model": "doubao-seedance-1-0-pro-250528",
        "video_url": "https://cdn.test/v.mp4?sig=1",
        "last_frame_url": "https://cdn.test/last.png",
        "created_at": "2025-03-31T09:50:19Z",
        "updated_at": "2025-03-31T09:51:13Z",
        "resolution": "720p",
        "ratio": "16:9",
        "duration": 5,
        "fps": 24,
        "seed": 10,
        "usage": {"completion_tokens": 108900, "total_tokens": 108900},
        "cost": {
            "currency": "CNY",
            "billed": 1.6335,
            "billed_basis": "108,900 tokens at 15 CNY/M (the rate without a reference video)",
        },
        "next_step": doubao_mcp.URL_LIFETIME_NOTE,
    }


async def test_a_failed_task_is_a_result_not_an_error(ark: Any) -> None:
    ark.get(
        f"{TASKS}/cgt-x",
        json={
            "id": "cgt-x",
            "status": "failed",
            "frames": 121,
            "error": {
                "code": "OutputVideoSensitiveContentDetected",
                "message": "blocked",
            },
        },
    )
    result = await call("query_video_task", {"task_id": "cgt-x"})
    assert not result.is_error
    assert (
        result.structured_content["error_code"] == "OutputVideoSensitiveContentDetected"
    )
    assert result.structured_content["error_message"] == "blocked"
    assert result.structured_content["frames"] == 121
    # The same advice as Ark's error answer with this code
    assert result.structured_content["next_step"] == (
        "Generation failed: Ark's moderation rejected the prompt, an input image or the result: rephrase the prompt "
        "or use another image."
    )


async def test_list_video_tasks_sends_filters_and_normalizes_each_task(
    ark: Any,
) -> None:
    ark.get(
        TASKS,
        json={
            "total": 2,
            "items": [
                SUCCEEDED_TASK,
                {
                    "id": "cgt-2",
                    "status": "failed",
                    "failure_reason": {"code": "E", "message": "boom"},
                },
            ],
        },
    )
    result = await call(
        "list_video_tasks",
        {
            "service_tier": "default",
            "model": "doubao-seedance-1-0-pro-250528",
            "task_ids": [TASK_ID, "cgt-2"],
        },
    )
    sent = urlsplit(ark.calls[0].request.url)
    assert sent.path == "/api/v3/contents/generations/tasks"
    assert parse_qsl(sent.query) == [
        ("page_size", "2"),
        ("filter.model", "doubao-seedance-1-0-pro-250528"),
        ("filter.service_tier", "default"),
        ("filter.task_ids", TASK_ID),
        ("filter.task_ids", "cgt-2"),
    ]
    listing = result.structured_content
    assert listing["total"] == 2
    assert listing["tasks"][0]["video_url"] == "https://cdn.test/v.mp4?sig=1"
    assert (
        listing["tasks"][1]["error_code"],
        listing["tasks"][1]["error_message"],
    ) == ("E", "boom")


async def test_list_video_tasks_without_filters_sends_no_query(ark: Any) -> None:
    ark.get(TASKS, json={"total": 0, "items": []})
    result = await call("list_video_tasks", {})
    assert ark.calls[0].request.url == TASKS
    assert result.structured_content == {"total": 0, "tasks": []}


async def test_list_video_tasks_filters_by_service_tier(ark: Any) -> None:
    ark.get(TASKS, json={"total": 0, "items": []})
    await call("list_video_tasks", {"service_tier": "flex", "status": "queued"})
    assert parse_qsl(urlsplit(ark.calls[0].request.url).query) == [
        ("filter.status", "queued"),
        ("filter.service_tier", "flex"),
    ]


@pytest.mark.parametrize(
    "status, outcome",
    [
        ("queued", "cancelled"),
        ("succeeded", "deleted"),
        ("failed", "deleted"),
        ("expired", "deleted"),
    ],
)
async def test_cancel_video_task_says_whether_it_cancelled_or_deleted(
    ark: Any, status: str, outcome: str
) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": status})
    ark.delete(f"{TASKS}/cgt-1", json={})
    result = await call("cancel_video_task", {"task_id": "cgt-1"})
    assert ark.calls[1].request.method == "DELETE"
    assert ark.calls[1].request.headers["Authorization"] == f"Bearer {KEY}"
    assert result.structured_content["outcome"] == outcome
    assert result.structured_content["previous_status"] == status


async def test_cancelling_an_unknown_task_says_so(ark: Any) -> None:
    ark.get(
        f"{TASKS}/cgt-gone",
        status=404,
        json={"error": {"code": "ResourceNotFound", "message": "not found"}},
    )
    text = error_text(await call("cancel_video_task", {"task_id": "cgt-gone"}))
    assert "Ark API error 404 ResourceNotFound: not found" in text
    assert doubao_mcp.TASK_NOT_FOUND_HINT in text


async def test_video_takes_are_tasks_of_their_own_with_seed_plus_i_and_a_failed_take_is_its_own_entry(
    ark: Any,
) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.post(TASKS, json={"id": "cgt-2"})
    ark.post(
        TASKS,
        status=400,
        json={"error": {"code": "InvalidParameter", "message": "no", "param": "seed"}},
    )
    result = await call(
        "generate_video", {"prompt": "a fox", "model": DANCE_20, "seed": 7, "takes": 3}
    )
    assert [sent_json(ark, i)["seed"] for i in range(3)] == [7, 8, 9]
    content = result.structured_content
    assert content["task_id"] == "cgt-1"
    assert [(t["take"], t.get("task_id"), "error" in t) for t in content["takes"]] == [
        (0, "cgt-1", False),
        (1, "cgt-2", False),
        (2, None, True),
    ]
    assert "Ark API error 400 InvalidParameter" in content["takes"][2]["error"]
    assert content["cost"]["estimate"] == pytest.approx(2 * 5.0094)
    assert content["next_step"].startswith("0 of 3 takes done.")


async def test_the_day_limit_and_the_question_see_every_take_before_the_first_is_sent(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOUBAO_DAILY_LIMIT", "12")
    refused = await call(
        "generate_video", {"prompt": "a fox", "model": DANCE_20, "takes": 3}
    )
    assert "would cost about 15.0282 CNY (3 takes of 720p 16:9 5 s" in error_text(
        refused
    )
    assert len(ark.calls) == 0


async def test_image_takes_are_requests_of_their_own_and_every_image_says_its_take(
    ark: Any,
) -> None:
    for n in (1, 2):
        ark.post(
            IMAGES,
            json={
                "data": [{"url": f"https://cdn.test/{n}.png"}],
                "usage": {"generated_images": 1},
            },
        )
    result = await call(
        "generate_image", {"prompt": "a fox", "model": S45, "seed": 3, "takes": 2}
    )
    assert sorted(sent_json(ark, i)["seed"] for i in range(2)) == [3, 4]
    content = result.structured_content
    assert sorted(image["take"] for image in content["images"]) == [0, 1]
    assert content["usage"] == {"generated_images": 2}
    assert content["takes"] == [{"take": 0, "model": None}, {"take": 1, "model": None}]


async def test_a_call_whose_every_take_failed_fails_with_each_takes_error(
    ark: Any,
) -> None:
    for _ in range(2):
        ark.post(
            IMAGES,
            status=400,
            json={"error": {"code": "InvalidParameter", "message": "bad prompt"}},
        )
    text = error_text(
        await call("generate_image", {"prompt": "a fox", "model": S45, "takes": 2})
    )
    assert text.count("Ark API error 400 InvalidParameter: bad prompt") == 2
    assert "No take was made: take 0: " in text and "; take 1: " in text


async def test_a_wait_for_takes_counts_progress_in_takes(fake_ark: FakeArk) -> None:
    fake_ark.polls_to_finish = 2
    told: list[str] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        told.append(message or "")

    config = replace(
        Config.from_env(), base_url=fake_ark.url, poll_intervals=(0.01, 0.02)
    )
    async with Client(make_server(config)) as client:
        result = await client.call_tool(
            "generate_video",
            {"prompt": "a fox", "model": DANCE_20, "takes": 2, "wait_seconds": 10},
            progress_callback=progress,
        )
    assert [t["status"] for t in result.structured_content["takes"]] == [
        "succeeded",
        "succeeded",
    ]
    assert "2 of 2 takes done" in told
    assert result.structured_content["next_step"].startswith("2 of 2 takes done.")


# --- Rules: which model a call goes to, and what it may ask of it -----------------------------------------------------


@pytest.mark.parametrize(
    "host, region",
    [
        ("ark.cn-beijing.volces.com", "china"),
        ("ark.ap-southeast.bytepluses.com", "byteplus"),
        ("ark.eu-west.bytepluses.com", "byteplus"),
    ],
)
def test_defaults_are_lists_of_current_models_in_the_hosts_own_ids(
    host: str, region: str
) -> None:
    """China ids start with doubao-; BytePlus ids never do. Each list starts with a model the table knows and does
    not mark retired, and keeps any it marks retired for last."""
    config = Config.from_env({"ARK_BASE_URL": f"https://{host}/api/v3"})
    assert (config.image_model, config.video_model) == (None, None)
    for kind in ("image", "video"):
        models = doubao_mcp.models_for(config, kind)
        assert len(models) >= 3 and all(
            m.startswith("doubao-") == (region == "china") for m in models
        ), models
        assert None not in [doubao_mcp.family_row(kind, m) for m in models], models
        lifecycles = [doubao_mcp.lifecycle_of(kind, m, config.region) for m in models]
        assert lifecycles[0] is None, models
        retired = [bool(lifecycle and lifecycle.retired) for lifecycle in lifecycles]
        # The retired ones last
        assert retired == sorted(retired), models


@pytest.mark.parametrize("model, arguments, expected", video_limit_cases())
async def test_each_video_model_at_and_past_its_limits(
    ark: Any, limits_client: Any, model: str, arguments: dict[str, Any], expected: Any
) -> None:
    await at_the_limit(
        ark,
        limits_client,
        "generate_video",
        TASKS,
        {"id": "cgt-1"},
        {"model": model, **arguments},
        expected,
    )


@pytest.mark.parametrize("model, arguments, expected", VIDEO_RULES)
async def test_what_a_video_model_does_and_does_not_take(
    ark: Any, limits_client: Any, model: str, arguments: dict[str, Any], expected: Any
) -> None:
    if isinstance(expected, dict):
        ark.post(TASKS, json={"id": "cgt-1"})
    arguments = {
        k: v
        for k, v in {"prompt": "a fox", "model": model, **arguments}.items()
        if v is not None
    }
    result = await limits_client.call_tool("generate_video", arguments)
    if isinstance(expected, dict):
        assert not result.is_error, result.content[0].text
        assert sent_json(ark) == {
            "model": model,
            "content": [{"type": "text", "text": "a fox"}],
            **expected,
        }
    else:
        assert expected in error_text(result)
        assert len(ark.calls) == 0


@pytest.mark.parametrize(
    "model", ["ep-20260101123456-abcde", "doubao-seedance-3-0-270101"]
)
async def test_a_model_the_table_does_not_know_gets_only_the_universal_checks(
    ark: Any, model: str
) -> None:
    """An endpoint id hides its model, and next year's model is not in the table: Ark decides, not us."""
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.post(IMAGES, json={"data": []})
    wide = {
        "duration": 60,
        "resolution": "4k",
        "reference_images": media("image", 40),
        "reference_videos": media("video", 12),
        "reference_audios": media("audio", 12),
        "draft": True,
        "generate_audio": True,
        "web_search": True,
    }
    assert not (
        await call("generate_video", {"prompt": "a fox", "model": model, **wide})
    ).is_error
    body = sent_json(ark, 0)
    assert (body["model"], body["duration"], body["resolution"], body["draft"]) == (
        model,
        60,
        "4k",
        True,
    )
    assert len(body["content"]) == 1 + 40 + 12 + 12 and body["tools"] == [
        {"type": "web_search"}
    ]
    image = {
        "prompt": "a fox",
        "model": model.replace("seedance", "seedream"),
        "size": "8K",
        "images": media("image", 12),
        "max_images": 3,
        "web_search": True,
    }
    assert not (await call("generate_image", image)).is_error
    assert (sent_json(ark, 1)["size"], len(sent_json(ark, 1)["image"])) == ("8K", 12)


@pytest.mark.parametrize(
    "arguments, refusal",
    [
        ({"last_frame": URL + "l"}, "last_frame needs first_frame"),
        ({"first_frame": URL + "f", "reference_videos": [URL + "v"]}, "not both"),
        ({"duration": 5, "frames": 121}, "duration or frames, not both"),
        (
            {"draft_task_id": "cgt-d", "reference_images": [URL + "i"]},
            "draft_task_id renders an existing draft",
        ),
        ({"prompt": None}, "prompt is required: describe the video"),
        ({"duration": 0}, "duration"),
        ({"reference_images": media("image", 51)}, "reference_images"),
    ],
)
async def test_the_universal_checks_hold_for_unknown_models_too(
    ark: Any, arguments: dict[str, Any], refusal: str
) -> None:
    arguments = {
        k: v
        for k, v in {"prompt": "a fox", "model": "ep-20260101-x", **arguments}.items()
        if v is not None
    }
    assert refusal in error_text(await call("generate_video", arguments))
    assert len(ark.calls) == 0


@pytest.mark.parametrize("model, arguments, expected", image_limit_cases())
async def test_each_image_model_at_and_past_its_limits(
    ark: Any, limits_client: Any, model: str, arguments: dict[str, Any], expected: Any
) -> None:
    await at_the_limit(
        ark,
        limits_client,
        "generate_image",
        IMAGES,
        {"data": []},
        {"model": model, **arguments},
        expected,
    )


async def test_seedream_5_takes_png_web_search_and_extra_fields(ark: Any) -> None:
    ark.post(IMAGES, json={"data": []})
    ark.post(IMAGES, json={"data": []})
    await call(
        "generate_image",
        {
            "prompt": "today's weather in Paris as a poster",
            "output_format": "png",
            "web_search": True,
            "size": "3k",
            "extra": {"optimize_prompt_options": {"mode": "fast"}},
        },
    )
    await call(
        "generate_image",
        {
            "prompt": "split into layers",
            "model": "doubao-seedream-5-0-pro-260628",
            "size": "auto",
            "extra": {"layer_decomposition": True},
        },
    )
    assert sent_json(ark, 0) == {
        "model": "doubao-seedream-5-0-260128",
        "prompt": "today's weather in Paris as a poster",
        "size": "3K",
        "output_format": "png",
        "tools": [{"type": "web_search"}],
        "optimize_prompt_options": {"mode": "fast"},
    }
    assert sent_json(ark, 1) == {
        "model": "doubao-seedream-5-0-pro-260628",
        "prompt": "split into layers",
        "size": "auto",
        "layer_decomposition": True,
    }
    refused = await call(
        "generate_image",
        {"prompt": "a", "model": "doubao-seedream-4-5-251128", "web_search": True},
    )
    assert (
        "web_search: doubao-seedream-4-5 cannot search the web; doubao-seedream-5-0-flash-260915 takes "
        "web_search."
    ) in error_text(refused)


@pytest.mark.parametrize(
    "model, arguments, expected",
    [
        (
            "dola-seedream-5-5-261028",
            {"background": "transparent", "size": "2K", "images": media("image", 10)},
            {"background": "transparent", "size": "2K", "image": media("image", 10)},
        ),
        ("seedream-5-5-261028", {"size": "1.5K"}, {"size": "1.5K"}),
        (
            "dola-seedream-5-5-261028",
            {"max_images": 3},
            "max_images: dola-seedream-5-5 makes single images, not sets; "
            f"{S45} takes max_images 3.",
        ),
        (
            "dola-seedream-5-5-261028",
            {"images": media("image", 11)},
            "images: 11 reference images is over dola-seedream-5-5's 10",
        ),
        (
            "dola-seedream-5-0-pro-260628",
            {"size": "4K"},
            "size 4K is not one dola-seedream-5-0-pro makes: 1K, 1.5K, 2K, "
            f"auto or WIDTHxHEIGHT; {S45} takes size 4K.",
        ),
        (
            "dola-seedream-5-0-pro-260628",
            {"size": "1.5K", "extra": {"layer_decomposition": True}},
            {"size": "1.5K", "layer_decomposition": True},
        ),
        (
            S45,
            {"background": "opaque"},
            f"background: doubao-seedream-4-5 takes no background setting; {S55} takes "
            "background opaque.",
        ),
    ],
)
async def test_seedream_5_5_and_dola_ids(
    ark: Any, limits_client: Any, model: str, arguments: dict[str, Any], expected: Any
) -> None:
    await at_the_limit(
        ark,
        limits_client,
        "generate_image",
        IMAGES,
        {"data": []},
        {"model": model, **arguments},
        {"model": model, "prompt": "a fox", **expected}
        if isinstance(expected, dict)
        else expected,
    )


@pytest.mark.parametrize(
    "arguments, refusal",
    [
        (
            {"first_frame": URL + "f", "ratio": "16:9"},
            "ratio: doubao-seedance-2-5 animates first and last frames at "
            "ratio adaptive only",
        ),
        (
            {
                "extra": {"omni_reference_task_type": "edit"},
                "reference_images": media("image", 1),
            },
            "extra.omni_reference_task_type edit: doubao-seedance-2-5 needs the video in reference_videos.",
        ),
        (
            {
                "extra": {"omni_reference_task_type": "extend_video"},
                "reference_videos": media("video", 1),
                "ratio": "9:16",
            },
            "ratio: doubao-seedance-2-5 edits and extends videos at ratio adaptive only",
        ),
        (
            {
                "extra": {"omni_reference_task_type": "edit"},
                "reference_videos": media("video", 1),
                "duration": 10,
            },
            "duration: an edit keeps its video's length on doubao-seedance-2-5: give -1 or leave duration out.",
        ),
    ],
)
async def test_seedance_2_5_rules(
    ark: Any, arguments: dict[str, Any], refusal: str
) -> None:
    assert refusal in error_text(
        await call("generate_video", {"prompt": "a", "model": DANCE_25, **arguments})
    )
    assert len(ark.calls) == 0


async def test_seedance_2_5_edits_and_mov_pass_while_mov_elsewhere_names_2_5(
    ark: Any,
) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    extra = {"omni_reference_task_type": "extend", "output_format": "mov"}
    sent = await call(
        "generate_video",
        {
            "prompt": "go on",
            "model": DANCE_25,
            "reference_videos": [URL + "v"],
            "ratio": "adaptive",
            "duration": 20,
            "extra": extra,
        },
    )
    refused = await call(
        "generate_video",
        {"prompt": "a", "model": DANCE_20, "extra": {"output_format": "mov"}},
    )
    assert not sent.is_error and sent_json(ark)["output_format"] == "mov"
    assert (
        f"output_format mov: doubao-seedance-2-0 makes mp4 only; {DANCE_25} takes output_format mov."
        in error_text(refused)
    )


async def test_a_set_goes_only_to_models_that_make_sets(fake_ark: FakeArk) -> None:
    """5.0 pro and 5.5 make no sets and 5.0 flash may not: with 4.5 unavailable, a set of three goes to 4.0."""
    fake_ark.unavailable = {S45: NOT_FOUND}
    [result] = await session_calls(
        fake_ark, ("generate_image", {"prompt": "a comic strip", "max_images": 3})
    )
    assert posted_models(fake_ark) == [S45, S40]
    assert len(result.structured_content["images"]) == 3
    assert result.structured_content["note"].startswith(
        f"{S45} is not available to this account (Ark says {NOT_FOUND}): used {S40}."
    )


@pytest.mark.parametrize(
    "arguments, chosen",
    [
        # 4.5 and 5.0 pro search no web
        ({"web_search": True}, FLASH),
        # Only 5.5 is known to take it
        ({"background": "transparent"}, S55),
        ({"size": "1.5K"}, PRO),
        # Only 5.0 lite, retired in China, makes 3K: tried all the same
        (
            {"size": "3K", "max_images": 2},
            LITE,
        ),
    ],
)
async def test_a_default_image_model_is_the_first_known_to_take_the_call(
    fake_ark: FakeArk, arguments: dict[str, Any], chosen: str
) -> None:
    [result] = await session_calls(
        fake_ark, ("generate_image", {"prompt": "a fox", **arguments})
    )
    assert not result.is_error, error_text(result)
    assert posted_models(fake_ark) == [chosen]


@pytest.mark.parametrize(
    "arguments, chosen",
    [
        ({"draft": True}, DANCE_25),
        ({"duration": 20}, DANCE_25),
        ({"resolution": "4k"}, DANCE_20),
        ({"reference_images": media("image", 12)}, DANCE_25),
        ({"reference_audios": media("audio", 1)}, DANCE_25),
        ({"web_search": True}, DANCE_20),
    ],
)
async def test_a_default_video_model_is_the_first_that_takes_the_call(
    fake_ark: FakeArk, arguments: dict[str, Any], chosen: str
) -> None:
    [result] = await session_calls(
        fake_ark, ("generate_video", {"prompt": "a fox", **arguments})
    )
    assert not result.is_error, error_text(result)
    assert posted_models(fake_ark) == [chosen]


async def test_on_byteplus_the_defaults_and_hints_are_byteplus_ids(ark: Any) -> None:
    byteplus = "https://ark.ap-southeast.bytepluses.com/api/v3"
    ark.post(f"{byteplus}/images/generations", json={"data": []})
    ark.post(f"{byteplus}/contents/generations/tasks", json={"id": "cgt-1"})
    config = Config(api_key=KEY, base_url=byteplus)
    await call("generate_image", {"prompt": "a fox"}, config)
    await call("generate_video", {"prompt": "a fox", "draft": True}, config)
    refused = await call(
        "generate_video",
        {"prompt": "a", "model": "dreamina-seedance-2-0-260128", "duration": 20},
        config,
    )
    # 4.5 first: BytePlus deactivated 5.0 lite in eu-west-1 (2026-09-10).
    assert [sent_json(ark, i)["model"] for i in range(2)] == [
        "seedream-4-5-251128",
        "dreamina-seedance-2-5-260628",
    ]
    assert "dreamina-seedance-2-5-260628 takes duration 20." in error_text(refused)


# --- Keys: whose key a call spends ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, key",
    [
        # Stdio: the server's own key
        (None, KEY),
        ({"authorization": "Bearer caller-key"}, "caller-key"),
        ({"authorization": "bearer  caller-key "}, "caller-key"),
        ({"x-api-key": "caller-key"}, "caller-key"),
        ({"authorization": "Basic dXNlcjpwdw=="}, KEY),
    ],
)
def test_a_callers_key_comes_from_its_headers_else_the_servers(
    headers: Any, key: str
) -> None:
    assert doubao_mcp.api_key_for(Config.from_env(), headers) == key


def test_without_any_key_the_error_says_where_to_put_one() -> None:
    with pytest.raises(
        doubao_mcp.DoubaoError, match="set ARK_API_KEY in this server's environment"
    ):
        doubao_mcp.api_key_for(Config(), None)
    with pytest.raises(
        doubao_mcp.DoubaoError,
        match="'Authorization: Bearer <Ark API key>' or 'X-API-Key",
    ):
        doubao_mcp.api_key_for(Config(serving_http=True), {})


@pytest.mark.parametrize(
    "key", ["Bearer ark-key-0123456789", "bearer   ark-key-0123456789"]
)
def test_a_pasted_bearer_prefix_is_not_sent_twice(ark: Any, key: str) -> None:
    config = Config.from_env({"ARK_API_KEY": key})
    assert config.api_key == "ark-key-0123456789"
    assert doubao_mcp.api_key_for(config, {"x-api-key": key}) == "ark-key-0123456789"


# --- Worker lanes: blocking work off the event loop, bounded ----------------------------------------------------------


async def test_abandoned_calls_keep_their_threads_until_the_work_really_ends() -> None:
    """Against a hung Ark, 40 callers that give up must not drive 40 requests upstream: an abandoned call keeps
    its thread until its request ends, and the next call waits for one of those threads to be free."""
    hold = Hold()
    before = set(threading.enumerate())
    with FakeArk() as fake:
        fake.faults[("POST", IMAGES_ROUTE)] = hold
        async with Client(make_server(small_lanes(fake, slot_wait=30))) as client:
            async with anyio.create_task_group() as callers:
                for _ in range(40):
                    callers.start_soon(
                        client.call_tool, "generate_image", {"prompt": "a fox"}
                    )
                await anyio.to_thread.run_sync(hold.arrived, 4)
                # Every caller gives up, while four requests hang at Ark
                callers.cancel_scope.cancel()
            # Task queries have threads of their own
            quick = await client.call_tool("list_video_tasks", {})
            threads = lane_threads(before)
            async with anyio.create_task_group() as later:
                later.start_soon(
                    partial(client.call_tool, "generate_image", {"prompt": "after"})
                )
                # The new call now waits for a thread
                await anyio.wait_all_tasks_blocked()
                assert hold.count == 4
                # The four abandoned requests end, and free their threads
                hold.release()
    # The four abandoned requests, then the one call made after they ended
    assert hold.count == 5
    assert not quick.is_error
    assert threads["doubao-slow"] <= 4 and threads.get("doubao-quick", 0) <= 2


async def test_past_its_threads_the_server_says_it_is_busy() -> None:
    hold = Hold()
    with FakeArk() as fake:
        fake.faults[("POST", IMAGES_ROUTE)] = hold
        async with Client(make_server(small_lanes(fake))) as client:
            async with anyio.create_task_group() as callers:
                for _ in range(4):
                    callers.start_soon(
                        client.call_tool, "generate_image", {"prompt": "a fox"}
                    )
                await anyio.to_thread.run_sync(hold.arrived, 4)
                busy = await client.call_tool("generate_image", {"prompt": "one more"})
                hold.release()
    assert (
        "The server is busy: 4 generations, uploads and downloads are already running. Try again in a minute."
        in error_text(busy)
    )
    assert hold.count == 4


async def test_quick_calls_stay_quick_while_one_caller_floods_slow_generations() -> (
    None
):
    """45 image generations hang at Ark (more than all 40 worker threads): a task listing still answers, and
    the 14 calls past the slow lane run once threads are free (however long a loaded machine takes to get there:
    being told "busy" is another test's subject)."""
    hold = Hold()
    flooded: list[Any] = []

    async def generate() -> None:
        flooded.append(await client.call_tool("generate_image", {"prompt": "a fox"}))

    with FakeArk() as fake:
        fake.faults[("POST", IMAGES_ROUTE)] = hold
        limits = doubao_mcp.Limits(slot_wait=3600)
        async with Client(
            make_server(Config(api_key=KEY, base_url=fake.url, limits=limits))
        ) as client:
            async with anyio.create_task_group() as flood:
                for _ in range(45):
                    flood.start_soon(generate)
                await anyio.to_thread.run_sync(
                    hold.arrived, doubao_mcp.Limits().slow_threads
                )
                with anyio.fail_after(10):
                    listing = await client.call_tool("list_video_tasks", {})
                held = hold.count
                hold.release()
    assert not listing.is_error and listing.structured_content == {
        "total": 0,
        "tasks": [],
    }
    # The rest ran only after the first ones ended
    assert held == doubao_mcp.Limits().slow_threads
    assert (
        hold.count == 45
        and [error_text(result) for result in flooded if result.is_error] == []
    )


# --- Local files: paths as people give them, folders and inputs opened once and confined ------------------------------


def test_over_http_local_paths_stay_inside_the_allowed_folder(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    with pytest.raises(
        doubao_mcp.DoubaoError,
        match="local files are off because this server is used over HTTP",
    ):
        doubao_mcp.local_path(
            Config(serving_http=True), str(allowed / "cat.png"), "first_frame"
        )
    config = Config(serving_http=True, allowed_dir=allowed.resolve())
    assert (
        doubao_mcp.local_path(config, "cats/cat.png", "first_frame")
        == allowed.resolve() / "cats" / "cat.png"
    )
    assert (
        doubao_mcp.local_path(config, str(allowed / "cat.png"), "first_frame")
        == allowed.resolve() / "cat.png"
    )
    for sneaky in (
        "../outside/cat.png",
        str(allowed / ".." / "outside"),
        "/etc/passwd",
    ):
        with pytest.raises(
            doubao_mcp.DoubaoError, match="is outside the allowed folder"
        ):
            doubao_mcp.local_path(config, sneaky, "save_dir")
    # A link inside the folder is never followed out of it
    write(outside / "cat.png", PNG)
    with pytest.raises(
        doubao_mcp.DoubaoError,
        match="passes through a symbolic link, and links are not followed",
    ):
        doubao_mcp.load_media(
            doubao_mcp.MediaRef("first_frame", "frame", "escape/cat.png"), config
        )
    # Stdio: the user's own disk
    assert doubao_mcp.local_path(Config(), "/etc/passwd", "first_frame") == Path(
        "/etc/passwd"
    )


@pytest.mark.parametrize(
    "working_dir, allowed, read_from",
    [
        # Claude Code starts servers in the project: its paths mean project paths
        (
            "project",
            None,
            "project",
        ),
        # Claude Desktop starts them in /: home, as before
        ("/", None, "home"),
        ("/", "allowed", "allowed"),
    ],
)
async def test_relative_paths_start_in_the_clients_folder_or_home(
    ark: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    working_dir: str,
    allowed: str | None,
    read_from: str,
) -> None:
    for folder in ("project", "home", "allowed"):
        (tmp_path / folder / "frames").mkdir(parents=True)
        # Which one was read shows
        write(tmp_path / folder / "frames" / "fox.png", PNG + folder.encode())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = Config(
        api_key=KEY,
        base_url=BASE,
        working_dir=tmp_path / working_dir if working_dir != "/" else Path("/"),
        allowed_dir=(tmp_path / allowed).resolve() if allowed else None,
    )
    ark.post(TASKS, json={"id": "cgt-1"})
    result = await call(
        "generate_video",
        {"prompt": "a", "first_frame": "frames/fox.png", "save_dir": "videos"},
        config,
    )
    assert not result.is_error, result.content[0].text
    assert sent_json(ark)["content"][1]["image_url"]["url"] == data_url(
        "image/png", PNG + read_from.encode()
    )
    # Save_dir, made where a relative path starts
    assert (tmp_path / read_from / "videos").is_dir()


@pytest.mark.parametrize("typed", ["'{path}'", '"{path}"', "{escaped}", " {path} "])
async def test_paths_as_copied_from_a_file_manager_or_a_shell_are_understood(
    ark: Any, tmp_path: Path, typed: str
) -> None:
    (tmp_path / "My Pictures (1)").mkdir()
    frame = write(tmp_path / "My Pictures (1)" / "fox.png", PNG)
    ark.post(TASKS, json={"id": "cgt-1"})
    value = typed.format(
        path=frame,
        escaped=frame.replace(" ", "\\ ").replace("(", "\\(").replace(")", "\\)"),
    )
    result = await call("generate_video", {"prompt": "a", "first_frame": value})
    assert not result.is_error, result.content[0].text
    assert sent_json(ark)["content"][1]["image_url"]["url"] == data_url(
        "image/png", PNG
    )


@pytest.mark.skipif(os.name == "nt", reason="a Windows path is at home on Windows")
@pytest.mark.parametrize(
    "path",
    ["C:\\Users\\me\\fox.png", "D:/Pictures/fox.png", "\\\\server\\share\\fox.png"],
)
async def test_a_windows_path_on_this_posix_server_is_named_as_such(
    ark: Any, path: str
) -> None:
    text = error_text(
        await call("generate_video", {"prompt": "a", "first_frame": path})
    )
    assert (
        f"first_frame: {path!r} is a Windows path, but this server runs on {platform.system()}"
        in text
    )
    assert len(ark.calls) == 0


@pytest.mark.parametrize(
    "arguments",
    [
        ("query_video_task", {"task_id": "cgt-1", "save_dir": "a\x00b"}),
        ("generate_video", {"prompt": "a fox", "first_frame": "/tmp/a\x00b.png"}),
        ("generate_image", {"prompt": "a fox", "images": ["a\x00.png"]}),
    ],
)
async def test_a_nul_in_a_path_is_bad_input_in_one_sentence(
    ark: Any, arguments: tuple[str, dict[str, Any]]
) -> None:
    """Issue 23, item 11."""
    text = error_text(await call(*arguments))
    assert "the path contains a NUL character" in text and "unexpectedly" not in text
    assert len(ark.calls) == 0


async def test_save_dir_and_doubao_output_dir_are_made_when_missing(
    ark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's own example config, DOUBAO_OUTPUT_DIR=Downloads/doubao, on a machine without that folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DOUBAO_OUTPUT_DIR", "Downloads/doubao")
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    finished_task_and_files(ark)
    # A call that saves nothing
    created = await call("generate_video", {"prompt": "a fox"})
    saved = (await call("query_video_task", {"task_id": TASK_ID})).structured_content
    deep = await call(
        "query_video_task",
        {"task_id": "cgt-1", "save_dir": str(tmp_path / "a" / "b" / "c")},
    )
    assert not created.is_error and not deep.is_error
    assert [Path(f["path"]).parent for f in saved["saved_files"]] == [
        tmp_path.resolve() / "Downloads" / "doubao"
    ] * 2
    assert (tmp_path / "a" / "b" / "c").is_dir()


async def test_an_error_the_doubao_output_dir_setting_causes_names_it(
    ark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOUBAO_OUTPUT_DIR", write(tmp_path / "a-file"))
    text = error_text(await call("generate_video", {"prompt": "a fox"}))
    assert (
        text.startswith("Error executing tool generate_video: DOUBAO_OUTPUT_DIR ")
        and "is a file" in text
    )


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: write(d / "file.txt"), "is a file (or inside one), not a folder."),
        (
            lambda d: str(Path(write(d / "file.txt")) / "below"),
            "is a file (or inside one), not a folder.",
        ),
        pytest.param(
            lambda d: "/sys",
            "save_dir /sys cannot hold new files",
            marks=pytest.mark.skipif(
                not Path("/sys/kernel").is_dir(), reason="needs Linux's read-only /sys"
            ),
        ),
        pytest.param(
            lambda d: "/proc",
            "save_dir /proc cannot hold new files (No such file or directory): choose "
            "another folder.",
            marks=pytest.mark.skipif(
                not Path("/proc/self").is_dir(), reason="needs /proc"
            ),
        ),
    ],
)
async def test_bad_save_dirs_are_refused_before_any_request(
    ark: Any, tmp_path: Path, make: Any, expected: str
) -> None:
    for tool, arguments in [
        ("generate_image", {"prompt": "a"}),
        ("generate_video", {"prompt": "a"}),
        ("query_video_task", {"task_id": "cgt-1"}),
    ]:
        assert expected in error_text(
            await call(tool, {**arguments, "save_dir": make(tmp_path)})
        )
    assert len(ark.calls) == 0


async def test_relative_save_dirs_and_the_default_folder_live_under_home(
    ark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DOUBAO_OUTPUT_DIR", "Videos")
    (tmp_path / "Videos").mkdir()
    finished_task_and_files(ark)
    task = (await call("query_video_task", {"task_id": TASK_ID})).structured_content
    assert [Path(f["path"]).parent for f in task["saved_files"]] == [
        tmp_path.resolve() / "Videos"
    ] * 2


async def test_local_files_in_every_form_are_sent_as_data_urls(
    ark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    # The folder the client started the server in
    monkeypatch.chdir(tmp_path)
    # The content decides the type, not the name
    write(tmp_path / "photo.jpg", PNG)
    write(tmp_path / "b.jpeg", JPEG)
    write(tmp_path / "with space.png", PNG)
    ark.post(IMAGES, json={"data": []})
    # Relative: in the client's folder
    await call(
        "generate_image",
        {
            "prompt": "a",
            "images": [
                str(tmp_path / "photo.jpg"),
                "~/b.jpeg",
                (tmp_path / "with space.png").as_uri(),
                "https://img.test/x.png",
                "b.jpeg",
            ],
        },
    )
    assert sent_json(ark)["image"] == [
        data_url("image/png", PNG),
        data_url("image/jpeg", JPEG),
        data_url("image/png", PNG),
        "https://img.test/x.png",
        data_url("image/jpeg", JPEG),
    ]


async def test_video_frames_accept_files_up_to_30_mb(ark: Any, tmp_path: Path) -> None:
    frame = write(tmp_path / "frame.png", PNG, size=12 * 2**20)
    ark.post(TASKS, json={"id": "cgt-1"})
    await call("generate_video", {"prompt": "a", "first_frame": frame})
    assert sent_json(ark)["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,iVBORw0KGgo"
    )
    assert "over Ark's 10.0 MB limit" in error_text(
        await call("generate_image", {"prompt": "a", "images": [frame]})
    )


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: str(d / "missing.png"), "missing.png does not exist."),
        (
            lambda d: str(d),
            "is a folder, not a JPEG, PNG, WebP, BMP, TIFF or GIF image.",
        ),
        (
            lambda d: write(d / "notes.png", b"hello"),
            "notes.png is not a JPEG, PNG, WebP, BMP, TIFF or GIF image.",
        ),
        (
            lambda d: write(d / "big.png", PNG, size=31 * 2**20),
            "big.png is 31.0 MB, over Ark's 30.0 MB limit",
        ),
        (lambda d: "file:///etc/passwd", "/etc/passwd is not a JPEG, PNG"),
        (lambda d: "file://fileserver/share/cat.png", "points at another machine"),
        (lambda d: "/dev/null", "/dev/null is not a regular file."),
        (
            lambda d: "ftp://host/cat.png",
            "is not an https URL, a data URL, an asset:// id or a file path.",
        ),
        (lambda d: "asset://has spaces", "is not an asset id such as asset://"),
        (
            lambda d: "data:image/png;base64," + "A" * (41 * 2**20),
            "the data URL's file is over Ark's 30.0 MB limit.",
        ),
        (
            lambda d: "data:text/plain;base64,aGk=",
            "a data URL must look like data:image/png;base64,",
        ),
    ],
)
async def test_bad_image_arguments_are_refused_before_any_request(
    ark: Any, tmp_path: Path, make: Any, expected: str
) -> None:
    for argument in ("first_frame", "reference_images"):
        value = make(tmp_path)
        text = error_text(
            await call(
                "generate_video",
                {
                    "prompt": "a",
                    argument: [value] if argument == "reference_images" else value,
                },
            )
        )
        assert f"{argument}: " in text and expected in text
    assert len(ark.calls) == 0


async def test_an_unreadable_file_is_reported(
    ark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = write(tmp_path / "locked.png", PNG)

    def denied(*args: Any) -> int:
        # Tests may run as root, whom chmod does not stop
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(doubao_mcp, "open_beneath", denied)
    text = error_text(
        await call("generate_video", {"prompt": "a", "first_frame": frame})
    )
    assert f"first_frame: {frame} cannot be read: Permission denied." in text


async def test_bad_files_and_folders_are_refused_before_any_request(
    tmp_path: Path,
) -> None:
    inputs, empty = tmp_path / "inputs", tmp_path / "empty"
    inputs.mkdir()
    empty.mkdir()
    with FakeArk() as fake:
        config = Config(api_key=KEY, base_url=fake.url)
        for value, save_dir, expected in bad_files(inputs):
            for tool, argument in [
                ("generate_image", "images"),
                ("generate_video", "first_frame"),
                ("generate_video", "reference_images"),
            ]:
                arguments = {
                    "prompt": "a",
                    argument: [value] if argument != "first_frame" else value,
                    **({"save_dir": save_dir} if save_dir else {}),
                }
                text = await run_case(fake, config, tool, arguments, empty)
                assert expected in text and (argument in text or "save_dir" in text), (
                    text
                )
        # Only the follow-ups
        assert {r["path"] for r in fake.requests} == {TASKS_ROUTE}


async def test_a_save_dir_swapped_for_a_link_mid_call_still_gets_the_file(
    ark: Any, tmp_path: Path
) -> None:
    """The folder is held open from the check on: a link swapped in while Ark generates leads nowhere."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "out").mkdir(parents=True)
    outside.mkdir()

    def generate(request: Any) -> tuple[int, dict[str, str], str]:
        (allowed / "out").rename(allowed / "out-checked")
        (allowed / "out").symlink_to(outside)
        return 200, {}, json.dumps({"data": [{"url": "https://cdn.test/a"}]})

    ark.add_callback("POST", IMAGES, callback=generate)
    ark.get("https://cdn.test/a", body=PNG, content_type="image/png")
    config = Config(
        api_key=KEY, base_url=BASE, allowed_dir=allowed.resolve(), serving_http=True
    )
    result = await call("generate_image", {"prompt": "a", "save_dir": "out"}, config)
    assert list(outside.iterdir()) == []
    assert [p.suffix for p in (allowed / "out-checked").iterdir()] == [".png"], (
        result.structured_content
    )


@pytest.mark.parametrize(
    "confined, target, expected",
    [
        (
            True,
            "outside/secret.png",
            "passes through a symbolic link, and links are not followed",
        ),
        (False, "/dev/zero", "is not a regular file"),
    ],
)
async def test_an_input_swapped_after_its_check_is_never_read(
    ark: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    confined: bool,
    target: str,
    expected: str,
) -> None:
    """A file swapped for a link to an outside file, or to a device, between the path check and the read."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "outside").mkdir()
    write(tmp_path / "outside" / "secret.png", PNG + b"secret")
    frame = write(allowed / "frame.png", PNG)
    checked = doubao_mcp.local_path

    def check_then_swap(config: Config, value: str, argument: str) -> Path:
        path = checked(config, value, argument)
        path.unlink()
        path.symlink_to(tmp_path / target if not target.startswith("/") else target)
        return path

    monkeypatch.setattr(doubao_mcp, "local_path", check_then_swap)
    config = Config(
        api_key=KEY, base_url=BASE, allowed_dir=allowed.resolve() if confined else None
    )
    text = error_text(
        await call("generate_video", {"prompt": "a", "first_frame": frame}, config)
    )
    assert expected in text and len(ark.calls) == 0


async def test_an_input_that_grows_after_its_size_check_is_still_refused(
    ark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file says 1 KB when checked and is 40 MB when read: at most one byte past the limit is read."""
    frame = write(tmp_path / "frame.png", PNG, size=40 * 2**20)
    inode = os.stat(frame).st_ino

    def lying(stat_of: Any) -> Any:
        def stat(*args: Any, **kwargs: Any) -> os.stat_result:
            found = stat_of(*args, **kwargs)
            return (
                os.stat_result((*found[:6], 1000, *found[7:]))
                if found.st_ino == inode
                else found
            )

        return stat

    monkeypatch.setattr(os, "stat", lying(os.stat))
    monkeypatch.setattr(os, "fstat", lying(os.fstat))
    text = error_text(
        await call("generate_video", {"prompt": "a", "first_frame": frame})
    )
    assert (
        "frame.png is over Ark's 30.0 MB limit for this input." in text
        and len(ark.calls) == 0
    )


# --- Requests: the inputs as Ark takes them, and the body it is sent --------------------------------------------------


async def test_extra_fields_go_to_ark_as_given(ark: Any) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    extra = {
        "priority": 5,
        "safety_identifier": "user-42",
        "execution_expires_after": 3600,
        "output_format": "mov",
        "omni_reference_task_type": "extend",
    }
    await call(
        "generate_video",
        {
            "prompt": "continue the scene",
            "model": "doubao-seedance-2-5-260628",
            "reference_videos": [URL + "clip.mp4"],
            "extra": extra,
        },
    )
    assert sent_json(ark) == {
        "model": "doubao-seedance-2-5-260628",
        "content": [
            {"type": "text", "text": "continue the scene"},
            *items("video", "reference_video", [URL + "clip.mp4"]),
        ],
        **extra,
    }


@pytest.mark.parametrize(
    "tool, extra, refusal",
    [
        (
            "generate_video",
            {"duration": 5},
            "extra: 'duration' is built by this tool: use the duration argument.",
        ),
        (
            "generate_video",
            {"model": "x"},
            "extra: 'model' is built by this tool: use the model argument.",
        ),
        (
            "generate_video",
            {"content": []},
            "'content' is built by this tool: use prompt and the image, video and audio "
            "arguments.",
        ),
        (
            "generate_video",
            {"tools": []},
            "'tools' is built by this tool: use the web_search argument.",
        ),
        (
            "generate_video",
            {"wait_seconds": 5},
            "'wait_seconds' is built by this tool: use the wait_seconds argument.",
        ),
        (
            "generate_image",
            {"image": "x", "size": "2K"},
            "extra: 'image' is built by this tool: use the images argument; "
            "'size' is built by this tool: use the size argument.",
        ),
        ("generate_image", {"sequential_image_generation": "auto"}, "use max_images"),
        (
            "generate_image",
            {"stream": True},
            "'stream' is not supported: this server reads Ark's whole answer",
        ),
    ],
)
async def test_extra_never_overrides_what_the_tool_builds(
    ark: Any, tool: str, extra: dict[str, Any], refusal: str
) -> None:
    assert refusal in error_text(await call(tool, {"prompt": "a", "extra": extra}))
    assert len(ark.calls) == 0


async def test_asset_ids_pass_as_is_everywhere(ark: Any) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.post(IMAGES, json={"data": []})
    await call(
        "generate_video",
        {
            "prompt": "@Image1 sings @Audio1 like @Video1",
            "reference_images": ["asset://a-1"],
            "reference_videos": ["asset://v-1"],
            "reference_audios": ["asset://s-1"],
        },
    )
    await call(
        "generate_image", {"prompt": "a", "images": ["asset://a-1", "asset://a-2"]}
    )
    assert [
        item.get("image_url", item.get("video_url", item.get("audio_url", {}))).get(
            "url"
        )
        for item in sent_json(ark, 0)["content"][1:]
    ] == ["asset://a-1", "asset://v-1", "asset://s-1"]
    assert sent_json(ark, 1)["image"] == ["asset://a-1", "asset://a-2"]


async def test_reference_audio_files_are_sent_as_data_urls_and_videos_only_by_url(
    ark: Any, tmp_path: Path
) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    wav, mp3 = write(tmp_path / "voice.wav", WAV), write(tmp_path / "song.mp3", MP3)
    await call(
        "generate_video",
        {
            "prompt": "a",
            "reference_images": [URL + "i"],
            "reference_audios": [wav, mp3],
        },
    )
    assert [item["audio_url"]["url"] for item in sent_json(ark)["content"][2:]] == [
        data_url("audio/wav", WAV),
        data_url("audio/mpeg", MP3),
    ]
    clip = write(tmp_path / "clip.mp4", VIDEO_BYTES)
    for value in (clip, "data:video/mp4;base64,AAAA"):
        text = error_text(
            await call("generate_video", {"prompt": "a", "reference_videos": [value]})
        )
        assert (
            "reference_videos: Ark takes reference videos only as https URLs or asset:// ids"
            in text
        )
    text = error_text(
        await call(
            "generate_video",
            {
                "prompt": "a",
                "reference_images": [URL + "i"],
                "reference_audios": [write(tmp_path / "a.wav", PNG)],
            },
        )
    )
    assert "reference_audios: " in text and "a.wav is not a WAV or MP3 file." in text
    assert len(ark.calls) == 1


async def test_inline_files_over_arks_64_mb_request_limit_are_refused_before_sending(
    ark: Any, tmp_path: Path
) -> None:
    # Each under the 30 MB limit
    frames = [write(tmp_path / f"{i}.png", PNG, size=25 * 2**20) for i in range(3)]
    text = error_text(
        await call("generate_video", {"prompt": "a", "reference_images": frames})
    )
    assert (
        "The inline files add up to over 64.0 MB of base64" in text
        and "asset:// ids" in text
    )
    assert len(ark.calls) == 0


# --- Uploads: local media into the person's own object storage, as links Ark can fetch --------------------------------


def upload_server(
    fake_ark: FakeArk, tmp_path: Path | None = None, **changes: Any
) -> Any:
    config = replace(
        Config.from_env(), base_url=fake_ark.url, previews=False, **changes
    )
    record = Record(tmp_path, fake_ark.url) if tmp_path else None
    return make_server(config, record=record)


def clip_upload(
    storage: Any, path: Path, clip: bytes
) -> tuple[doubao_mcp.Uploader, doubao_mcp.MediaRef]:
    """A clip written to `path`, the uploader to the test bucket, and the reference_videos argument that names it."""
    path.write_bytes(clip)
    uploader = doubao_mcp.Uploader(
        doubao_mcp.UploadTarget(UPLOAD_BUCKET, "clips/"), storage.env
    )
    ref = doubao_mcp.MediaRef(
        argument="reference_videos", media="video", given=str(path)
    )
    return uploader, ref


async def send_clip(fake_ark: FakeArk, clip: Path, **arguments: Any) -> Any:
    """generate_video with a local reference video, against the fake Ark (which fetches the clip's link)."""
    call_arguments = {
        "prompt": "@Video1",
        "model": DANCE_20,
        "reference_videos": [str(clip)],
    }
    return await call(
        "generate_video",
        {**call_arguments, **arguments},
        replace(Config.from_env(), base_url=fake_ark.url),
    )


async def test_a_local_reference_video_is_uploaded_once_and_ark_fetches_each_fresh_link(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4(6.0))
    call = {
        "prompt": "@Video1, in snow",
        "model": DANCE_20,
        "reference_videos": [str(clip)],
    }
    async with Client(upload_server(fake_ark)) as client:
        first = await client.call_tool("generate_video", call)
        again = await client.call_tool(
            "generate_video", {**call, "service_tier": "flex"}
        )
    digest = hashlib.sha256(clip.read_bytes()).hexdigest()
    key = f"clips/{digest}.mp4"
    (uploaded,) = first.structured_content["uploads"]
    assert (
        uploaded["key"] == key
        and uploaded["bytes"] == len(clip.read_bytes())
        and uploaded["sent"]
    )
    (reused,) = again.structured_content["uploads"]
    assert reused["key"] == key and not reused["sent"]
    # A flex task may wait 48 h before Ark fetches the link: it lives that long.
    lifetime = doubao_mcp.timestamp_of(reused["expires_at"]) - doubao_mcp.timestamp_of(
        uploaded["expires_at"]
    )
    assert lifetime == pytest.approx(42 * 3600, abs=120)
    # Ark fetched the clip's own bytes, twice, from one object; the link never reaches the result.
    assert fake_ark.fetched == [clip.read_bytes()] * 2
    assert [
        o["Key"] for o in storage.list_objects_v2(Bucket=UPLOAD_BUCKET)["Contents"]
    ] == [key]
    assert (
        storage.head_object(Bucket=UPLOAD_BUCKET, Key=key)["ContentType"] == "video/mp4"
    )
    for result in (first, again):
        assert "X-Amz-Signature" not in result.content[0].text
        assert STORAGE_SECRET not in result.content[0].text


async def test_takes_of_a_local_clip_upload_it_once_and_say_so(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4(6.0))
    result = await send_clip(fake_ark, clip, takes=2)
    (uploaded,) = result.structured_content["uploads"]
    assert uploaded["sent"] and len(result.structured_content["takes"]) == 2
    assert fake_ark.fetched == [clip.read_bytes()] * 2


async def test_a_clip_past_the_multipart_threshold_goes_up_in_parts(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "long.mov"
    clip.write_bytes(mp4(10.0, size=9 * 2**20, brand=b"qt  "))
    result = await send_clip(fake_ark, clip)
    (uploaded,) = result.structured_content["uploads"]
    assert uploaded["key"].endswith(".mov")
    head = storage.head_object(Bucket=UPLOAD_BUCKET, Key=uploaded["key"])
    # An ETag with a part count: it went up in parts.
    assert head["ContentLength"] == 9 * 2**20 and "-" in head["ETag"]
    assert head["ContentType"] == "video/quicktime"
    assert fake_ark.fetched == [clip.read_bytes()]


async def test_an_object_removed_since_is_uploaded_again(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4(5.0))
    call = {"prompt": "@Video1", "model": DANCE_20, "reference_videos": [str(clip)]}
    async with Client(upload_server(fake_ark)) as client:
        first = await client.call_tool("generate_video", call)
        storage.delete_object(
            Bucket=UPLOAD_BUCKET, Key=first.structured_content["uploads"][0]["key"]
        )
        again = await client.call_tool("generate_video", call)
    assert again.structured_content["uploads"][0]["sent"]
    assert fake_ark.fetched == [clip.read_bytes()] * 2


@pytest.mark.parametrize(
    ("write", "error"),
    [
        (lambda p: None, "clip.mp4 does not exist."),
        (lambda p: p.mkdir(), "clip.mp4 is a folder, not an MP4 or MOV video."),
        (lambda p: p.write_bytes(PNG), "is not an MP4 or MOV video"),
        (
            lambda p: p.write_bytes(mp4(1.0)),
            "is 1.0 s long; Ark takes reference videos of at least 2 s",
        ),
        (
            lambda p: p.write_bytes(mp4(16.0)),
            "the reference videos add up to 16.0 s; this model takes at most 15.2 s",
        ),
    ],
)
async def test_a_local_video_is_checked_before_anything_is_uploaded_or_sent(
    fake_ark: FakeArk, storage: Any, tmp_path: Path, write: Any, error: str
) -> None:
    clip = tmp_path / "clip.mp4"
    write(clip)
    result = await send_clip(fake_ark, clip)
    assert error in error_text(result)
    assert "Contents" not in storage.list_objects_v2(Bucket=UPLOAD_BUCKET)
    assert not [r for r in fake_ark.requests if r["method"] == "POST"]


async def test_an_edit_needs_a_reference_video_of_four_seconds(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "short.mp4"
    clip.write_bytes(mp4(3.0))
    result = await send_clip(
        fake_ark,
        clip,
        prompt="@Video1 at night",
        model=DANCE_25,
        ratio="adaptive",
        extra={"omni_reference_task_type": "edit"},
    )
    assert (
        "short.mp4 is 3.0 s long; Ark takes an edit's video of at least 4 s."
        in error_text(result)
    )


async def test_images_that_would_pass_the_request_cap_are_uploaded_and_the_rest_go_inline(
    ark: Any, storage: Any, tmp_path: Path
) -> None:
    """Seven 10 MB references are 93 MB of base64, past Ark's 64 MiB: five fit, and the two that would pass it are
    uploaded."""
    ark.post(IMAGES, json={"data": [{"url": "https://cdn.test/1.png"}]})
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"ref-{i}.png")
        paths[-1].write_bytes(PNG + bytes([i]) * (10 * 10**6 - len(PNG)))
    result = await call(
        "generate_image",
        {"prompt": "a collage", "model": S45, "images": [str(p) for p in paths]},
    )
    assert not result.is_error, result.content
    sent = sent_json(ark)["image"]
    inline = [url for url in sent if url.startswith("data:image/png;base64,")]
    linked = [url for url in sent if url.startswith(storage.env["AWS_ENDPOINT_URL_S3"])]
    assert len(inline) == 5 and len(linked) == 2 and sum(map(len, inline)) <= 64 * 2**20
    keys = sorted(
        o["Key"] for o in storage.list_objects_v2(Bucket=UPLOAD_BUCKET)["Contents"]
    )
    assert keys == sorted(
        f"clips/{hashlib.sha256(p.read_bytes()).hexdigest()}.png" for p in paths[5:]
    )


async def test_without_an_upload_target_a_local_video_is_refused_naming_the_settings(
    ark: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4(5.0))
    result = await call(
        "generate_video",
        {"prompt": "@Video1", "model": DANCE_20, "reference_videos": [str(clip)]},
    )
    text = error_text(result)
    assert (
        "set DOUBAO_UPLOADS=s3://bucket/prefix and its credentials (see docs/uploads.md)"
        in text
    )
    assert len(ark.calls) == 0


async def test_a_missing_bucket_or_refused_credentials_fail_the_call_before_ark_and_name_the_cause(
    fake_ark: FakeArk, storage: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4(5.0))
    monkeypatch.setenv("DOUBAO_UPLOADS", "s3://no-such-bucket/clips")
    result = await send_clip(fake_ark, clip)
    text = error_text(result)
    assert (
        "uploading clip.mp4 to s3://no-such-bucket/clips/ failed: the bucket does not exist"
        in text
    )
    assert "Nothing was sent to Ark" in text and STORAGE_SECRET not in text
    assert not [r for r in fake_ark.requests if r["method"] == "POST"]


def test_a_storage_that_does_not_answer_fails_within_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that accepts and never answers: boto3's read timeout (shortened here), retried, then one sentence."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv(
            "AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{silent.getsockname()[1]}"
        )
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", STORAGE_SECRET)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setattr(doubao_mcp, "UPLOAD_READ_TIMEOUT_SECONDS", 0.2)
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(mp4(5.0))
        uploading = doubao_mcp.Uploading(
            doubao_mcp.Uploader(doubao_mcp.UploadTarget("b", "")), 3600, None
        )
        ref = doubao_mcp.MediaRef(
            argument="reference_videos", media="video", given=str(clip)
        )
        with pytest.raises(
            doubao_mcp.DoubaoError,
            match="could not be reached or did not answer in time",
        ):
            uploading.put(ref, clip, Config())


def test_a_cancelled_call_ends_its_upload_and_leaves_no_unfinished_multipart_upload(
    storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "long.mp4"
    uploader, ref = clip_upload(storage, clip, mp4(10.0, size=20 * 2**20))
    uploading = doubao_mcp.Uploading(uploader, 3600, None)
    uploading.cancelled.set()
    with pytest.raises(doubao_mcp.UploadCancelled):
        uploading.put(ref, clip, Config())
    assert "Contents" not in storage.list_objects_v2(Bucket=UPLOAD_BUCKET)
    assert storage.list_multipart_uploads(Bucket=UPLOAD_BUCKET).get("Uploads", []) == []


async def test_the_record_keeps_uploads_across_a_restart_and_prune_removes_only_its_own(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4(5.0))
    storage.put_object(Bucket=UPLOAD_BUCKET, Key="clips/someone-elses.mp4", Body=b"x")
    state = tmp_path / "state"
    async with Client(upload_server(fake_ark, state)) as client:
        made = await client.call_tool(
            "generate_video",
            {"prompt": "@Video1", "model": DANCE_20, "reference_videos": [str(clip)]},
        )
    key = made.structured_content["uploads"][0]["key"]
    config = replace(Config.from_env(), base_url=fake_ark.url)
    restarted = Record(state, fake_ark.url)
    assert restarted.uploads_before(UPLOAD_BUCKET, time.time() + 1) == [key]
    assert doubao_mcp.prune_uploads(config, restarted, days=0) == (
        0,
        "removed 1 of 1 uploads not used for 0 days from s3://doubao-test/clips/.",
    )
    left = [o["Key"] for o in storage.list_objects_v2(Bucket=UPLOAD_BUCKET)["Contents"]]
    assert left == ["clips/someone-elses.mp4"]
    assert restarted.uploads_before(UPLOAD_BUCKET, time.time() + 1) == []


@pytest.mark.parametrize(
    ("code", "status", "told"),
    [
        (
            "InvalidAccessKeyId",
            403,
            "the storage does not know the access key (AWS_ACCESS_KEY_ID)",
        ),
        (
            "SignatureDoesNotMatch",
            403,
            "the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)",
        ),
        ("ExpiredToken", 400, "the credentials have expired: renew them"),
        ("AccessDenied", 403, "the storage refused the credentials"),
    ],
)
def test_a_bad_or_expired_credential_is_told_by_name_and_never_echoed(
    storage: Any, tmp_path: Path, code: str, status: int, told: str
) -> None:
    from botocore.stub import Stubber

    clip = tmp_path / "clip.mp4"
    uploader, ref = clip_upload(storage, clip, mp4(5.0))
    with Stubber(uploader.client()) as stub:
        # The storage's own message echoes the secret, as a hostile proxy might: it is never passed on.
        stub.add_client_error(
            "head_object",
            service_error_code=code,
            service_message=STORAGE_SECRET,
            http_status_code=status,
        )
        uploading = doubao_mcp.Uploading(uploader, 3600, None)
        with pytest.raises(doubao_mcp.DoubaoError) as failed:
            uploading.put(ref, clip, Config())
    assert told in str(failed.value) and STORAGE_SECRET not in str(failed.value)


def test_a_full_storage_fails_the_upload_with_its_code_and_nothing_is_left(
    storage: Any, tmp_path: Path
) -> None:
    from botocore.stub import Stubber

    clip = tmp_path / "clip.mp4"
    uploader, ref = clip_upload(storage, clip, mp4(5.0))
    with Stubber(uploader.client()) as stub:
        stub.add_client_error(
            "head_object", service_error_code="404", http_status_code=404
        )
        stub.add_client_error(
            "put_object",
            service_error_code="QuotaExceeded",
            service_message="full",
            http_status_code=507,
        )
        with pytest.raises(doubao_mcp.DoubaoError) as failed:
            doubao_mcp.Uploading(uploader, 3600, None).put(ref, clip, Config())
    assert (
        "uploading clip.mp4 to s3://doubao-test/clips/ failed: the storage answered QuotaExceeded."
        in str(failed.value)
    )


def test_an_upload_past_its_deadline_is_stopped_and_told(
    storage: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doubao_mcp, "UPLOAD_DEADLINE_SECONDS", 0.0)
    clip = tmp_path / "clip.mp4"
    uploader, ref = clip_upload(storage, clip, mp4(5.0, size=10 * 2**20))
    uploading = doubao_mcp.Uploading(uploader, 3600, None)
    with pytest.raises(
        doubao_mcp.DoubaoError,
        match=re.escape("took over 0 minutes and was stopped. Nothing was sent"),
    ):
        uploading.put(ref, clip, Config())
    assert storage.list_multipart_uploads(Bucket=UPLOAD_BUCKET).get("Uploads", []) == []


async def test_an_uploads_progress_is_told_in_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doubao_mcp, "HEARTBEAT_EVERY_SECONDS", 0.001)
    told: list[str] = []
    heard = anyio.Event()
    uploading = doubao_mcp.Uploading(
        doubao_mcp.Uploader(doubao_mcp.UploadTarget("b", "")), 3600, None
    )
    uploading.sent, uploading.size = 3 * 2**20, 8 * 2**20

    async def report(progress: float, total: float | None, message: str) -> None:
        told.append(message)
        heard.set()

    async def upload() -> str:
        await heard.wait()
        return "done"

    assert (
        await doubao_mcp.with_heartbeat(report, uploading.progress, upload()) == "done"
    )
    assert told[0].startswith("uploading, 3.0 MB of 8.0 MB sent, ")


async def test_over_http_only_files_in_the_allowed_folder_are_uploaded(
    storage: Any, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(mp4(5.0))
    config = replace(
        Config.from_env(), serving_http=True, allowed_dir=allowed.resolve()
    )
    studio = make_studio(config)
    given = {**doubao_mcp.media_given(None, None, None, [str(secret)], None)}
    uploading = doubao_mcp.Uploading(studio.uploader, 3600, None)
    with pytest.raises(doubao_mcp.DoubaoError, match="is outside the allowed folder"):
        await doubao_mcp.load_content(studio, given, uploading)
    assert "Contents" not in storage.list_objects_v2(Bucket=UPLOAD_BUCKET)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("bucket-only", "DOUBAO_UPLOADS must be an S3 bucket and an optional prefix"),
        ("s3://UPPER/x", "DOUBAO_UPLOADS must be an S3 bucket and an optional prefix"),
    ],
)
def test_a_bad_upload_target_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, error: str
) -> None:
    monkeypatch.setenv("DOUBAO_UPLOADS", value)
    with pytest.raises(doubao_mcp.ConfigError, match=re.escape(error)):
        Config.from_env()


def test_a_clip_of_a_million_tiny_boxes_is_not_walked_to_its_end(
    tmp_path: Path,
) -> None:
    """A hostile MP4: its movie header hides behind 2**20 empty boxes. Only MOVIE_BOXES_READ are read: no length,
    found at once."""
    real = mp4(5.0)
    clip = tmp_path / "boxes.mp4"
    clip.write_bytes(real[:16] + b"\x00\x00\x00\x08free" * 2**20 + real[16:])
    with open(clip, "rb") as file:
        assert doubao_mcp.movie_seconds(file) is None


async def test_an_answer_that_echoes_the_storage_secret_never_passes_it_on(
    ark: Any, storage: Any
) -> None:
    """The storage credentials are redacted like the Ark key, from Ark's answers too (a proxy that echoes)."""
    ark.post(
        TASKS,
        status=400,
        json={
            "error": {"code": "InvalidParameter", "message": f"bad {STORAGE_SECRET}"}
        },
    )
    async with Client(doubao_mcp.build_server(Config.from_env())) as client:
        result = await client.call_tool(
            "generate_video", {"prompt": "a fox", "model": DANCE_20}
        )
    assert "bad " in error_text(result) and STORAGE_SECRET not in error_text(result)


def test_tos_gets_virtual_hosted_links_signed_v4_and_a_local_endpoint_path_style(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", STORAGE_SECRET)
    target = doubao_mcp.UploadTarget("my-bucket", "p/")
    tos = doubao_mcp.Uploader(
        target,
        {
            "AWS_ENDPOINT_URL_S3": "https://tos-s3-cn-beijing.volces.com",
            "AWS_REGION": "cn-beijing",
        },
    ).client()
    local = doubao_mcp.Uploader(
        target, {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"}
    ).client()
    tos_link = tos.generate_presigned_url(
        "get_object", Params={"Bucket": "my-bucket", "Key": "p/a.mp4"}
    )
    local_link = local.generate_presigned_url(
        "get_object", Params={"Bucket": "my-bucket", "Key": "p/a.mp4"}
    )
    assert tos_link.startswith(
        "https://my-bucket.tos-s3-cn-beijing.volces.com/p/a.mp4?"
    )
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in tos_link and "cn-beijing" in tos_link
    assert local_link.startswith("http://127.0.0.1:9000/my-bucket/p/a.mp4?")


# --- Cost: what a call will cost, what it cost, and whether the person agreed -----------------------------------------

BYTEPLUS = "https://ark.ap-southeast.bytepluses.com/api/v3"


def tokens_for(width: int, height: int, seconds: float) -> int:
    """Ark's billing formula (ARK_API.md, Billing): width x height x (24 x seconds + 1) / 1024."""
    return int(width * height * (24 * seconds + 1) // 1024)


@pytest.mark.parametrize(
    ("base", "arguments", "tokens", "rate", "words"),
    [
        # The observed task: 720p 16:9 for 5 s is 108,900 tokens, at 46 CNY per million.
        (
            BASE,
            {"model": DANCE_20},
            108_900,
            46,
            "720p 16:9 5 s: 108,900 tokens",
        ),
        (
            BASE,
            {"model": DANCE_20, "resolution": "1080p", "ratio": "9:16", "duration": 10},
            tokens_for(1080, 1920, 10),
            51,
            "1080p 9:16 10 s",
        ),
        (
            BASE,
            {
                "model": "doubao-seedance-2-0-fast-260128",
                "ratio": "21:9",
                "duration": 4,
            },
            tokens_for(1470, 630, 4),
            37,
            "720p 21:9 4 s",
        ),
        # A reference video: the with-video rate, and up to 15.2 s of it billed as input (an upper bound).
        (
            BASE,
            {
                "model": DANCE_20,
                "prompt": "@Video1 in snow",
                "reference_videos": ["https://v.test/a.mp4"],
            },
            108_900 + int(1280 * 720 * 24 * 15.2 // 1024),
            28,
            "up to 15.2 s of reference video",
        ),
        # duration -1: the model's longest, an upper bound.
        (
            BASE,
            {"model": DANCE_20, "duration": -1},
            tokens_for(1280, 720, 15),
            46,
            "up to 15 s",
        ),
        (
            BASE,
            {"model": "doubao-seedance-1-0-pro-250528", "frames": 57},
            1280 * 720 * 57 // 1024,
            15,
            "57 frames",
        ),
        # BytePlus, in USD: flex is half; a draft is billed as 480p whatever it asks.
        (
            BYTEPLUS,
            {
                "model": "dreamina-seedance-2-5-260628",
                "resolution": "1080p",
                "service_tier": "flex",
            },
            tokens_for(1920, 1080, 5),
            16.731 / 2,
            "(flex)",
        ),
        (
            BYTEPLUS,
            {
                "model": "dreamina-seedance-2-5-260628",
                "draft": True,
                "resolution": "480p",
            },
            tokens_for(864, 480, 5),
            15.301,
            "a draft is billed as 480p",
        ),
        (
            BYTEPLUS,
            {"model": "seedance-1-5-pro-251215", "generate_audio": False},
            108_900,
            1.2,
            "at 1.2 USD/M",
        ),
        (
            BYTEPLUS,
            {"model": "dreamina-seedance-2-0-mini-260615", "ratio": "1:1"},
            tokens_for(960, 960, 5),
            5.005,
            "720p 1:1 5 s",
        ),
    ],
)
async def test_a_video_is_quoted_by_arks_billing_formula_before_it_is_sent(
    ark: Any,
    monkeypatch: pytest.MonkeyPatch,
    base: str,
    arguments: dict[str, Any],
    tokens: int,
    rate: float,
    words: str,
) -> None:
    monkeypatch.setenv("ARK_BASE_URL", base)
    ark.post(f"{base}/contents/generations/tasks", json={"id": "cgt-1"})
    result = await call("generate_video", {"prompt": "a fox", **arguments})
    cost = result.structured_content["cost"]
    currency = "USD" if base == BYTEPLUS else "CNY"
    assert cost["currency"] == currency
    assert cost["estimate"] == pytest.approx(tokens * rate / 1e6, abs=1e-4)
    assert f"{tokens:,} tokens" in cost["basis"] or "reference video" in cost["basis"]
    assert words in cost["basis"] and f"{rate:g} {currency}/M" in cost["basis"]


@pytest.mark.parametrize(
    ("model", "arguments", "amount", "words"),
    [
        (
            "seedream-4-5-251128",
            {"max_images": 4},
            4 * 0.04,
            "up to 4 images at 0.04 USD",
        ),
        # 5.0 pro: by size, and 0.003 for each reference beyond the first.
        (
            "dola-seedream-5-0-pro-260628",
            {"size": "2K", "images": ["https://i.test/a.png"] * 3},
            0.09 + 2 * 0.003,
            "1 image at 0.096 USD (2K)",
        ),
        (
            "dola-seedream-5-0-pro-260628",
            {"size": "1500x1000"},
            0.09,
            "priced as 2K: an upper bound",
        ),
        (
            "seedream-4-0-250828",
            {"extra": {"layer_decomposition": True}},
            17 * 0.03,
            "up to 17 images",
        ),
    ],
)
async def test_images_are_quoted_for_every_image_the_call_may_make(
    ark: Any,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    arguments: dict[str, Any],
    amount: float,
    words: str,
) -> None:
    monkeypatch.setenv("ARK_BASE_URL", BYTEPLUS)
    ark.post(
        f"{BYTEPLUS}/images/generations",
        json={
            "data": [{"url": "https://cdn.test/1.png"}],
            "usage": {"generated_images": 1},
        },
    )
    result = await call(
        "generate_image", {"prompt": "a fox", "model": model, **arguments}
    )
    cost = result.structured_content["cost"]
    assert cost["estimate"] == pytest.approx(amount) and words in cost["basis"]
    # Billed: the one image Ark reports making, at the price of one.
    assert cost["billed"] == pytest.approx(
        amount / (17 if "17" in words else 4 if "4 images" in words else 1)
    )


async def test_a_model_without_a_price_says_so_and_never_gets_one_made_up(
    ark: Any,
) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    result = await call(
        "generate_video", {"prompt": "a fox", "model": "ep-20261201-abcd"}
    )
    assert result.structured_content["cost"] == {
        "currency": "CNY",
        "basis": "no price is known for ep-20261201-abcd at 720p in CNY: see docs/cost.md to give one in "
        "DOUBAO_PRICES",
    }


async def test_what_ark_billed_for_a_finished_task_is_reported_and_a_failed_one_costs_nothing(
    ark: Any,
) -> None:
    ark.get(
        f"{TASKS}/cgt-1",
        json={
            "id": "cgt-1",
            "model": DANCE_20,
            "status": "succeeded",
            "resolution": "1080p",
            "usage": {"completion_tokens": 245025},
        },
    )
    ark.get(
        f"{TASKS}/cgt-2",
        json={
            "id": "cgt-2",
            "model": DANCE_20,
            "status": "failed",
            "error": {"code": "X", "message": "no"},
        },
    )
    done = await call("query_video_task", {"task_id": "cgt-1"})
    failed = await call("query_video_task", {"task_id": "cgt-2"})
    assert done.structured_content["cost"] == {
        "currency": "CNY",
        "billed": round(245025 * 51 / 1e6, 4),
        "billed_basis": "245,025 tokens at 51 CNY/M (the rate without a reference video)",
    }
    assert failed.structured_content["cost"] == {
        "currency": "CNY",
        "billed": 0,
        "billed_basis": "not billed: the task failed",
    }


def write_prices(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "prices.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


async def test_doubao_prices_replace_the_table_field_by_field_and_price_an_endpoint_like_a_family(
    ark: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "DOUBAO_PRICES",
        write_prices(
            tmp_path,
            {
                "currency": "CNY",
                "models": {
                    "doubao-seedance-2-0": {"per_million_tokens": {"720p": 40}},
                    "ep-20261201abcd": {"as": "doubao-seedance-2-0"},
                    "doubao-seedream-4-5": {"per_image": 0.25},
                },
            },
        ),
    )
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.post(TASKS, json={"id": "cgt-2"})
    ark.post(TASKS, json={"id": "cgt-3"})
    ark.post(
        IMAGES,
        json={
            "data": [{"url": "https://cdn.test/1.png"}],
            "usage": {"generated_images": 1},
        },
    )
    at_720p = await call("generate_video", {"prompt": "a fox", "model": DANCE_20})
    at_1080p = await call(
        "generate_video", {"prompt": "a fox", "model": DANCE_20, "resolution": "1080p"}
    )
    endpoint = await call(
        "generate_video", {"prompt": "a fox", "model": "ep-20261201abcd"}
    )
    image = await call("generate_image", {"prompt": "a fox", "model": S45})
    assert "at 40 CNY/M" in at_720p.structured_content["cost"]["basis"]
    # The entry gave 720p only: 1080p keeps the table's rate.
    assert "at 51 CNY/M" in at_1080p.structured_content["cost"]["basis"]
    assert endpoint.structured_content["cost"]["estimate"] == pytest.approx(
        108_900 * 40 / 1e6, abs=1e-4
    )
    assert image.structured_content["cost"]["billed"] == 0.25


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ("{not json", "is not JSON"),
        (
            {"currency": "USD", "models": {}},
            'must say "currency": "CNY": this Ark (ARK_BASE_URL) bills in CNY',
        ),
        ({"models": {}}, 'must say "currency": "CNY"'),
        (
            {"currency": "CNY", "models": {"doubao-seedance-2-0": {"per_token": 1}}},
            "has an unknown field 'per_token': allowed are as, per_million_tokens",
        ),
        (
            {
                "currency": "CNY",
                "models": {"doubao-seedance-2-0": {"per_million_tokens": {"8k": 1}}},
            },
            "has an unknown resolution '8k'",
        ),
        (
            {"currency": "CNY", "models": {"doubao-seedance-2-0": {"flex": 2}}},
            "flex must be a fraction from 0 to 1",
        ),
        (
            {"currency": "CNY", "models": {"ep-1": {"as": "nothing-known"}}},
            "names 'nothing-known', which has no price",
        ),
        (
            {"currency": "CNY", "extra": 1},
            'must be an object with "currency" and "models"',
        ),
        ("[" * 2**20 + "]", "is over 1.0 MB: a price file is a few KB"),
    ],
)
def test_a_bad_price_file_stops_start_up_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, document: Any, error: str
) -> None:
    monkeypatch.setenv("DOUBAO_PRICES", write_prices(tmp_path, document))
    with pytest.raises(doubao_mcp.ConfigError, match=re.escape(error)):
        Config.from_env()


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        (
            "DOUBAO_PRICES",
            "/nonexistent/prices.json",
            "DOUBAO_PRICES (/nonexistent/prices.json) cannot be read",
        ),
        ("DOUBAO_DAILY_LIMIT", "fifty", "DOUBAO_DAILY_LIMIT must be an amount in CNY"),
        ("DOUBAO_DAILY_LIMIT", "-3", "DOUBAO_DAILY_LIMIT must be an amount in CNY"),
        (
            "DOUBAO_CONFIRM_ABOVE",
            "nan",
            "DOUBAO_CONFIRM_ABOVE must be an amount in CNY",
        ),
    ],
)
def test_a_bad_amount_or_a_missing_price_file_never_reads_as_no_limit(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, error: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(doubao_mcp.ConfigError, match=re.escape(error)):
        Config.from_env()


@pytest.mark.parametrize(
    ("env", "limit", "person_set"),
    [
        ({}, 200.0, False),
        ({"DOUBAO_DAILY_LIMIT": "off"}, None, True),
        ({"DOUBAO_DAILY_LIMIT": "50 CNY"}, 50.0, True),
        ({"ARK_BASE_URL": BYTEPLUS}, 30.0, False),
    ],
)
def test_the_daily_limit_has_a_default_per_currency_and_can_be_set_or_turned_off(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    limit: float | None,
    person_set: bool,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = Config.from_env()
    assert (config.daily_limit, config.limit_set, config.confirm_above) == (
        limit,
        person_set,
        None,
    )


async def test_the_limit_refuses_a_call_before_anything_is_sent(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOUBAO_DAILY_LIMIT", "8")
    ark.post(TASKS, json={"id": "cgt-1"})
    # The day looks full: what finished since is settled first (cgt-1 has not).
    ark.get(TASKS, json={"total": 1, "items": [{"id": "cgt-1", "status": "running"}]})
    async with Client(make_server()) as client:
        first = await client.call_tool(
            "generate_video", {"prompt": "a fox", "model": DANCE_20}
        )
        second = await client.call_tool(
            "generate_video", {"prompt": "a fox", "model": DANCE_20}
        )
    assert not first.is_error and "kept in memory" in first.structured_content["note"]
    text = error_text(second)
    assert "Not sent: this call would cost about 5.0094 CNY (720p 16:9" in text
    assert (
        "5.009 CNY of today's limit of 8 CNY (DOUBAO_DAILY_LIMIT) is spent or reserved"
        in text
    )
    assert (
        "The day turns at local midnight, in " in text
        and "raise DOUBAO_DAILY_LIMIT" in text
    )
    # One POST only: responses fails the test on any request not registered, and counts these.
    assert [c.request.method for c in ark.calls] == ["POST", "GET"]


async def test_under_a_limit_the_person_set_a_call_with_no_price_is_refused_and_a_price_file_lets_it_through(
    ark: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOUBAO_DAILY_LIMIT", "100")
    refused = await call(
        "generate_video", {"prompt": "a fox", "model": "ep-20261201abcd"}
    )
    assert "Not sent: no price is known for ep-20261201abcd" in error_text(refused)
    assert "DOUBAO_PRICES" in error_text(
        refused
    ) and "DOUBAO_DAILY_LIMIT=off" in error_text(refused)
    monkeypatch.setenv(
        "DOUBAO_PRICES",
        write_prices(
            tmp_path,
            {
                "currency": "CNY",
                "models": {"ep-20261201abcd": {"as": "doubao-seedance-2-0"}},
            },
        ),
    )
    ark.post(TASKS, json={"id": "cgt-1"})
    sent = await call("generate_video", {"prompt": "a fox", "model": "ep-20261201abcd"})
    assert sent.structured_content["cost"]["estimate"] == 5.0094


async def test_under_a_limit_the_person_set_defaults_without_a_price_are_passed_over(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """China's defaults: 2.0 is priced; under the person's limit a call that 2.0 cannot take goes to a priced one."""
    monkeypatch.setenv("DOUBAO_DAILY_LIMIT", "100")
    ark.post(TASKS, json={"id": "cgt-1"})
    result = await call("generate_video", {"prompt": "a fox", "duration": 5})
    assert sent_json(ark)["model"] == DANCE_20
    assert result.structured_content["cost"]["estimate"] == 5.0094


async def test_the_default_limit_lets_an_unpriced_call_through_uncounted(
    ark: Any,
) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    result = await call("generate_video", {"prompt": "a fox", "model": DANCE_25})
    assert (
        not result.is_error
        and "no price is known" in result.structured_content["cost"]["basis"]
    )


def spend_studio(
    tmp_path: Path | None = None, limit: float = 8.0, **changes: Any
) -> Studio:
    record = Record(tmp_path, BASE) if tmp_path else None
    return make_studio(record=record, daily_limit=limit, limit_set=True, **changes)


def quote_of(studio: Studio, **asked: Any) -> Any:
    ask = doubao_mcp.VideoAsk(media={}, **asked)
    return doubao_mcp.quote_video(studio.spend.book, DANCE_20, ask, None)


async def test_a_succeeded_task_settles_to_what_ark_billed_and_frees_the_rest(
    ark: Any,
) -> None:
    studio = spend_studio()
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.get(
        f"{TASKS}/cgt-1",
        json={
            "id": "cgt-1",
            "model": DANCE_20,
            "status": "succeeded",
            "resolution": "720p",
            "usage": {"completion_tokens": 50_000},
        },
    )
    plan = plan_of(studio, doubao_mcp.Choice(models=(DANCE_20,), source="argument"))
    plan = plan._replace(quotes={DANCE_20: quote_of(studio)})
    body = doubao_mcp.video_request(DANCE_20, "a", [], None, None, {}, {})
    await doubao_mcp.make_video(studio, plan, body, following())
    assert studio.spend.ledger.spent(doubao_mcp.key_fingerprint(KEY)) == pytest.approx(
        5.0094
    )
    task = await doubao_mcp.look_at(studio, "cgt-1", KEY)
    assert studio.spend.ledger.spent(doubao_mcp.key_fingerprint(KEY)) == pytest.approx(
        50_000 * 46 / 1e6
    )
    assert task["cost"]["billed"] == pytest.approx(50_000 * 46 / 1e6)


@pytest.mark.parametrize("status", ["failed", "cancelled", "expired"])
async def test_a_task_that_did_not_succeed_releases_its_reservation(
    ark: Any, status: str
) -> None:
    studio = spend_studio()
    owner = doubao_mcp.key_fingerprint(KEY)
    reservation = doubao_mcp.reserve_spend(
        studio, KEY, quote_of(studio), "video", DANCE_20
    )
    reservation.created("cgt-1")
    assert studio.spend.ledger.spent(owner) == pytest.approx(5.0094)
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "model": DANCE_20, "status": status})
    await doubao_mcp.look_at(studio, "cgt-1", KEY)
    assert studio.spend.ledger.spent(owner) == 0


async def test_a_refused_post_releases_its_reservation_and_a_timed_out_one_stays_reserved(
    ark: Any,
) -> None:
    studio = spend_studio()
    owner = doubao_mcp.key_fingerprint(KEY)
    plan = plan_of(studio, doubao_mcp.Choice(models=(DANCE_20,), source="argument"))
    plan = plan._replace(quotes={DANCE_20: quote_of(studio)})
    body = doubao_mcp.video_request(DANCE_20, "a", [], None, None, {}, {})
    ark.post(
        TASKS, status=400, json={"error": {"code": "InvalidParameter", "message": "no"}}
    )
    with pytest.raises(doubao_mcp.ArkAPIError):
        await doubao_mcp.make_video(studio, plan, body, following())
    assert studio.spend.ledger.spent(owner) == 0
    ark.post(TASKS, body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(doubao_mcp.DoubaoError):
        await doubao_mcp.make_video(studio, plan, body, following())
    assert studio.spend.ledger.spent(owner) == pytest.approx(5.0094)


def list_answer(*items: dict[str, Any]) -> dict[str, Any]:
    return {"json": {"total": len(items), "items": list(items)}}


@pytest.mark.parametrize("exists", [True, False])
async def test_a_creation_that_had_no_answer_stays_reserved_until_a_list_shows_whether_its_task_exists(
    ark: Any, exists: bool
) -> None:
    """The next call that needs room lists the key's tasks of that model: the task made when the POST was sent is
    it (settled by what it billed); a list without it releases the reservation."""
    studio = spend_studio(limit=6.0)
    owner = doubao_mcp.key_fingerprint(KEY)
    reservation = doubao_mcp.reserve_spend(
        studio, KEY, quote_of(studio), "video", DANCE_20
    )
    reservation.failed(doubao_mcp.ArkConnectionError("timed out"))
    made = {
        "id": "cgt-lost",
        "model": DANCE_20,
        "status": "succeeded",
        "created_at": int(time.time()),
        "usage": {"completion_tokens": 20_000},
    }
    ark.get(TASKS, **(list_answer(made) if exists else list_answer()))
    if exists:
        ark.get(TASKS, **list_answer(made))
    doubao_mcp.reserve_spend(studio, KEY, quote_of(studio), "video", DANCE_20)
    expected = 20_000 * 46 / 1e6 if exists else 0
    assert studio.spend.ledger.spent(owner) == pytest.approx(expected + 5.0094)
    listed = [dict(c.request.params) for c in ark.calls]
    assert listed[0] == {"page_size": "100", "filter.model": DANCE_20}


def test_two_calls_at_once_never_both_pass_a_limit_with_room_for_one(
    tmp_path: Path,
) -> None:
    """Two processes' ledgers on one record: each reservation is one transaction."""
    studios = [spend_studio(tmp_path), spend_studio(tmp_path)]
    quote = quote_of(studios[0])
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def reserve(studio: Studio) -> None:
        start.wait()
        try:
            doubao_mcp.reserve_spend(studio, KEY, quote, "video", DANCE_20)
            outcomes.append("passed")
        except doubao_mcp.DoubaoError as error:
            outcomes.append(
                "refused"
                if "Not sent: this call would cost" in str(error)
                else str(error)
            )

    threads = [
        threading.Thread(target=reserve, args=(studios[i % 2],)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["passed"] + ["refused"] * 7
    # A restart reads the same day's spend.
    again = spend_studio(tmp_path)
    assert again.spend.ledger.spent(doubao_mcp.key_fingerprint(KEY)) == pytest.approx(
        5.0094
    )


def test_each_key_has_its_own_limit(tmp_path: Path) -> None:
    studio = spend_studio(tmp_path)
    quote = quote_of(studio)
    doubao_mcp.reserve_spend(studio, KEY, quote, "video", DANCE_20)
    with pytest.raises(doubao_mcp.DoubaoError, match="Not sent"):
        doubao_mcp.reserve_spend(studio, KEY, quote, "video", DANCE_20)
    doubao_mcp.reserve_spend(studio, "another-callers-key", quote, "video", DANCE_20)


def test_a_poisoned_ledger_row_counts_as_nothing(tmp_path: Path) -> None:
    studio = spend_studio(tmp_path)
    db = sqlite3.connect(tmp_path / "tasks.sqlite3")
    owner = doubao_mcp.key_fingerprint(KEY)
    for amount in ("lots", -50, 9e999):
        db.execute(
            "INSERT INTO spend (owner, currency, day, kind, model, state, amount, posted) VALUES "
            "(?, 'CNY', ?, 'video', 'm', 'settled', ?, 0)",
            (owner, doubao_mcp.today(), amount),
        )
    db.commit()
    assert studio.spend.ledger.spent(owner) == 0


def test_a_locked_ledger_refuses_the_call_and_says_why(tmp_path: Path) -> None:
    studio = spend_studio(tmp_path)
    studio.spend.ledger.spent(None)
    locker = sqlite3.connect(tmp_path / "tasks.sqlite3", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with mock.patch.object(doubao_mcp, "LEDGER_WAIT_SECONDS", 0.01):
        fresh = spend_studio(tmp_path)
        with pytest.raises(
            doubao_mcp.DoubaoError, match="cannot be checked against DOUBAO_DAILY_LIMIT"
        ):
            doubao_mcp.reserve_spend(fresh, KEY, quote_of(fresh), "video", DANCE_20)
    locker.execute("ROLLBACK")


def accept(action: str, content: dict[str, Any] | None = None) -> Any:
    asked: list[str] = []

    async def callback(context: Any, params: Any) -> Any:
        asked.append(params.message)
        return mcp_types.ElicitResult(action=action, content=content)

    callback.asked = asked  # type: ignore[attr-defined]
    return callback


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize(
    ("answer", "sent"),
    [
        (("accept", {"spend": True}), True),
        (("accept", {"spend": False}), False),
        (("decline", None), False),
        (("cancel", None), False),
    ],
)
async def test_a_call_above_the_threshold_asks_the_person_first(
    ark: Any,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    answer: tuple[str, Any],
    sent: bool,
) -> None:
    monkeypatch.setenv("DOUBAO_CONFIRM_ABOVE", "2")
    if sent:
        ark.post(TASKS, json={"id": "cgt-1"})
    callback = accept(*answer)
    async with Client(
        make_server(), elicitation_callback=callback, mode=mode
    ) as client:
        result = await client.call_tool(
            "generate_video", {"prompt": "a fox", "model": DANCE_20}
        )
    assert callback.asked == [
        "This will cost about 5.0094 CNY: 720p 16:9 5 s: 108,900 tokens at 46 CNY/M. "
        "That is above your DOUBAO_CONFIRM_ABOVE (2 CNY). Go ahead?"
    ]
    if sent:
        assert result.structured_content["task_id"] == "cgt-1"
    else:
        assert "Not sent: the person did not agree" in error_text(
            result
        ) or "declin" in error_text(result)
        assert len(ark.calls) == 0


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_that_cannot_ask_is_refused_and_told_which_setting(
    ark: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("DOUBAO_CONFIRM_ABOVE", "2")
    async with Client(make_server(), mode=mode) as client:
        result = await client.call_tool(
            "generate_video", {"prompt": "a fox", "model": DANCE_20}
        )
        cheap = await client.call_tool(
            "generate_video",
            {"prompt": "a fox", "model": DANCE_20, "resolution": "480p", "duration": 4},
        )
    text = error_text(result)
    assert "Not sent: this call would cost about 5.0094 CNY" in text
    assert (
        "this client cannot be asked to confirm it" in text
        and "DOUBAO_CONFIRM_ABOVE" in text
    )
    # 480p for 4 s (about 1.8 CNY) is below the threshold: asked nothing, refused nothing (the fake Ark is not there: a
    # connection error, not a refusal of ours).
    assert "DOUBAO_CONFIRM_ABOVE" not in error_text(cheap)


async def test_no_argument_can_answer_for_the_person(
    ark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOUBAO_CONFIRM_ABOVE", "1")
    result = await call(
        "generate_video",
        {"prompt": "a fox", "model": DANCE_20, "consent": {"spend": True}},
    )
    assert "consent" in error_text(result) and len(ark.calls) == 0


# --- The studio: images, and a video task's life in the order a call uses it ------------------------------------------


async def test_a_default_ark_cannot_serve_falls_through_to_the_next_and_the_result_says_so(
    fake_ark: FakeArk,
) -> None:
    fake_ark.unavailable = {S45: "ModelNotOpen"}
    [result] = await session_calls(fake_ark, ("generate_image", {"prompt": "a fox"}))
    assert not result.is_error, error_text(result)
    assert posted_models(fake_ark) == [S45, PRO]
    assert result.structured_content["model"] == PRO
    assert result.structured_content["note"] == (
        f"{S45} is not available to this account (Ark says ModelNotOpen): used {PRO}. {doubao_mcp.URL_LIFETIME_NOTE}"
    )


async def test_the_model_that_worked_is_remembered_so_the_next_call_sends_one_request(
    fake_ark: FakeArk,
) -> None:
    fake_ark.unavailable = {DANCE_20: NOT_FOUND}
    first, second = await session_calls(
        fake_ark,
        ("generate_video", {"prompt": "a fox"}),
        ("generate_video", {"prompt": "a fox again"}),
    )
    assert posted_models(fake_ark) == [DANCE_20, DANCE_25, DANCE_25]
    assert (
        first.structured_content["note"]
        == f"{DANCE_20} is not available to this account (Ark says {NOT_FOUND}): "
        f"used {DANCE_25}."
    )
    assert (
        second.structured_content["model"] == DANCE_25
        and "note" not in second.structured_content
    )
    assert [
        r["body"]["content"][0]["text"]
        for r in fake_ark.requests
        if r["method"] == "POST"
    ][-1] == "a fox again"


async def test_when_no_default_can_serve_the_call_the_error_lists_what_was_tried_and_what_to_set(
    fake_ark: FakeArk,
) -> None:
    fake_ark.unavailable = {LITE: NOT_FOUND}
    studio = make_studio(Config(api_key=KEY, base_url=fake_ark.url))
    choice = doubao_mcp.candidates(
        "image", doubao_mcp.ImageAsk(size="3K"), studio.config, None
    )
    body = doubao_mcp.image_request(
        "a poster", choice.models[0], [], None, None, {}, size="3K"
    )
    with pytest.raises(doubao_mcp.DoubaoError) as refused:
        await doubao_mcp.make_images(
            studio, plan_of(studio, choice), body, KEY, None, no_progress
        )
    assert posted_models(fake_ark) == [LITE]
    assert str(refused.value) == (
        "No default image model that takes this call is available: "
        f"{LITE} is not available to this account (retired in China since 2026-11-24). Activate one in the Ark console "
        "(Model activation), or pass model (or set DOUBAO_IMAGE_MODEL) to a model or endpoint id your account has."
    )


async def test_all_unavailable_defaults_are_named_together_and_tried_again_on_the_next_call(
    fake_ark: FakeArk,
) -> None:
    """Remembering is only an order: a model activated after a refusal is found on the next call."""
    fake_ark.unavailable = dict.fromkeys(
        doubao_mcp.DEFAULT_MODELS["video"][doubao_mcp.CHINA], "ModelNotOpen"
    )
    (first,) = await session_calls(
        fake_ark, ("generate_video", {"prompt": "a fox", "draft": True})
    )
    # The two that make drafts
    assert posted_models(fake_ark) == [DANCE_25, DANCE_15]
    assert (
        f"{DANCE_25} and {DANCE_15} are not available to this account (Ark says ModelNotOpen)"
        in error_text(first)
    )


async def test_an_explicit_model_or_a_setting_is_never_replaced(
    fake_ark: FakeArk,
) -> None:
    fake_ark.unavailable = {S45: "ModelNotOpen", DANCE_20: "ModelNotOpen"}
    (by_argument,) = await session_calls(
        fake_ark, ("generate_image", {"prompt": "a fox", "model": S45})
    )
    (by_setting,) = await session_calls(
        fake_ark, ("generate_video", {"prompt": "a fox"}), video_model=DANCE_20
    )
    assert posted_models(fake_ark) == [S45, DANCE_20]
    assert error_text(by_argument).endswith(
        f"Activate {S45} in the Ark console (Model activation), or pass a model "
        "or endpoint id your account has."
    )
    assert error_text(by_setting).endswith(
        f"Activate {DANCE_20} in the Ark console (Model activation), or set "
        "DOUBAO_VIDEO_MODEL to a model or endpoint id your account has."
    )


@pytest.mark.parametrize(
    "fault, expected",
    [
        (
            answer(
                400,
                json.dumps(
                    {"error": {"code": "InvalidParameter", "message": "bad prompt"}}
                ),
            ),
            "bad prompt",
        ),
        (
            answer(
                500,
                json.dumps(
                    {"error": {"code": "InternalServiceError", "message": "oops"}}
                ),
            ),
            "oops",
        ),
        # Dropped mid-answer
        (
            answer(200, '{"id": "cgt', length=500),
            "Ark may have created the task anyway",
        ),
    ],
)
async def test_no_fall_through_after_any_other_answer_since_the_task_may_exist(
    fake_ark: FakeArk, fault: Any, expected: str
) -> None:
    fake_ark.faults[("POST", TASKS_ROUTE)] = fault
    [result] = await session_calls(fake_ark, ("generate_video", {"prompt": "a fox"}))
    assert expected in error_text(result)
    assert posted_models(fake_ark) == [DANCE_20]


@pytest.mark.parametrize(
    "model, arguments, advice",
    [
        (
            DANCE_15,
            {"draft": True},
            "Seedance 1.5 pro is being retired (on BytePlus, shut down since 2026-11-11): use "
            "doubao-seedance-2-5-260628 (Seedance 2.5 makes drafts too, at 480p; 2.0 mini makes none).",
        ),
        (
            LITE,
            {},
            "Seedream 5.0 lite is retired in China since 2026-11-24: use doubao-seedream-5-0-pro-260628 (it makes "
            "no sets, no web search and no 3K or 4K).",
        ),
    ],
)
async def test_ark_refusing_a_retiring_model_names_its_successor_and_a_result_from_one_carries_a_note(
    fake_ark: FakeArk, model: str, arguments: dict[str, Any], advice: str
) -> None:
    tool = "generate_video" if "seedance" in model else "generate_image"
    fake_ark.unavailable = {model: NOT_FOUND}
    (refused,) = await session_calls(
        fake_ark, (tool, {"prompt": "a fox", "model": model, **arguments})
    )
    fake_ark.unavailable = {}
    (served,) = await session_calls(
        fake_ark, (tool, {"prompt": "a fox", "model": model, **arguments})
    )
    assert f"Ark API error 404 {NOT_FOUND}" in error_text(
        refused
    ) and advice in error_text(refused)
    assert served.structured_content["note"].startswith(advice)
    # Never refused here for being retired
    assert posted_models(fake_ark) == [
        model,
        model,
    ]


def test_model_memory_is_per_key_and_bounded() -> None:
    memory = doubao_mcp.ModelMemory(keys=2)
    memory.learn("key-a", "m1", usable=False)
    assert memory.order("key-a", ["m1", "m2"]) == ["m2", "m1"]
    # Another caller's account is its own
    assert memory.order("key-b", ["m1", "m2"]) == [
        "m1",
        "m2",
    ]
    memory.learn("key-b", "m2", usable=True)
    # A third key pushes out the oldest
    memory.learn("key-c", "m2", usable=False)
    assert memory.order("key-a", ["m1", "m2"]) == ["m1", "m2"]
    # Activated since: first again
    memory.learn("key-c", "m2", usable=True)
    assert memory.order("key-c", ["m1", "m2"]) == ["m1", "m2"]


@pytest.mark.parametrize(
    "rows",
    [
        # The estimate would be infinite
        [{"task_id": f"cgt-inf-{n}", "finished": 9e999} for n in range(3)],
        # Inf - inf: SQLite gives NULL
        [{"task_id": "cgt-nan", "created": 9e999, "finished": 9e999}],
        [{"task_id": "cgt-null", "finished": 60, "parameters": "null"}],
        [{"task_id": "cgt-list", "finished": 60, "parameters": "[1]"}],
        [{"task_id": "cgt-cut", "finished": 60, "parameters": "{"}],
    ],
    ids=["infinite", "null-time", "null-parameters", "list-parameters", "broken-json"],
)
async def test_a_poisoned_record_never_costs_a_created_task_its_id(
    fake_ark: FakeArk,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 23, item 1: nothing read from the record stands between a created task and its id."""
    server, _record = record_server(
        tmp_path, base_url=fake_ark.url, poll_intervals=(0.01, 0.02)
    )
    poison(tmp_path / "state", *({**row, "base_url": fake_ark.url} for row in rows))
    async with Client(server) as client:
        created = await client.call_tool("generate_video", {"prompt": "fox"})
        waited = await client.call_tool(
            "query_video_task", {"task_id": "cgt-fake-1", "wait_seconds": 0.05}
        )
    assert (
        not created.is_error and created.structured_content["task_id"] == "cgt-fake-1"
    ), created.content[0].text
    # The family's prior, not the poisoned rows
    assert created.structured_content["estimate_seconds"] == 90
    assert not waited.is_error and waited.structured_content["task_id"] == "cgt-fake-1"
    assert (
        f"has {len(rows)} rows whose times or parameters cannot be read: left out of the estimates"
        in caplog.text
    )


async def test_a_draft_on_seedance_2_5_then_its_final_video(fake_ark: FakeArk) -> None:
    (draft,) = await session_calls(
        fake_ark,
        (
            "generate_video",
            {
                "prompt": "a paper boat",
                "draft": True,
                "resolution": "480p",
                "wait_seconds": 5,
            },
        ),
        poll_intervals=(0.01, 0.01),
    )
    assert draft.structured_content["status"] == "succeeded", draft.structured_content
    (final,) = await session_calls(
        fake_ark,
        (
            "generate_video",
            {
                "draft_task_id": draft.structured_content["task_id"],
                "resolution": "1080p",
            },
        ),
    )
    assert not final.is_error, error_text(final)
    bodies = [r["body"] for r in fake_ark.requests if r["method"] == "POST"]
    assert bodies == [
        {
            "model": DANCE_25,
            "content": [{"type": "text", "text": "a paper boat"}],
            "resolution": "480p",
            "draft": True,
        },
        {
            "model": DANCE_25,
            "content": [
                {
                    "type": "draft_task",
                    "draft_task": {"id": draft.structured_content["task_id"]},
                }
            ],
            "resolution": "1080p",
        },
    ]


async def test_polls_are_rare_early_and_dense_around_the_estimate_so_a_finished_video_is_seen_within_2_s() -> (
    None
):
    task, polls = await wait_for(finish_at=120, wait_seconds=600, estimate=120)
    gaps = [b - a for a, b in zip([0.0, *polls], polls, strict=False)]
    assert task["status"] == "succeeded"
    # Once soon: Ark refuses a prompt or an image within seconds
    assert gaps[0] == 1.5
    # Then 10 s apart, closer and closer
    assert gaps[1] == 10.0 and gaps[1:] == sorted(gaps[1:], reverse=True)
    assert 0 <= polls[-1] - 120 <= 1.5 and len(polls) <= 18
    # Past its estimate
    late, late_polls = await wait_for(finish_at=150, wait_seconds=600, estimate=120)
    assert late["status"] == "succeeded" and late_polls[-1] - 150 <= 4


async def test_a_quick_task_with_a_good_estimate_is_noticed_within_a_second_and_a_half() -> (
    None
):
    task, polls = await wait_for(finish_at=5, wait_seconds=600, estimate=5)
    assert (
        task["status"] == "succeeded" and polls[0] == 1.5 and 0 <= polls[-1] - 5 <= 1.5
    )


async def test_a_transient_poll_failure_is_retried_by_the_next_poll() -> None:
    outage = (
        doubao_mcp.ArkConnectionError("reset"),
        ArkAPIError(503, None, "busy"),
        ArkAPIError(429, "R", "slow"),
    )
    task, polls = await wait_for(
        finish_at=5, wait_seconds=600, failures=outage, estimate=5
    )
    assert task["status"] == "succeeded" and len(polls) == 4 and polls[-1] >= 5


async def test_a_wait_ends_at_its_deadline_when_the_task_never_finishes() -> None:
    task, polls = await wait_for(finish_at=float("inf"), wait_seconds=30)
    assert task["status"] == "running"
    assert polls[-1] == 30 and all(t <= 30 for t in polls)
    assert (
        "call query_video_task with task_id 'cgt-1' and wait_seconds=50"
        in task["next_step"]
    )


async def test_progress_is_the_tasks_age_against_an_estimate_that_grows_past_it_and_never_goes_back() -> (
    None
):
    reports: list[tuple[float, float, str]] = []
    await wait_for(finish_at=40, wait_seconds=600, estimate=20, reports=reports)
    ages, totals = [age for age, _, _ in reports], [total for _, total, _ in reports]
    assert (
        ages == sorted(ages)
        and totals == sorted(totals)
        and totals[0] == 20
        and totals[-1] > ages[-1]
    )
    assert (
        reports[0][2] == "cgt-1: queued, 0 s of about 20 s"
        and "s of about " in reports[-1][2]
    )


async def test_no_poll_is_awaited_past_one_requests_deadline() -> None:
    async def never() -> Any:
        await anyio.sleep_forever()

    async def report(*_: Any) -> None:
        pass

    queued = doubao_mcp.shape_task({"id": "cgt-1", "status": "queued"})
    now = FakeTime()
    task = await doubao_mcp.wait_for_task(
        never, queued, 5, report, clock=now.clock, sleep=now.sleep, poll_limit=0.01
    )
    assert task["status"] == "queued" and task["next_step"].startswith(
        "Checking the task failed (no answer within"
    )


def test_an_estimate_is_the_median_of_recent_tasks_of_its_kind_else_of_its_family_else_the_prior(
    tmp_path: Path,
) -> None:
    record = doubao_mcp.Record(tmp_path / "state", BASE)
    body = {
        "model": "doubao-seedance-2-0-260128",
        "content": [],
        "resolution": "720p",
        "duration": 5,
    }
    for n, seconds in enumerate((30, 40, 50)):
        record.created(
            {"task_id": f"cgt-{n}", "status": "queued"},
            body,
            None,
            doubao_mcp.key_fingerprint(KEY),
        )
        record._write(
            "UPDATE tasks SET status = 'succeeded', finished = created + ? WHERE task_id = ?",
            seconds,
            f"cgt-{n}",
        )
    from_record = doubao_mcp.Estimates(record, doubao_mcp.key_fingerprint(KEY))
    from_record.load()
    # Same family
    assert from_record.estimate(KEY, "dreamina-seedance-2-0-260128", "720p", 5) == (
        40,
        True,
    )
    # Few of the kind
    assert from_record.estimate(KEY, "doubao-seedance-2-0-260128", "1080p", 10) == (
        40,
        True,
    )
    memory = doubao_mcp.Estimates(None)
    prior = memory.estimate(KEY, "doubao-seedance-2-0-fast-260128", "480p", 10)
    # The family's prior, scaled
    assert prior.seconds == pytest.approx(45 * 0.6 * 2) and not prior.learnt
    # A prior may be far off: polls stay closer
    assert prior.intervals((1.5, 10.0)) == (
        1.5,
        4.0,
    )
    # An endpoint hides its model: the generic prior
    assert memory.estimate(KEY, "ep-20260101-x") == (
        90,
        False,
    )
    # Each counts once
    memory.learn(
        KEY,
        [
            {
                "task_id": f"cgt-{n}",
                "status": "succeeded",
                "model": "doubao-seedance-2-5-260628",
                "resolution": "720p",
                "duration": 10,
                "created_at": "2026-11-30T10:00:00Z",
                "updated_at": f"2026-11-30T10:0{n + 1}:00Z",
            }
            for n in range(3)
        ]
        * 2,
    )
    assert memory.estimate(KEY, "doubao-seedance-2-5-260628", "720p", 10) == (120, True)
    assert (
        memory.estimate(
            "another-callers-key-0123", "doubao-seedance-2-5-260628", "720p", 10
        ).learnt
        is False
    )


async def test_a_wait_reports_progress_against_the_estimate_from_history(
    ark: Any, tmp_path: Path
) -> None:
    task = {
        "id": "cgt-9",
        "model": "doubao-seedance-2-0-260128",
        "resolution": "720p",
        "duration": 5,
    }
    for status in ("running", "succeeded"):
        ark.get(f"{TASKS}/cgt-9", json={**task, "status": status})
    server, record = record_server(tmp_path, poll_intervals=(0.01, 0.02))
    body = {
        "model": "doubao-seedance-2-0-260128",
        "content": [],
        "resolution": "720p",
        "duration": 5,
    }
    for n in range(3):
        record.created(
            {"task_id": f"cgt-{n}", "status": "queued"},
            body,
            None,
            doubao_mcp.key_fingerprint(KEY),
        )
        record._write(
            "UPDATE tasks SET status = 'succeeded', finished = created + 64 WHERE task_id = ?",
            f"cgt-{n}",
        )
    updates: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        updates.append((value, total, message))

    async with Client(server) as client:
        await client.call_tool(
            "query_video_task",
            {"task_id": "cgt-9", "wait_seconds": 30},
            progress_callback=progress,
        )
    assert (
        updates
        and {total for _, total, _ in updates} == {64}
        and "of about 64 s" in updates[0][2]
    )


async def test_waiting_sends_progress_to_the_client(ark: Any) -> None:
    for status in ("queued", "running", "running", "succeeded"):
        ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": status})
    updates: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        updates.append((value, total, message))

    result = await call(
        "query_video_task",
        {"task_id": "cgt-1", "wait_seconds": 30},
        fast_polls(),
        progress_callback=progress,
    )
    assert result.structured_content["status"] == "succeeded"
    assert len(ark.calls) == 4
    assert [message for _, _, message in updates] == [
        "cgt-1: queued, 0 s of about 90 s",
        "cgt-1: running, 0 s of about 90 s",
        "cgt-1: running, 0 s of about 90 s",
    ]
    # No history, no model named: the generic prior
    assert {total for _, total, _ in updates} == {90}
    assert [value for value, _, _ in updates] == sorted(
        value for value, _, _ in updates
    )
    # No 1.28e-06 for a person to read
    assert all(value == round(value, 1) for value, _, _ in updates)


async def test_cancelling_a_waiting_call_stops_polling(ark: Any) -> None:
    polls: list[int] = []
    second_poll = anyio.Event()
    # The polls run on the server's own threads, not anyio's
    loop = anyio.lowlevel.current_token()

    def running(request: Any) -> tuple[int, dict[str, str], str]:
        polls.append(1)
        if len(polls) == 2:
            anyio.from_thread.run_sync(second_poll.set, token=loop)
        return 200, {}, json.dumps({"id": "cgt-1", "status": "running"})

    ark.add_callback("GET", f"{TASKS}/cgt-1", callback=running)
    async with Client(make_server(fast_polls())) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(
                partial(
                    client.call_tool,
                    "query_video_task",
                    {"task_id": "cgt-1", "wait_seconds": 60},
                )
            )
            await second_poll.wait()
            group.cancel_scope.cancel()
        seen = len(polls)
        # Fifteen poll intervals
        await anyio.sleep(0.3)
    # At most the poll already on its way
    assert len(polls) <= seen + 1


async def test_polls_during_a_wait_make_one_attempt_each(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    ark.get(f"{TASKS}/cgt-1", **ARK_500)
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "succeeded"})
    sleeps: list[float] = []
    async with Client(make_server(fast_polls(), sleeps=sleeps)) as client:
        result = await client.call_tool(
            "query_video_task", {"task_id": "cgt-1", "wait_seconds": 30}
        )
    assert result.structured_content["status"] == "succeeded"
    # The 500 was retried by the next poll, not by the client
    assert len(ark.calls) == 3 and sleeps == []


async def test_a_lasting_poll_failure_returns_what_is_known_at_the_deadline(
    ark: Any,
) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    ark.get(f"{TASKS}/cgt-1", **ARK_500)
    studio = make_studio(fast_polls())
    found = await doubao_mcp.look_at(studio, "cgt-1", KEY)
    task = await doubao_mcp.follow_task(
        studio, found, following(until=time.monotonic() + 0.1)
    )
    assert task["status"] == "running"
    assert task["next_step"].startswith(
        "Checking the task failed (Ark API error 500 InternalServiceError: oops"
    )


async def test_a_failed_poll_during_a_wait_returns_what_is_known(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    ark.get(
        f"{TASKS}/cgt-1",
        status=401,
        json={"error": {"code": "AuthenticationError", "message": "revoked"}},
    )
    studio = make_studio(fast_polls())
    found = await doubao_mcp.look_at(studio, "cgt-1", KEY)
    task = await doubao_mcp.follow_task(
        studio, found, following(until=time.monotonic() + 30)
    )
    assert task["status"] == "running"
    assert task["next_step"].startswith(
        "Checking the task failed (Ark API error 401 AuthenticationError: revoked"
    )
    assert "query_video_task with task_id 'cgt-1'" in task["next_step"]


async def test_a_waiting_call_keeps_its_task_id_whatever_the_polls_return() -> None:
    with FakeArk() as fake:
        fake.faults[("GET", TASKS_ROUTE + "/")] = answer(200, NESTED)
        result = await call(
            "generate_video",
            {"prompt": "a fox", "wait_seconds": 1},
            replace(Config(api_key=KEY, base_url=fake.url), poll_intervals=(0.1, 0.1)),
        )
    task = result.structured_content
    assert (
        not result.is_error
        and task["task_id"] == "cgt-fake-1"
        and task["status"] == "queued"
    )
    assert (
        "Checking the task failed" in task["next_step"]
        and "cgt-fake-1" in task["next_step"]
    )


async def test_concurrent_waits_of_one_key_share_their_polls(fake_ark: FakeArk) -> None:
    """Issue 18: 20 waits on videos that each take six polls poll together, one list request for all of them."""
    fake_ark.polls_to_finish = 6
    config = Config(
        api_key=KEY, base_url=fake_ark.url, previews=False, poll_intervals=(0.05, 0.2)
    )
    async with Client(make_server(config)) as client:
        ids = [
            (
                await client.call_tool("generate_video", {"prompt": f"fox {n}"})
            ).structured_content["task_id"]
            for n in range(20)
        ]
        done: list[Any] = []

        async def wait(task_id: str) -> None:
            done.append(
                await client.call_tool(
                    "query_video_task", {"task_id": task_id, "wait_seconds": 30}
                )
            )

        async with anyio.create_task_group() as group:
            for task_id in ids:
                group.start_soon(wait, task_id)
    polls = [
        r
        for r in fake_ark.requests
        if r["method"] == "GET" and r["path"].startswith(TASKS_ROUTE)
    ]
    asked = [
        len([v for k, v in r["query"] if k == "filter.task_ids"])
        for r in polls
        if r["path"] == TASKS_ROUTE
    ]
    assert [r.structured_content["status"] for r in done] == ["succeeded"] * 20
    # Alone, each would poll 6 times: 120 polls
    assert len(polls) <= 40 and max(asked) >= 10, (
        len(polls),
        asked,
    )


async def test_one_keys_tasks_are_never_polled_with_another_key(
    fake_ark: FakeArk,
) -> None:
    for task_id in ("cgt-a1", "cgt-a2", "cgt-b1", "cgt-b2"):
        fake_ark.add_task(task_id, status="running")
    config = Config(api_key=KEY, base_url=fake_ark.url)
    studio = doubao_mcp.Studio(config, ArkClient(fake_ark.url))
    owners = {
        "cgt-a1": "key-a-0123456789",
        "cgt-a2": "key-a-0123456789",
        "cgt-b1": "key-b-0123456789",
        "cgt-b2": "key-b-0123456789",
    }
    async with anyio.create_task_group() as group:
        for task_id, key in owners.items():
            group.start_soon(studio.poller(key).poll, task_id)
    for request in fake_ark.requests:
        asked = [v for k, v in request["query"] if k == "filter.task_ids"] or [
            request["path"].rsplit("/", 1)[-1]
        ]
        assert {f"Bearer {owners[t]}" for t in asked} == {request["authorization"]}, (
            request
        )
    # One list request per key
    assert len(fake_ark.requests) == 2


async def test_tasks_a_list_leaves_out_are_asked_about_alone_all_at_once(
    fake_ark: FakeArk,
) -> None:
    """Issue 23, item 3: twenty waits on tasks a list leaves out cost one GET's time, not twenty."""

    def running(handler: BaseHTTPRequestHandler) -> None:
        task_id = urlsplit(handler.path).path.rsplit("/", 1)[-1]
        answer(200, json.dumps({"id": task_id, "status": "running"}))(handler)

    hold, answered = Hold(then=running), itertools.count()
    # Each call's first look at its task is its own GET; the polls after it are what is held.
    fake_ark.faults[("GET", TASKS_ROUTE + "/")] = lambda handler: (
        running if next(answered) < 6 else hold
    )(handler)
    fake_ark.faults[("GET", TASKS_ROUTE)] = answer(
        200, json.dumps({"total": 0, "items": []})
    )
    config = Config(
        api_key=KEY,
        base_url=fake_ark.url,
        previews=False,
        poll_intervals=(0.05, 0.2),
        limits=doubao_mcp.Limits(quick_threads=4),
    )
    async with (
        Client(make_server(config)) as client,
        anyio.create_task_group() as group,
    ):
        for n in range(6):
            group.start_soon(
                client.call_tool,
                "query_video_task",
                {"task_id": f"cgt-alone-{n}", "wait_seconds": 1},
            )
        # As many at once as the quick lane has threads
        await anyio.to_thread.run_sync(hold.arrived, 4)
        hold.release()


async def test_a_list_that_pages_below_what_was_asked_is_paged_through(
    fake_ark: FakeArk,
) -> None:
    # An Ark (or a proxy) whose pages hold fewer than asked for
    fake_ark.page_cap = 4
    for n in range(10):
        fake_ark.add_task(f"cgt-page-{n}", status="running")
    ids = [f"cgt-page-{n}" for n in range(10)]
    studio = make_studio(Config(api_key=KEY, base_url=fake_ark.url))
    listed = await doubao_mcp.tasks_asked_for(studio, ids, KEY, doubao_mcp.NO_FILTERS)
    assert [t["task_id"] for t in listed] == ids
    pages = [dict(r["query"]).get("page_num", "1") for r in fake_ark.requests]
    assert pages == ["1", "2", "3"] and all(
        r["path"] == TASKS_ROUTE for r in fake_ark.requests
    )


@pytest.mark.parametrize("order", [("running", "succeeded"), ("succeeded", "running")])
async def test_a_task_listed_twice_is_one_task_and_a_final_status_wins(
    ark: Any, tmp_path: Path, order: tuple[str, str]
) -> None:
    """Issue 23, item 4."""
    listed = [
        {
            **SUCCEEDED_TASK,
            "id": task_id,
            "status": status,
            "content": {"video_url": f"https://cdn.test/{task_id}.mp4"}
            if status == "succeeded"
            else {},
        }
        for task_id in ("cgt-a", "cgt-b")
        for status in order
    ]
    ark.get(TASKS, json={"total": 4, "items": listed})
    for task_id in ("cgt-a", "cgt-b"):
        ark.get(
            f"https://cdn.test/{task_id}.mp4",
            body=VIDEO_BYTES,
            content_type="video/mp4",
        )
    studio = make_studio(fast_polls())
    tasks = await doubao_mcp.tasks_asked_for(
        studio, ["cgt-a", "cgt-b"], KEY, doubao_mcp.NO_FILTERS
    )
    follow = following(
        until=time.monotonic() + 5, save_to=doubao_mcp.open_folder(tmp_path, None)
    )
    tasks = await doubao_mcp.follow_all(studio, tasks, follow)
    assert len(tasks) == 2
    assert [t["status"] for t in tasks] == ["succeeded", "succeeded"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cgt-a.mp4", "cgt-b.mp4"]


async def test_a_task_ark_does_not_know_is_listed_as_unknown_not_dropped(
    ark: Any,
) -> None:
    ark.get(TASKS, json={"total": 1, "items": [{"id": "cgt-a", "status": "running"}]})
    ark.get(
        f"{TASKS}/cgt-gone",
        status=404,
        json={"error": {"code": "ResourceNotFound", "message": "no task"}},
    )
    result = await call(
        "list_video_tasks", {"task_ids": ["cgt-a", "cgt-gone", "cgt-a"]}
    )
    assert result.structured_content == {
        "total": 2,
        "tasks": [
            {"task_id": "cgt-a", "status": "running"},
            {
                "task_id": "cgt-gone",
                "status": "unknown",
                "error_code": "ResourceNotFound",
                "error_message": "no task",
                "next_step": doubao_mcp.TASK_NOT_FOUND_HINT,
            },
        ],
    }
    assert "page_num and page_size page through all tasks" in error_text(
        await call("list_video_tasks", {"task_ids": ["cgt-a"], "page_size": 5})
    )


async def test_one_list_call_waits_for_many_tasks_saves_each_and_counts_them_done(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Issue 18: an agent that made three takes waits once."""
    config = Config(
        api_key=KEY, base_url=fake_ark.url, previews=False, poll_intervals=(0.05, 0.2)
    )
    updates: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        updates.append((value, total, message))

    async with Client(make_server(config)) as client:
        ids = [
            (
                await client.call_tool("generate_video", {"prompt": f"take {n}"})
            ).structured_content["task_id"]
            for n in range(3)
        ]
        listed = await client.call_tool(
            "list_video_tasks",
            {"task_ids": ids, "wait_seconds": 30, "save_dir": str(tmp_path)},
            progress_callback=progress,
        )
        refused = await client.call_tool("list_video_tasks", {"wait_seconds": 10})
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    tasks = listed.structured_content["tasks"]
    assert [t["status"] for t in tasks] == ["succeeded"] * 3 and all(
        "next_step" not in t for t in tasks
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{task_id}.mp4" for task_id in ids
    )
    assert [t["saved_files"][0]["path"] for t in tasks] == [
        str(tmp_path / f"{t['task_id']}.mp4") for t in tasks
    ]
    assert updates[0] == (0, 3, "0 of 3 done") and updates[-1] == (3, 3, "3 of 3 done")
    assert [value for value, _, _ in updates] == sorted(
        value for value, _, _ in updates
    )
    assert "wait_seconds and save_dir need task_ids" in error_text(refused)
    assert (
        tools["list_video_tasks"].input_schema["properties"]["wait_seconds"]["maximum"]
        == 55
    )


async def test_a_batch_wait_covers_every_task_asked_for_however_many(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Issue 23, item 2: Ark's default page is 10; 15 tasks asked for are 15 tasks waited for and saved."""
    config = Config(
        api_key=KEY, base_url=fake_ark.url, previews=False, poll_intervals=(0.05, 0.2)
    )
    async with Client(make_server(config)) as client:
        ids = [
            (
                await client.call_tool("generate_video", {"prompt": f"take {n}"})
            ).structured_content["task_id"]
            for n in range(15)
        ]
        listed = await client.call_tool(
            "list_video_tasks",
            {"task_ids": ids, "wait_seconds": 30, "save_dir": str(tmp_path)},
        )
    result = listed.structured_content
    assert result["total"] == 15 and [t["task_id"] for t in result["tasks"]] == ids
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{task_id}.mp4" for task_id in ids
    )
    lists = [
        r
        for r in fake_ark.requests
        if r["method"] == "GET" and r["path"] == TASKS_ROUTE
    ]
    assert all(
        dict(r["query"]).get("page_size")
        == str(len([v for k, v in r["query"] if k == "filter.task_ids"]))
        for r in lists
    )


async def test_a_batch_wait_whose_polls_fail_says_so_for_each_task(ark: Any) -> None:
    """Issue 23, item 10: a list answering HTML is a failed poll, and the result says what to do."""
    ark.get(
        TASKS,
        json={
            "total": 2,
            "items": [
                {"id": "cgt-a", "status": "queued"},
                {"id": "cgt-b", "status": "queued"},
            ],
        },
    )
    ark.get(TASKS, body="<html><body>gateway</body></html>", content_type="text/html")
    studio = make_studio(fast_polls())
    tasks = await doubao_mcp.tasks_asked_for(
        studio, ["cgt-a", "cgt-b"], KEY, doubao_mcp.NO_FILTERS
    )
    tasks = await doubao_mcp.follow_all(
        studio, tasks, following(until=time.monotonic() + 0.2)
    )
    assert [t["status"] for t in tasks] == ["queued", "queued"]
    assert all(
        t["next_step"].startswith(
            "Checking the task failed (Ark answered 200 with a body that is not a JSON "
            "object"
        )
        for t in tasks
    ), tasks
    assert "query_video_task with task_id 'cgt-a'" in tasks[0]["next_step"]


async def test_a_succeeded_video_and_its_last_frame_are_saved(
    ark: Any, tmp_path: Path
) -> None:
    finished_task_and_files(ark)
    studio, folder = make_studio(), tmp_path.resolve()
    found = await doubao_mcp.look_at(studio, TASK_ID, KEY)
    task = await doubao_mcp.follow_task(
        studio, found, following(save_to=doubao_mcp.open_folder(folder, None))
    )
    assert task["saved_files"] == [
        {
            "path": str(folder / f"{TASK_ID}.mp4"),
            "bytes": len(VIDEO_BYTES),
            "sha256": sha256(VIDEO_BYTES),
            "kind": "video",
        },
        {
            "path": str(folder / f"{TASK_ID}-last-frame.png"),
            "bytes": len(PNG),
            "sha256": sha256(PNG),
            "kind": "last_frame",
        },
    ]
    assert (folder / f"{TASK_ID}.mp4").read_bytes() == VIDEO_BYTES
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{TASK_ID}-last-frame.png",
        f"{TASK_ID}.mp4",
    ]
    assert task["video_url"] == VIDEO_URL
    # Result URLs are pre-signed
    assert all("Authorization" not in c.request.headers for c in ark.calls[1:])


async def test_generated_images_are_saved_from_urls_and_inline_data(
    ark: Any, tmp_path: Path
) -> None:
    ark.post(
        IMAGES,
        json={
            "data": [
                {"url": "https://cdn.test/a", "size": "2048x2048"},
                {"b64_json": base64.b64encode(PNG).decode()},
                {
                    "error": {
                        "code": "OutputImageSensitiveContentDetected",
                        "message": "no",
                    }
                },
            ]
        },
    )
    ark.get("https://cdn.test/a", body=JPEG, content_type="image/jpeg")
    result = await call(
        "generate_image",
        {"prompt": "two foxes", "max_images": 3, "save_dir": str(tmp_path)},
    )
    shaped = result.structured_content
    names = sorted(p.name for p in tmp_path.iterdir())
    assert (
        re.fullmatch(r"doubao-\d{8}-\d{6}-0\.jpeg", names[0])
        and names[1] == names[0][:-6] + "1.png"
    )
    assert [f["bytes"] for f in shaped["saved_files"]] == [len(JPEG), len(PNG)]
    assert shaped["images"] == [
        {"index": 0, "url": "https://cdn.test/a", "size": "2048x2048"},
        {"index": 1},
    ]
    assert base64.b64encode(PNG).decode() not in result.content[0].text


async def test_an_unfinished_task_says_to_pass_save_dir_again(
    ark: Any, tmp_path: Path
) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    studio = make_studio()
    choice = doubao_mcp.Choice(models=(DANCE_20,), source="argument")
    body = doubao_mcp.video_request(DANCE_20, "a", [], None, None, {}, {})
    follow = following(save_to=doubao_mcp.open_folder(tmp_path, None))
    task = await doubao_mcp.make_video(studio, plan_of(studio, choice), body, follow)
    assert task["status"] == "queued" and task["next_step"].endswith(
        "Pass save_dir again to save it."
    )
    assert list(tmp_path.iterdir()) == []


async def test_a_saved_file_that_went_missing_is_reported_and_saved_again_when_asked(
    ark: Any, tmp_path: Path
) -> None:
    ark.get(f"{TASKS}/{TASK_ID}", json=SUCCEEDED_TASK)
    ark.get("https://cdn.test/v.mp4?sig=1", body=VIDEO_BYTES)
    ark.get("https://cdn.test/last.png", body=PNG)
    server, record = record_server(tmp_path)
    async with Client(server) as client:
        first = await client.call_tool(
            "query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)}
        )
        again = await client.call_tool(
            "query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)}
        )
        video = Path(first.structured_content["saved_files"][0]["path"])
        video.unlink()
        changes = record.db.total_changes
        missing = await client.call_tool("query_video_task", {"task_id": TASK_ID})
        unchanged = record.db.total_changes
        resaved = await client.call_tool(
            "query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)}
        )
    # Not fetched twice
    assert (
        again.structured_content["saved_files"]
        == first.structured_content["saved_files"]
    )
    assert [f.get("missing") for f in missing.structured_content["saved_files"]] == [
        True,
        None,
    ]
    # A query of a task whose state has not changed writes nothing
    assert unchanged == changes
    assert (
        resaved.structured_content["saved_files"]
        == [
            {k: v for k, v in f.items() if k != "missing"}
            for f in missing.structured_content["saved_files"]
        ][::-1]
    )
    assert video.read_bytes() == VIDEO_BYTES and sorted(
        p.name
        for p in tmp_path.iterdir()
        # The frame that was still there: not fetched again
    ) == [
        f"{TASK_ID}-last-frame.png",
        f"{TASK_ID}.mp4",
        "state",
    ]
    assert [c.request.url for c in ark.calls].count("https://cdn.test/v.mp4?sig=1") == 2


async def test_a_half_saved_task_is_finished_by_the_next_save_and_resumed_at_start_up(
    ark: Any, tmp_path: Path
) -> None:
    """Item 2: the video's save failed and its last frame's did not: the next call with save_dir fetches only the
    video, and until then the task counts as unsaved for resuming."""
    ark.get(f"{TASKS}/{TASK_ID}", json=SUCCEEDED_TASK)
    ark.get(VIDEO_URL, status=500, body="no")
    ark.get(LAST_FRAME_URL, body=PNG, content_type="image/png")
    server, record = record_server(tmp_path)
    async with Client(server) as client:
        half = await client.call_tool(
            "query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)}
        )
        record._write(
            "UPDATE tasks SET owner = ?, watcher = NULL",
            doubao_mcp.key_fingerprint(KEY),
        )
        resumable = record.orphans(doubao_mcp.key_fingerprint(KEY) or "")
        ark.replace(
            responses.GET, VIDEO_URL, body=VIDEO_BYTES, content_type="video/mp4"
        )
        whole = await client.call_tool(
            "query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)}
        )
    assert [f["kind"] for f in half.structured_content["saved_files"]] == ["last_frame"]
    assert "HTTP 500" in half.structured_content["save_errors"][0]["error"]
    assert resumable == [(TASK_ID, str(tmp_path))]
    assert sorted(f["kind"] for f in whole.structured_content["saved_files"]) == [
        "last_frame",
        "video",
    ]
    # The frame: fetched once
    assert [c.request.url for c in ark.calls].count(LAST_FRAME_URL) == 1
    assert (
        rows(tmp_path / "state")[TASK_ID]["complete"] == 1
        and record.orphans(doubao_mcp.key_fingerprint(KEY)) == []
    )


async def test_a_task_id_holding_last_frame_is_saved_by_kind_not_by_name(
    ark: Any, tmp_path: Path
) -> None:
    """Item 11: the frame is told from the video by what the record knows, never by a name pattern."""
    task_id = "cgt-20261130-last-frame"
    ark.get(f"{TASKS}/{task_id}", json={**SUCCEEDED_TASK, "id": task_id})
    ark.get(VIDEO_URL, body=VIDEO_BYTES, content_type="video/mp4")
    ark.get(LAST_FRAME_URL, body=PNG, content_type="image/png")
    server, _ = record_server(tmp_path)
    async with Client(server) as client:
        first = await client.call_tool(
            "query_video_task", {"task_id": task_id, "save_dir": str(tmp_path)}
        )
        again = await client.call_tool(
            "query_video_task", {"task_id": task_id, "save_dir": str(tmp_path)}
        )
    kinds = {
        Path(f["path"]).name: f["kind"] for f in first.structured_content["saved_files"]
    }
    assert kinds == {
        f"{task_id}.mp4": "video",
        f"{task_id}-last-frame.png": "last_frame",
    }
    assert (
        again.structured_content["saved_files"]
        == first.structured_content["saved_files"]
    )
    # Two task queries, one video, one frame: nothing fetched twice
    assert len(ark.calls) == 4


# --- The asset library ------------------------------------------------------------------------------------------------

ASSET_TOOLS = ["add_asset", "list_assets", "remove_asset", "verify_person"]


def library_server(record: Record | None = None, **settings: Any) -> Any:
    """A server on the fake asset library (the `assets` fixture's settings), its polls and pace quick (the pace
    itself is tested on a FakeTime)."""
    config = Config.from_env()
    assert config.assets is not None
    quick = {"poll_seconds": 0.01, "creates_per_minute": 6000, **settings}
    return make_server(config, record=record, assets=replace(config.assets, **quick))


def expire_verification_links(record: Record) -> None:
    """Every verification the record holds as started a moment longer ago than its link lives."""
    with contextlib.closing(sqlite3.connect(record.path)) as db:
        db.execute(
            "UPDATE people SET started = started - ?",
            (doubao_mcp.VERIFY_TOKEN_SECONDS + 1,),
        )
        db.commit()


async def on_library(tool: str, arguments: dict[str, Any], **settings: Any) -> Any:
    async with Client(library_server(**settings)) as client:
        return await client.call_tool(tool, arguments)


@pytest.mark.parametrize(
    ("base_url", "url", "region"),
    [
        (
            "https://ark.cn-beijing.volces.com/api/v3",
            "https://ark.cn-beijing.volcengineapi.com",
            "cn-beijing",
        ),
        (
            "https://ark.ap-southeast.bytepluses.com/api/v3",
            "https://ark.ap-southeast-1.byteplusapi.com",
            "ap-southeast-1",
        ),
        (
            "https://ark.eu-west.bytepluses.com/api/v3",
            "https://ark.eu-west-1.byteplusapi.com",
            "eu-west-1",
        ),
    ],
)
def test_the_asset_library_lives_where_ark_base_url_says(
    base_url: str, url: str, region: str
) -> None:
    settings = doubao_mcp.read_assets(
        {"VOLCENGINE_ACCESS_KEY": "ak", "VOLCENGINE_SECRET_KEY": "sk"}, base_url
    )
    assert settings is not None
    assert (
        settings.url,
        settings.region,
        settings.project,
        settings.creates_per_minute,
    ) == (url, region, "default", 3)


def test_asset_keys_are_read_under_the_vendors_names_the_regions_own_first() -> None:
    both = {
        "VOLCENGINE_ACCESS_KEY": "volc-ak",
        "VOLCENGINE_SECRET_KEY": "volc-sk",
        "BYTEPLUS_ACCESS_KEY": "bp-ak",
        "BYTEPLUS_SECRET_KEY": "bp-sk",
    }
    china = doubao_mcp.read_assets(both, doubao_mcp.DEFAULT_BASE_URL)
    byteplus = doubao_mcp.read_assets(
        both, "https://ark.ap-southeast.bytepluses.com/api/v3"
    )
    legacy = doubao_mcp.read_assets(
        {"VOLC_ACCESSKEY": "old-ak", "VOLC_SECRETKEY": "old-sk"}, BASE
    )
    assert china and byteplus and legacy
    assert (china.access_key, byteplus.access_key, legacy.secret_key) == (
        "volc-ak",
        "bp-ak",
        "old-sk",
    )
    assert doubao_mcp.read_assets({}, BASE) is None
    with pytest.raises(doubao_mcp.ConfigError, match="BYTEPLUS_SECRET_KEY is not set"):
        doubao_mcp.read_assets({"BYTEPLUS_ACCESS_KEY": "bp-ak"}, BASE)
    with pytest.raises(
        doubao_mcp.ConfigError, match="DOUBAO_ASSET_CREATES_PER_MINUTE must be"
    ):
        doubao_mcp.read_assets(
            {**both, "DOUBAO_ASSET_CREATES_PER_MINUTE": "fast"}, BASE
        )
    custom = doubao_mcp.read_assets(
        {
            **both,
            "DOUBAO_ASSET_API_URL": "https://assets.example/",
            "DOUBAO_ASSET_REGION": "cn-shanghai",
        },
        BASE,
    )
    assert custom and (custom.url, custom.region) == (
        "https://assets.example",
        "cn-shanghai",
    )
    assert "volc-sk" not in repr(china)


async def test_the_asset_tools_are_listed_only_with_the_keys_and_never_over_http(
    assets: Any,
) -> None:
    async with Client(make_server()) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    assert names[-4:] == ASSET_TOOLS
    async with Client(make_server(serving_http=True)) as client:
        over_http = [tool.name for tool in (await client.list_tools()).tools]
    async with Client(make_server(assets=None)) as client:
        without = [tool.name for tool in (await client.list_tools()).tools]
    assert over_http == without == names[:-4]
    remove = next(t for t in doubao_mcp.published_tools() if t.name == "remove_asset")
    assert (
        remove.annotations.destructive_hint
        and "consent" not in remove.parameters["properties"]
    )


async def test_add_asset_makes_the_subjects_group_once_and_waits_until_active(
    assets: Any,
) -> None:
    progress: list[str] = []

    async def told(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(library_server()) as client:
        first = await client.call_tool(
            "add_asset",
            {"subject": "Mia", "media": ASSET_PHOTO},
            progress_callback=told,
        )
        second = await client.call_tool(
            "add_asset", {"subject": "Mia", "media": "https://photos.test/mia2.jpg"}
        )
    made = first.structured_content
    assert made["status"] == "Active" and made["asset"] == "asset://asset-20261201-x"
    assert made["next_step"] == (
        "Pass asset://asset-20261201-x to generate_video (Seedance 2.x) as first_frame or reference_images."
    )
    assert assets.sent("CreateAssetGroup") == [
        {
            "ProjectName": "default",
            "Name": "Mia",
            "Description": "made by doubao-mcp",
            "GroupType": "AIGC",
        }
    ]
    creates = assets.sent("CreateAsset")
    assert [(c["GroupId"], c["URL"], c["AssetType"]) for c in creates] == [
        ("group-1", ASSET_PHOTO, "Image"),
        ("group-1", "https://photos.test/mia2.jpg", "Image"),
    ]
    # Unique names, so that an unknown outcome can be looked for by exact match.
    assert (
        creates[0]["Name"].startswith("Mia-")
        and creates[0]["Name"] != creates[1]["Name"]
    )
    assert second.structured_content["group_id"] == "group-1"
    assert "the library is processing the asset (Processing)" in progress
    assert assets.rejected == 0


async def test_calls_for_a_new_subject_at_once_make_one_group(assets: Any) -> None:
    async with Client(library_server()) as client:
        async with anyio.create_task_group() as calls:
            for n in range(3):
                arguments = {
                    "subject": "Leo",
                    "media": f"https://photos.test/leo{n}.jpg",
                }
                calls.start_soon(client.call_tool, "add_asset", arguments)
    assert len(assets.sent("CreateAssetGroup")) == 1
    assert {c["GroupId"] for c in assets.sent("CreateAsset")} == {"group-1"}
    assert len(assets.assets) == 3


async def test_a_group_whose_name_only_contains_the_subject_is_not_it_and_two_of_that_name_are_an_error(
    assets: Any,
) -> None:
    assets.groups["g-9"] = {"Id": "g-9", "Name": "Mia and Leo", "GroupType": "AIGC"}
    result = await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    assert result.structured_content["group_id"] == "group-2"
    assets.groups["g-10"] = {"Id": "g-10", "Name": "Mia", "GroupType": "AIGC"}
    creates = len(assets.sent("CreateAsset"))
    text = error_text(
        await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    )
    assert "The library has 2 groups named 'Mia' (group-2, g-10)" in text
    assert len(assets.sent("CreateAsset")) == creates


async def test_add_asset_refuses_what_the_library_cannot_fetch_before_asking_it(
    assets: Any, tmp_path: Path
) -> None:
    photo = write(tmp_path / "me.png", PNG)
    refusals = {
        "http://photos.test/mia.jpg": "the asset library takes one public https URL or a file path, not http",
        data_url("image/png", PNG): "not data",
        photo: "set DOUBAO_UPLOADS=s3://bucket/prefix",
    }
    for media, refusal in refusals.items():
        assert refusal in error_text(
            await on_library("add_asset", {"subject": "Mia", "media": media})
        )
    assert "subject" in error_text(
        await on_library("add_asset", {"subject": " ", "media": ASSET_PHOTO})
    )
    assert assets.calls == []


async def test_a_local_photo_is_uploaded_and_its_link_given_to_the_library(
    assets: Any, storage: Any, tmp_path: Path
) -> None:
    photo = write(tmp_path / "me.png", PNG)
    result = (
        await on_library("add_asset", {"subject": "Mia", "media": photo})
    ).structured_content
    assert result["status"] == "Active"
    assert result["uploaded"]["key"] == f"clips/{sha256(PNG)}.png"
    sent = assets.sent("CreateAsset")[0]["URL"]
    assert (
        sent.startswith(storage.env["AWS_ENDPOINT_URL_S3"])
        and "X-Amz-Signature" in sent
    )
    assert requests.get(sent, timeout=10).content == PNG


async def test_a_local_clips_kind_is_read_from_its_bytes(
    assets: Any, storage: Any, tmp_path: Path
) -> None:
    clip = write(tmp_path / "walk.bin", mp4(5.0))
    result = (
        await on_library("add_asset", {"subject": "Mia", "media": clip})
    ).structured_content
    assert assets.sent("CreateAsset")[0]["AssetType"] == "Video"
    assert result["next_step"].endswith("as reference_videos.")
    short = write(tmp_path / "blink.mp4", mp4(1.0))
    assert "is 1.0 s long; Ark takes reference videos of at least 2 s" in error_text(
        await on_library("add_asset", {"subject": "Mia", "media": short})
    )
    assert "p.png is not an MP4 or MOV video." in error_text(
        await on_library(
            "add_asset",
            {
                "subject": "Mia",
                "media": write(tmp_path / "p.png", PNG),
                "media_type": "video",
            },
        )
    )
    assert len(assets.sent("CreateAsset")) == 1


async def test_a_created_asset_comes_back_whatever_its_wait_meets(assets: Any) -> None:
    assets.faults["GetAsset"] = [asset_error("InternalError", "down", 500)] * 8
    result = (
        await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    ).structured_content
    assert (
        result["asset"] == "asset://asset-20261201-x" and result["status"] == "unknown"
    )
    assert result["next_step"].startswith(
        "It was added, but checking it failed (The asset library refused GetAsset"
    )


async def test_a_rate_limited_create_slows_the_pace_and_is_tried_again(
    assets: Any,
) -> None:
    assets.faults["CreateAsset"] = [
        asset_error("FlowLimitExceeded.CreateAsset", "too many requests")
    ]
    result = await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    assert result.structured_content["status"] == "Active"
    assert len(assets.sent("CreateAsset")) == 2 and len(assets.assets) == 1


async def test_creates_are_paced_to_the_tiers_rate_each_caller_in_turn() -> None:
    clock = FakeTime()
    pace = doubao_mcp.Pace(3, clock.clock, clock.sleep)
    told: list[str] = []

    async def report(_: float, __: float | None, message: str) -> None:
        told.append(message)

    starts = []
    for _ in range(3):
        await pace.turn(report)
        starts.append(clock.now)
    assert starts == [0, 20, 40]
    assert told[0] == "waiting 20 s: the library takes 3 new assets a minute"
    pace.slow_down()
    await pace.turn(report)
    assert clock.now == 40 + 40 and told[-1].endswith("takes 1.5 new assets a minute")


@pytest.mark.parametrize(
    "fault",
    ["drop", ("done", 500, {"ResponseMetadata": {"Error": {"Code": "InternalError"}}})],
)
async def test_a_create_whose_outcome_is_unknown_is_looked_for_never_sent_twice(
    assets: Any, fault: Any
) -> None:
    assets.faults["CreateAsset"] = [fault]
    result = await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    # The fake made the asset before it failed to answer: it is found by its name.
    assert result.structured_content["asset"] == "asset://asset-20261201-x"
    assert len(assets.sent("CreateAsset")) == 1
    name = assets.sent("CreateAsset")[0]["Name"]
    assert assets.sent("ListAssets")[-1]["Filter"] == {
        "GroupType": "AIGC",
        "GroupIds": ["group-1"],
        "Name": name,
    }


async def test_an_unknown_outcome_with_nothing_found_says_to_look_before_adding_again(
    assets: Any,
) -> None:
    assets.faults["CreateAsset"] = [
        (503, {"ResponseMetadata": {"Error": {"Code": "ServiceUnavailable"}}})
    ]
    original = assets.act

    def forgetting(action: str, asked: dict[str, Any]) -> Any:
        status, reply = original(action, asked)
        if action == "CreateAsset":
            assets.assets.clear()
        return status, reply

    assets.act = forgetting
    text = error_text(
        await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    )
    assert (
        "may or may not have worked" in text
        and "call list_assets with subject 'Mia' in a minute" in text
    )
    assert len(assets.sent("CreateAsset")) == 1


async def test_an_error_inside_a_200_is_a_refusal_with_advice_and_no_secret(
    assets: Any,
) -> None:
    assets.faults["CreateAssetGroup"] = [
        asset_error(
            "SubscriptionRequired", f"not enabled (echo: {ASSET_SECRET} {ASSET_ACCESS})"
        )
    ]
    text = error_text(
        await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    )
    assert (
        "The asset library refused CreateAssetGroup (200 SubscriptionRequired)" in text
    )
    assert "enable asset creation in the Ark console's asset library first" in text
    assert ASSET_SECRET not in text and ASSET_ACCESS not in text
    assert assets.sent("CreateAsset") == []


async def test_a_huge_or_unreadable_library_answer_is_refused_by_the_librarys_name(
    assets: Any,
) -> None:
    assets.faults["ListAssetGroups"] = [
        answer(200, b"x" * (9 * 2**20)),
        answer(200, "<html>gateway</html>", "text/html"),
    ]
    huge = error_text(await on_library("list_assets", {}))
    html = error_text(await on_library("list_assets", {}))
    assert (
        "The asset library's answer is over 8.0 MB" in huge
        and "DOUBAO_ASSET_API_URL" in huge
    )
    assert (
        "The asset library answered ListAssetGroups with something that is not JSON"
        in html
    )


async def test_a_wrong_secret_key_is_told_by_name_and_never_shown(
    assets: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("BYTEPLUS_SECRET_KEY", "not-the-secret-key-0123456789abcdef")
    text = error_text(await on_library("list_assets", {}))
    assert "SignatureDoesNotMatch" in text and "BYTEPLUS_SECRET_KEY" in text
    assert "not-the-secret-key" not in text and assets.rejected == 1


async def test_list_assets_shows_each_subject_with_its_assets_and_cuts_a_list_that_never_ends(
    assets: Any,
) -> None:
    async with Client(library_server()) as client:
        await client.call_tool("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
        await client.call_tool(
            "add_asset",
            {
                "subject": "Leo",
                "media": "https://photos.test/fail.mp4",
                "media_type": "video",
            },
        )
        listing = (await client.call_tool("list_assets", {})).structured_content
        only_mia = (
            await client.call_tool("list_assets", {"subject": "Mia"})
        ).structured_content
    assert listing == {
        "subjects": [
            {
                "subject": "Mia",
                "group_id": "group-1",
                "person": False,
                "assets": [
                    {
                        "asset": "asset://asset-20261201-x",
                        "name": assets.assets["asset-20261201-x"]["Name"],
                        "media_type": "image",
                        "status": "Active",
                    }
                ],
            },
            {
                "subject": "Leo",
                "group_id": "group-2",
                "person": False,
                "assets": [
                    {
                        "asset": "asset://asset-20261202-x",
                        "name": assets.assets["asset-20261202-x"]["Name"],
                        "media_type": "video",
                        "status": "Failed",
                    }
                ],
            },
        ]
    }
    assert [s["subject"] for s in only_mia["subjects"]] == ["Mia"]
    original = assets.act

    def endless(action: str, asked: dict[str, Any]) -> Any:
        status, reply = original(action, asked)
        if action == "ListAssets":
            reply["Result"]["NextToken"] = str(len(assets.calls))
        return status, reply

    assets.act = endless
    cut = (await on_library("list_assets", {})).structured_content
    assert cut["note"].startswith("The library's list did not end within 20 pages")
    assert len(cut["subjects"][0]["assets"]) == 1
    assets.act = original
    for n in range(doubao_mcp.ASSETS_SHOWN_MAX + 5):
        assets.assets[f"a-{n}"] = {**assets.assets["asset-20261201-x"], "Id": f"a-{n}"}
    many = (await on_library("list_assets", {})).structured_content
    assert (
        sum(len(one["assets"]) for one in many["subjects"])
        == doubao_mcp.ASSETS_SHOWN_MAX
    )
    assert (
        many["note"]
        == "7 more assets are not shown: pass subject to see one subject's."
    )


@pytest.mark.parametrize(
    ("answer", "removed"),
    [
        (("accept", {"remove": True}), True),
        (("accept", {"remove": False}), False),
        (("decline", None), False),
    ],
)
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_remove_asset_asks_the_person_first(
    assets: Any, answer: tuple[str, Any], removed: bool, mode: str
) -> None:
    await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    callback = accept(*answer)
    async with Client(
        library_server(), elicitation_callback=callback, mode=mode
    ) as client:
        result = await client.call_tool(
            "remove_asset", {"asset_id": "asset://asset-20261201-x"}
        )
    assert callback.asked == [
        "Remove the asset asset://asset-20261201-x from Ark's asset library? This cannot be undone."
    ]
    assert bool(assets.sent("DeleteAsset")) == removed
    if removed:
        assert result.structured_content["removed"] == ["asset://asset-20261201-x"]
    else:
        assert "Not removed" in error_text(result) or "declin" in error_text(result)


async def test_a_client_that_cannot_ask_removes_only_with_the_persons_setting(
    assets: Any,
) -> None:
    await on_library("add_asset", {"subject": "Mia", "media": ASSET_PHOTO})
    text = error_text(await on_library("remove_asset", {"subject": "Mia"}))
    assert (
        "this client cannot ask the person" in text
        and "DOUBAO_ASSET_ALLOW_REMOVE=1" in text
    )
    assert assets.sent("DeleteAsset") == []
    both = error_text(
        await on_library("remove_asset", {"subject": "Mia", "asset_id": "asset-1"})
    )
    assert "Give asset_id (one asset) or subject" in both
    removed = await on_library("remove_asset", {"subject": "Mia"}, allow_remove=True)
    assert removed.structured_content == {
        "removed": ["asset://asset-20261201-x"],
        "message": "Removed 'Mia' and its 1 assets from the library.",
    }
    assert assets.groups == {} and assets.assets == {}


async def test_a_verified_person_becomes_a_subject_whose_photo_goes_into_their_group(
    assets: Any, tmp_path: Path
) -> None:
    record = Record(tmp_path, BASE)
    async with Client(library_server(record)) as client:
        started = (
            await client.call_tool("verify_person", {"subject": "Mia"})
        ).structured_content
        waiting = (
            await client.call_tool(
                "verify_person", {"subject": "Mia", "wait_seconds": 0.05}
            )
        ).structured_content
        assets.passed.add("tok-1")
        done = (
            await client.call_tool(
                "verify_person", {"subject": "Mia", "wait_seconds": 5}
            )
        ).structured_content
    assert (
        started["status"] == "open_link"
        and started["link"] == "https://h5.test/liveness?token=tok-1"
    )
    assert "Give Mia this link to open on their phone" in started["message"]
    assert waiting["status"] == "waiting" and waiting["link"] == started["link"]
    assert done["status"] == "verified" and done["group_id"] == "face-1"
    assert "DOUBAO_STATE_DIR=off" not in done["message"]
    # Another server on the same record knows her: her photo goes into her LivenessFace group.
    async with Client(library_server(Record(tmp_path, BASE))) as client:
        added = (
            await client.call_tool(
                "add_asset", {"subject": "Mia", "media": ASSET_PHOTO}
            )
        ).structured_content
        listing = (
            await client.call_tool("list_assets", {"subject": "Mia"})
        ).structured_content
    assert added["group_id"] == "face-1" and assets.sent("CreateAssetGroup") == []
    assert (
        listing["subjects"][0]["person"] is True
        and listing["subjects"][0]["subject"] == "Mia"
    )
    assert len(assets.sent("CreateVisualValidateSession")) == 1


async def test_media_waits_for_a_verification_under_way_and_a_list_item_without_an_id_is_left_out(
    assets: Any,
) -> None:
    async with Client(library_server()) as client:
        await client.call_tool("verify_person", {"subject": "Mia"})
        text = error_text(
            await client.call_tool(
                "add_asset", {"subject": "Mia", "media": ASSET_PHOTO}
            )
        )
        assets.groups["bad"] = {"Id": "../../etc", "Name": "Mia", "GroupType": "AIGC"}
        listing = (await client.call_tool("list_assets", {})).structured_content
    assert "Mia's verification is not finished: call verify_person" in text
    assert assets.sent("CreateAsset") == [] and listing == {"subjects": []}


async def test_without_a_record_the_tie_lasts_this_process_and_an_old_link_expires(
    assets: Any, tmp_path: Path
) -> None:
    async with Client(library_server()) as client:
        await client.call_tool("verify_person", {"subject": "Leo"})
        assets.passed.add("tok-1")
        done = (
            await client.call_tool(
                "verify_person", {"subject": "Leo", "wait_seconds": 5}
            )
        ).structured_content
    assert "it knows this group is theirs only until it stops" in done["message"]
    record = Record(tmp_path, BASE)
    async with Client(library_server(record)) as client:
        await client.call_tool("verify_person", {"subject": "Mia"})
        expire_verification_links(record)
        expired = (
            await client.call_tool(
                "verify_person", {"subject": "Mia", "wait_seconds": 5}
            )
        ).structured_content
        again = (
            await client.call_tool("verify_person", {"subject": "Mia"})
        ).structured_content
    assert expired["status"] == "expired" and "30 minutes are up" in expired["message"]
    assert again["status"] == "open_link" and again["link"].endswith("tok-3")


async def test_a_failed_check_is_not_yet_until_its_link_expires_then_a_new_one_is_offered(
    assets: Any, tmp_path: Path
) -> None:
    """GetVisualValidateResult's failed shape is undocumented: anything but a group is "not yet"."""
    record = Record(tmp_path, BASE)
    async with Client(library_server(record)) as client:
        await client.call_tool("verify_person", {"subject": "Mia"})
        assets.failed.add("tok-1")
        waiting = (
            await client.call_tool(
                "verify_person", {"subject": "Mia", "wait_seconds": 0.05}
            )
        ).structured_content
        expire_verification_links(record)
        expired = (
            await client.call_tool("verify_person", {"subject": "Mia"})
        ).structured_content
    assert waiting["status"] == "waiting" and expired["status"] == "expired"
    assert "call verify_person again for a new link" in expired["message"]


def test_the_library_says_a_missing_filter_is_missing_and_where_it_could_not_connect(
    assets: Any,
) -> None:
    config = Config.from_env()
    assert config.assets is not None
    client = ArkClient(config.base_url, secrets=[KEY], sleep=lambda s: None)
    with pytest.raises(
        doubao_mcp.AssetAPIError,
        match=r"ListAssetGroups \(400 MissingParameter.Filter\)",
    ):
        doubao_mcp.asset_call(client, config.assets, "ListAssetGroups", {})
    nowhere = replace(config.assets, url="http://127.0.0.1:9")
    with pytest.raises(
        doubao_mcp.ArkConnectionError,
        match="Check your network, proxy and DOUBAO_ASSET_API_URL",
    ):
        doubao_mcp.asset_call(
            client, nowhere, "ListAssetGroups", {"Filter": {"GroupType": "AIGC"}}
        )


def test_every_input_code_that_names_a_real_person_gets_the_path_and_no_other_does() -> (
    None
):
    path = doubao_mcp.REAL_PERSON_HINTS[True]
    for code in (
        "InputMediaMayContainRealPerson",
        "InputVideoMayContainRealPerson",
        "InputImage.HumanFace",
    ):
        assert doubao_mcp.code_hint(code, assets=True) == path, code
    for code in (
        "InputImageSensitiveContentDetected",
        "OutputVideoMayContainRealPerson",
        "RealPersonDetected",
    ):
        assert doubao_mcp.code_hint(code, assets=True) != path, code


def test_who_a_subject_is_survives_a_record_that_cannot_be_read_and_a_poisoned_row_is_no_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = Record(tmp_path, BASE)
    people = doubao_mcp.People(record, "account")
    people.put("Mia", doubao_mcp.Person(group_id="face-1"))
    with mock.patch.object(record, "_query", return_value=None):
        assert people.get("Mia") == doubao_mcp.Person(group_id="face-1")
    # Another process removed her: the record says so.
    doubao_mcp.People(record, "account").forget("Mia")
    assert people.get("Mia") is None
    db = sqlite3.connect(record.path)
    db.execute("INSERT INTO people VALUES ('account', 'Leo', 5, NULL, NULL, 'then')")
    db.commit()
    assert people.get("Leo") is None and "5" not in people.by_group()
    assert "Left out a row of the task record's people" in caplog.text


async def test_a_real_persons_refusal_names_the_asset_tools_or_the_settings_that_give_them(
    ark: Any, monkeypatch: Any
) -> None:
    refusal = {
        "error": {"code": "InputMediaMayContainRealPerson", "message": "real person"}
    }
    ark.post(TASKS, status=400, json=refusal)
    without = error_text(
        await call("generate_video", {"prompt": "me", "model": DANCE_20})
    )
    assert "Set VOLCENGINE_ACCESS_KEY and VOLCENGINE_SECRET_KEY" in without
    monkeypatch.setenv("VOLCENGINE_ACCESS_KEY", "ak")
    monkeypatch.setenv("VOLCENGINE_SECRET_KEY", "sk")
    ark.post(TASKS, status=400, json=refusal)
    ark.get(
        f"{TASKS}/cgt-9",
        json={"id": "cgt-9", "status": "failed", "error": refusal["error"]},
    )
    with_keys = error_text(
        await call("generate_video", {"prompt": "me", "model": DANCE_20})
    )
    assert (
        "verify the person with verify_person, add the photo or video with add_asset"
        in with_keys
    )
    failed = await call("query_video_task", {"task_id": "cgt-9"})
    assert "verify_person" in failed.structured_content["next_step"]


# --- The Ark client: every request, its answer read within a cap, mapped to data or an error --------------------------


def test_task_ids_are_url_encoded_in_the_path(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt%3A1", json={"id": "cgt:1", "status": "queued"})
    ArkClient(BASE).get_task("cgt:1", KEY)
    assert ark.calls[0].request.url == f"{TASKS}/cgt%3A1"


@pytest.mark.parametrize(
    "failure, advice",
    [
        ({"body": refused()}, "Check your network, proxy and ARK_BASE_URL"),
        (
            {"body": requests.ReadTimeout("slow")},
            "Ark may have created the task anyway: check list_video_tasks",
        ),
    ],
)
def test_a_failed_task_creation_says_whether_a_task_may_exist(
    ark: Any, failure: dict[str, Any], advice: str
) -> None:
    ark.post(TASKS, **failure)
    with pytest.raises(doubao_mcp.ArkConnectionError, match=advice):
        ArkClient(BASE, sleep=lambda s: None).create_task(
            {"model": "m", "content": []}, KEY
        )


@pytest.mark.parametrize("case", UPSTREAM_FAULTS)
async def test_upstream_faults(case: str, tmp_path: Path) -> None:
    route, fault, (tool, arguments), expected = UPSTREAM_FAULTS[case]
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="succeeded")
        config = Config(api_key=KEY, base_url=fake.url, image_timeout=0.5)
        if route:
            fake.faults[route] = fault
        # Nothing listens on the port a closed socket had
        else:
            with socket.socket() as closed:
                closed.bind(("127.0.0.1", 0))
                config = replace(
                    config,
                    base_url=f"http://127.0.0.1:{closed.getsockname()[1]}/api/v3",
                )
        text = await run_case(
            fake,
            config,
            tool,
            {**arguments, "save_dir": str(tmp_path)},
            tmp_path,
            bool(route),
        )
    assert expected in text, text


# --- Exchanges: their auth, deadlines and retries, how each is timed, retried and ended -------------------------------


def test_requests_use_connect_and_read_timeouts(ark: Any) -> None:
    ark.post(IMAGES, json={"data": []})
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "queued"})
    client = ArkClient(BASE, image_timeout=120)
    client.generate_images({"model": "m", "prompt": "p"}, KEY)
    client.get_task("cgt-1", KEY)
    assert ark.calls[0].request.req_kwargs["timeout"] == (
        doubao_mcp.CONNECT_TIMEOUT_SECONDS,
        pytest.approx(120, abs=1),
    )
    assert ark.calls[1].request.req_kwargs["timeout"] == (
        doubao_mcp.CONNECT_TIMEOUT_SECONDS,
        pytest.approx(doubao_mcp.TASK_READ_TIMEOUT_SECONDS, abs=1),
    )


@pytest.mark.parametrize(
    "failure",
    [
        ARK_429,
        ARK_500,
        {"status": 502, "body": "<html>bad gateway</html>"},
        {"status": 503, "body": ""},
        {"body": requests.ReadTimeout("slow")},
        {"body": requests.ConnectionError("Connection aborted")},
        {"body": refused()},
    ],
)
def test_get_and_delete_retry_transient_failures_with_backoff(
    ark: Any, failure: dict[str, Any]
) -> None:
    ark.get(f"{TASKS}/cgt-1", **failure)
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    ark.delete(f"{TASKS}/cgt-1", **failure)
    ark.delete(f"{TASKS}/cgt-1", json={})
    sleeps: list[float] = []
    client = ArkClient(BASE, sleep=sleeps.append)
    assert client.get_task("cgt-1", KEY)["status"] == "running"
    assert client.delete_task("cgt-1", KEY) == {}
    assert [c.request.method for c in ark.calls] == ["GET", "GET", "DELETE", "DELETE"]
    # 0.5 s plus up to 25 % jitter
    assert len(sleeps) == 2 and all(0.5 <= s <= 0.625 for s in sleeps)


def test_retries_stop_after_four_attempts_and_the_error_keeps_its_request_id(
    ark: Any,
) -> None:
    ark.get(
        f"{TASKS}/cgt-1",
        status=502,
        json={"error": {"code": "BadGateway", "message": "down. Request id: 0217z"}},
    )
    sleeps: list[float] = []
    with pytest.raises(ArkAPIError) as raised:
        ArkClient(BASE, sleep=sleeps.append).get_task("cgt-1", KEY)
    assert (
        len(ark.calls) == 4
        and raised.value.request_id == "0217z"
        and raised.value.status == 502
    )
    assert [
        round(s / base, 2) <= 1.25 and s >= base
        for s, base in zip(sleeps, (0.5, 1, 2), strict=False)
    ] == [True] * 3


@pytest.mark.parametrize(
    "header, slept", [("7", 7.0), ("0", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)]
)
def test_retry_after_is_honoured(ark: Any, header: str, slept: float) -> None:
    ark.get(f"{TASKS}/cgt-1", headers={"Retry-After": header}, **ARK_429)
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "queued"})
    sleeps: list[float] = []
    ArkClient(BASE, sleep=sleeps.append).get_task("cgt-1", KEY)
    assert sleeps == [slept]


def test_no_retry_starts_more_than_30_s_after_the_first_try(ark: Any) -> None:
    now = [0.0]

    def hung(request: Any) -> Any:
        # Each try waits out its read timeout
        now[0] += doubao_mcp.TASK_READ_TIMEOUT_SECONDS
        raise requests.ReadTimeout("read timed out")

    ark.add_callback("GET", f"{TASKS}/cgt-1", callback=hung)
    client = ArkClient(
        BASE,
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
        clock=lambda: now[0],
    )
    with pytest.raises(
        doubao_mcp.ArkConnectionError,
        match=r"no answer within 15 s\. Try again in a moment\.",
    ):
        client.get_task("cgt-1", KEY)
    # 15 s, a short pause, 15 s: then the caller hears about it
    assert len(ark.calls) == 2 and now[0] < 31


def test_a_retry_after_longer_than_30_s_is_reported_not_slept(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", headers={"Retry-After": "120"}, **ARK_429)
    sleeps: list[float] = []
    with pytest.raises(ArkAPIError, match="429 RateLimitExceeded"):
        ArkClient(BASE, sleep=sleeps.append).get_task("cgt-1", KEY)
    assert len(ark.calls) == 1 and sleeps == []


@pytest.mark.parametrize(
    "failure",
    [
        ARK_500,
        {"status": 502, "body": ""},
        {"body": requests.ReadTimeout("slow")},
        {"body": requests.ConnectionError("Connection aborted")},
    ],
)
def test_a_post_that_may_have_reached_ark_is_never_repeated(
    ark: Any, failure: dict[str, Any]
) -> None:
    ark.post(TASKS, **failure)
    sleeps: list[float] = []
    with pytest.raises(doubao_mcp.DoubaoError):
        ArkClient(BASE, sleep=sleeps.append).create_task(
            {"model": "m", "content": []}, KEY
        )
    assert len(ark.calls) == 1 and sleeps == []


@pytest.mark.parametrize(
    "failure", [ARK_429, {"body": refused()}, {"body": requests.ConnectTimeout("slow")}]
)
def test_a_post_ark_cannot_have_acted_on_is_retried(
    ark: Any, failure: dict[str, Any]
) -> None:
    ark.post(TASKS, **failure)
    ark.post(TASKS, json={"id": "cgt-1"})
    assert ArkClient(BASE, sleep=lambda s: None).create_task(
        {"model": "m", "content": []}, KEY
    ) == {"id": "cgt-1"}
    assert len(ark.calls) == 2 and sent_json(ark, 0) == sent_json(ark, 1)


def test_x_should_retry_decides_before_the_status_rules(ark: Any) -> None:
    client = ArkClient(BASE, sleep=lambda seconds: None)
    # A POST 500 is otherwise never retried
    ark.post(TASKS, status=500, json={}, headers={"x-should-retry": "true"})
    ark.post(TASKS, json={"id": "cgt-1"})
    assert client.create_task({"model": "m"}, KEY) == {"id": "cgt-1"}
    ark.get(f"{TASKS}/cgt-1", status=503, json={}, headers={"x-should-retry": "false"})
    with pytest.raises(ArkAPIError):
        client.get_task("cgt-1", KEY)
    assert [call.request.method for call in ark.calls] == ["POST", "POST", "GET"]


@pytest.mark.parametrize(
    "route, fault, tool, arguments, expected",
    [
        # The body trickles
        (
            ("GET", TASKS_ROUTE),
            trickle(TRICKLED_TASK, 0.05),
            "query_video_task",
            {"task_id": "cgt-done"},
            "no complete answer within 1 s",
        ),
        # Every poll trickles: the wait still ends, with the new task's id
        (
            ("GET", TASKS_ROUTE),
            trickle(TRICKLED_TASK, 0.05),
            "generate_video",
            {"prompt": "a fox", "wait_seconds": 2},
            "Checking the task",
        ),
        # The status line itself trickles
        (
            ("POST", IMAGES_ROUTE),
            trickle(raw_response(200, b'{"data": []}'), 0.3),
            "generate_image",
            {"prompt": "a"},
            "no complete answer within 1 s",
        ),
    ],
)
async def test_every_ark_request_has_an_overall_deadline(
    route: Any, fault: Any, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    """An answer that sends one byte at a time, each well within the read timeout, ends at the call's deadline:
    ARK_TIMEOUT for an image, the task deadline for a task call, wait_seconds plus one poll for a wait."""
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="running")
        fake.faults[route] = fault
        config = replace(
            small_lanes(fake, task_deadline=1.0),
            image_timeout=1.0,
            poll_intervals=(0.1, 0.1),
        )
        with anyio.fail_after(20):
            result = await call(tool, arguments, config)
    text = result.content[0].text
    assert expected in text and KEY not in text
    # The task id comes back, with what is known
    if arguments.get("wait_seconds"):
        assert (
            result.structured_content["task_id"] == "cgt-fake-2"
            and "no complete answer within 1 s" in text
        )


# --- Answers: read within a cap, parsed, redacted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, expected",
    [
        (
            answer(200, b"{}", length=500 * 2**20),
            "Ark's answer is over 8.0 MB, more than any API answer: refused unread",
        ),
        # No warning in its length: refused once 8 MB have come
        (
            answer(
                200,
                b'{"id": "cgt-done", "status": "running", "x": "'
                + b"y" * (9 * 2**20)
                + b'"}',
            ),
            "Ark's answer is over 8.0 MB",
        ),
        (answer(200, NESTED), "not a JSON object"),
        (
            answer(
                200, '{"id": "cgt-done", "status": "running", "usage": ' + NESTED + "}"
            ),
            "not a JSON object",
        ),
    ],
)
async def test_huge_and_deeply_nested_answers_are_refused_with_a_clear_error(
    fault: Any, expected: str
) -> None:
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="running")
        fake.faults[("GET", TASKS_ROUTE)] = fault
        result = await call(
            "query_video_task",
            {"task_id": "cgt-done"},
            Config(api_key=KEY, base_url=fake.url),
        )
    assert expected in error_text(result)


async def test_a_malformed_item_in_arks_list_leaves_the_others_listed(ark: Any) -> None:
    """Item 13."""
    ark.get(
        TASKS,
        json={
            "total": 3,
            "items": [
                SUCCEEDED_TASK,
                {"id": 42, "status": None},
                {"id": "cgt-2", "status": "running"},
            ],
        },
    )
    listed = await call("list_video_tasks", {})
    assert [t["task_id"] for t in listed.structured_content["tasks"]] == [
        TASK_ID,
        "cgt-2",
    ]


# --- Redaction: no key leaves through an answer, an error or a log line, in any of its forms --------------------------


async def test_an_error_page_echoing_the_key_is_redacted(ark: Any) -> None:
    ark.get(
        f"{TASKS}/cgt-1", status=502, body=f"<pre>Authorization: Bearer {KEY}</pre>"
    )
    text = error_text(await call("query_video_task", {"task_id": "cgt-1"}))
    assert "Bearer ***" in text and KEY not in text


@pytest.mark.parametrize(
    "route, fault, tool",
    [
        # An image result without data
        (
            ("POST", IMAGES_ROUTE),
            answer(200, json.dumps({"oops": ECHO})),
            IMAGE_CALL,
        ),
        # A task without an id
        (
            ("GET", TASKS_ROUTE),
            answer(200, json.dumps({"status": ECHO})),
            QUERY_CALL,
        ),
        (
            ("GET", TASKS_ROUTE),
            answer(200, json.dumps({"items": ECHO})),
            ("list_video_tasks", {}),
        ),
        (
            ("POST", TASKS_ROUTE),
            answer(
                400,
                json.dumps({"error": {"code": ECHO, "param": ECHO, "message": "m"}}),
            ),
            VIDEO_CALL,
        ),
        (("POST", TASKS_ROUTE), answer(400, "{}", X_Request_Id=ECHO), VIDEO_CALL),
    ],
)
async def test_the_key_never_leaves_through_an_answer_that_echoes_it(
    route: Any, fault: Any, tool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeArk() as fake:
        fake.faults[route] = fault
        result = await call(*tool, Config(api_key=KEY, base_url=fake.url))
    assert result.is_error and "***" in result.content[0].text
    # The SDK logs tool errors at INFO
    assert KEY not in result.content[0].text and KEY not in caplog.text


@pytest.mark.parametrize(
    "key, body, content_type",
    [
        (
            KEY,
            json.dumps(
                {
                    "error": {
                        "code": "InvalidParameter",
                        "message": "bad key "
                        + "".join(f"\\u{ord(c):04x}" for c in KEY),
                    }
                }
            ).replace("\\\\u", "\\u"),
            "application/json",
        ),
        (
            SLASHY,
            json.dumps(
                {"error": {"code": "InvalidParameter", "message": f"bad key {SLASHY}"}}
            ),
            "application/json",
        ),
        (
            SLASHY,
            "<html><p>Authorization: Bearer "
            + SLASHY.replace("/", "\\/").replace('"', "&quot;")
            + "</p></html>",
            "text/html",
        ),
        (
            KEY,
            '{"error": {"message": "truncated, echoing ' + KEY.replace("-", "\\u002d"),
            "application/json",
        ),
    ],
)
async def test_an_upstream_echoing_the_key_in_any_escape_never_gets_it_into_an_error(
    fake_ark: FakeArk, key: str, body: str, content_type: str
) -> None:
    """Item 5: redaction on meaning, not bytes."""
    fake_ark.faults[("POST", TASKS_ROUTE)] = answer(400, body, content_type)
    async with Client(
        make_server(Config(api_key=key, base_url=fake_ark.url))
    ) as client:
        text = error_text(await client.call_tool("generate_video", {"prompt": "a fox"}))
    assert key not in text and key[4:16] not in text and "***" in text, text
    assert "\\u" not in text and json.dumps(key)[1:-1] not in text


async def test_a_redirect_carrying_the_key_is_redacted_in_save_errors_and_the_log(
    fake_ark: FakeArk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_ark.add_task("cgt-done", status="succeeded")
    fake_ark.faults[("GET", "/files/")] = answer(
        302, "", "text/plain", Location=f"ftp://127.0.0.1/{KEY}/x.mp4"
    )
    async with Client(
        make_server(Config(api_key=KEY, base_url=fake_ark.url))
    ) as client:
        result = await client.call_tool(
            "query_video_task", {"task_id": "cgt-done", "save_dir": str(tmp_path)}
        )
    assert (
        "redirected to a URL that is not http(s)"
        in result.structured_content["save_errors"][0]["error"]
    )
    assert (
        KEY not in result.content[0].text
        and KEY not in caplog.text
        and "***" in caplog.text
    )


def test_a_key_that_is_a_common_string_never_mangles_ids_urls_or_prompts() -> None:
    """Item 13: a short key (no real Ark key is short) leaves a result alone and is redacted from errors as a whole
    word only; a realistic key (sk- and 32 hex) is redacted anywhere and is never found by accident."""
    realistic = "sk-" + "0123456789abcdef" * 2
    result = json.dumps(
        {
            "model": "doubao-seedream-4-5-251128",
            "data": [{"url": "https://cdn.test/seedream/1.png"}],
            "revised_prompt": "seedream draws",
            "echo": realistic,
        }
    )
    parsed = doubao_mcp.parse_answer(
        doubao_mcp.Answer(200, "OK", {}, result.encode()),
        IMAGES,
        ["seedream", realistic],
        "r",
    )
    assert parsed == {
        "model": "doubao-seedream-4-5-251128",
        "data": [{"url": "https://cdn.test/seedream/1.png"}],
        "revised_prompt": "seedream draws",
        "echo": "***",
    }
    refusal = json.dumps(
        {
            "error": {
                "code": "AuthenticationError",
                "message": "key seedream is not doubao-seedream",
            }
        }
    )
    with pytest.raises(ArkAPIError) as error:
        doubao_mcp.parse_answer(
            doubao_mcp.Answer(401, "", {}, refusal.encode()), IMAGES, ["seedream"], "r"
        )
    assert error.value.message == "key *** is not doubao-seedream"
    assert (
        doubao_mcp.redact(f"id cgt-1 url https://x/{realistic}?a=1", [realistic])
        == "id cgt-1 url https://x/***?a=1"
    )


@pytest.mark.parametrize("form", KEY_FORMS.values(), ids=KEY_FORMS.keys())
async def test_no_form_of_the_key_gets_through_an_echo(
    fake_ark: FakeArk, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 23, item 8."""
    caplog.set_level(logging.INFO)
    fake_ark.faults[("POST", TASKS_ROUTE)] = ark_error(
        400, "InvalidParameter", f"bad header {form} given"
    )
    async with Client(
        make_server(Config(api_key=KEY, base_url=fake_ark.url))
    ) as client:
        text = error_text(await client.call_tool("generate_video", {"prompt": "a fox"}))
    assert "bad header *** given" in text, text
    assert form not in caplog.text and "bad header *** given" in caplog.text


def test_what_the_caller_sent_is_never_what_marks_a_key() -> None:
    """Issue 23, item 9: redaction must not confirm a guess."""
    other = "ark-other-caller-9d2e4f60-1b7c-4a3d-8e5f"
    for guess in (other, other[:25], KEY, "ark-just-a-guess-0000-1111-2222-3333"):
        message = f"The model or endpoint {guess} does not exist"
        assert (
            doubao_mcp.redact(message, [KEY, other], sent=f"model\n{guess}") == message
        )
    assert (
        doubao_mcp.redact(f"endpoint {other} does not exist", [KEY, other])
        == "endpoint *** does not exist"
    )


# --- Results: what a caller gets back, every upstream string cleaned and bounded --------------------------------------


async def test_what_goes_into_a_result_is_bounded_and_clean(ark: Any) -> None:
    hostile = "\u202eevil\u202c\x1b[31mred\x00" + "m" * 2**20
    ark.get(
        f"{TASKS}/cgt-1",
        json={
            "id": "cgt-1",
            "status": "failed",
            "model": hostile,
            "error": {"code": hostile, "message": hostile},
            "content": {
                "video_url": "javascript:alert(1)",
                "last_frame_url": "file:///etc/passwd",
            },
            "usage": {
                "total_tokens": 10,
                "nested": {"deeper": {"deepest": 1}},
                "text": "x",
                **{f"k{i}": i for i in range(99)},
            },
        },
    )
    result = await call("query_video_task", {"task_id": "cgt-1"})
    task = result.structured_content
    assert len(result.content[0].text) < 6000
    # Marked as cut
    assert task["model"].startswith("evil [31mred m") and task["model"].endswith("m…")
    assert len(task["model"]) == doubao_mcp.NAME_MAX_CHARS
    assert len(task["error_message"]) == doubao_mcp.MESSAGE_MAX_CHARS
    assert not re.search(
        "[\x00-\x1f\u202a-\u202e]", json.dumps(task, ensure_ascii=False)
    )
    # Only http(s) URLs
    assert "video_url" not in task and "last_frame_url" not in task
    assert (
        task["usage"]["total_tokens"] == 10
        and len(task["usage"]) <= 32
        and "text" not in task["usage"]
    )


async def test_a_record_for_another_task_is_never_passed_on(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-mine", json={**SUCCEEDED_TASK, "id": "cgt-someone-elses"})
    ark.get(
        TASKS,
        json={
            "total": 2,
            "items": [
                {**SUCCEEDED_TASK, "id": "cgt-mine"},
                {**SUCCEEDED_TASK, "id": "cgt-someone-elses"},
            ],
        },
    )
    text = error_text(await call("query_video_task", {"task_id": "cgt-mine"}))
    listing = (
        await call("list_video_tasks", {"task_ids": ["cgt-mine"]})
    ).structured_content
    assert (
        "the record of task 'cgt-someone-elses' when asked for 'cgt-mine': not passed on"
        in text
    )
    assert [task["task_id"] for task in listing["tasks"]] == ["cgt-mine"] and listing[
        "total"
    ] == 1


async def test_a_task_view_keeps_the_new_fields_and_nested_usage(ark: Any) -> None:
    ark.get(
        f"{TASKS}/cgt-1",
        json={
            **SUCCEEDED_TASK,
            "id": "cgt-1",
            "revised_prompt": "A red fox ...",
            "draft": True,
            "draft_task_id": "cgt-0",
            "generate_audio": False,
            "output_format": "mov",
            "execution_expires_after": 3600,
            "usage": {"completion_tokens": 10, "tool_usage": {"web_search": 1}},
        },
    )
    task = (await call("query_video_task", {"task_id": "cgt-1"})).structured_content
    assert {
        k: task[k]
        for k in (
            "revised_prompt",
            "draft",
            "draft_task_id",
            "generate_audio",
            "output_format",
            "execution_expires_after",
            "usage",
        )
    } == {
        "revised_prompt": "A red fox ...",
        "draft": True,
        "draft_task_id": "cgt-0",
        "generate_audio": False,
        "output_format": "mov",
        "execution_expires_after": 3600,
        "usage": {"completion_tokens": 10, "tool_usage": {"web_search": 1}},
    }


async def test_image_layers_keep_their_names_and_boxes(ark: Any) -> None:
    box = {"absolute": [0, 0, 512, 512], "normalized": [0, 0, 0.5, 0.5]}
    ark.post(
        IMAGES,
        json={
            "data": [
                {"url": "https://cdn.test/base.png", "size": "1024x1024"},
                {
                    "url": "https://cdn.test/l1.png",
                    "name": "sky",
                    "description": "blue sky",
                    "z_index": 1,
                    "bounding_box": box,
                },
            ]
        },
    )
    result = await call(
        "generate_image",
        {"prompt": "layers", "model": "doubao-seedream-5-0-pro-260628"},
    )
    assert result.structured_content["images"][1] == {
        "index": 1,
        "url": "https://cdn.test/l1.png",
        "name": "sky",
        "description": "blue sky",
        "z_index": 1,
        "bounding_box": box,
    }


# --- The task record: no video is lost --------------------------------------------------------------------------------


def test_the_record_is_four_private_tables_in_wal_mode(tmp_path: Path) -> None:
    """The tasks, and beside them the day's spend (see The spend ledger) and what was uploaded (see Uploads)."""
    record = doubao_mcp.Record(tmp_path / "state", BASE)
    with contextlib.closing(sqlite3.connect(record.path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(tasks)")]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        # "DBMC": ours
        assert db.execute("PRAGMA application_id").fetchone() == (0x44424D43,)
        assert [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ] == ["tasks", "spend", "uploads", "people"]
    assert columns == [
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
        "complete",
    ]
    if os.name == "posix":
        assert (
            record.path.stat().st_mode & 0o777,
            (tmp_path / "state").stat().st_mode & 0o777,
        ) == (0o600, 0o700)
    # Opening it again changes nothing
    doubao_mcp.Record(tmp_path / "state", BASE)


async def test_the_record_never_holds_a_key(ark: Any, tmp_path: Path) -> None:
    ark.post(TASKS, json={"id": "cgt-1"})
    ark.get(
        f"{TASKS}/cgt-1",
        json={
            "id": "cgt-1",
            "status": "failed",
            "error": {
                "code": "OutputVideoSensitiveContentDetected",
                "message": f"echoing Bearer {KEY}",
            },
        },
    )
    server, _record = record_server(tmp_path)
    async with Client(server) as client:
        await client.call_tool(
            "generate_video",
            {
                "prompt": "a fox",
                "callback_url": f"https://hook.test/?token={KEY}",
                "save_dir": str(tmp_path),
            },
        )
        failed = await client.call_tool("query_video_task", {"task_id": "cgt-1"})
    assert failed.structured_content["status"] == "failed"
    row = rows(tmp_path / "state")["cgt-1"]
    assert row["status"] == "failed" and row["error"].startswith(
        "OutputVideoSensitiveContentDetected"
    )
    stored = b"".join(path.read_bytes() for path in (tmp_path / "state").iterdir())
    assert (
        b"cgt-1" in stored
        and KEY.encode() not in stored
        and KEY[4:20].encode() not in stored
    )


def test_a_version_1_record_is_migrated_and_its_half_saved_task_counts_as_unsaved(
    tmp_path: Path,
) -> None:
    """Item 3: our own older schema is brought up to date, its file kinds read once from the v1 names."""
    (tmp_path / "state").mkdir()
    with contextlib.closing(
        sqlite3.connect(tmp_path / "state" / "tasks.sqlite3")
    ) as db:
        db.executescript(V1_SCHEMA)
        for task_id, files in (
            ("cgt-whole", ["cgt-whole.mp4", "cgt-whole-last-frame.png"]),
            ("cgt-half", ["cgt-half-last-frame.png"]),
        ):
            db.execute(
                "INSERT INTO tasks (task_id, base_url, owner, save_dir, status, video_url, last_frame_url, "
                "created, updated, finished, files) VALUES (?, ?, 'me', ?, 'succeeded', 'https://v', "
                "'https://f', ?, ?, ?, ?)",
                (
                    task_id,
                    BASE,
                    str(tmp_path),
                    time.time(),
                    time.time(),
                    time.time(),
                    json.dumps([{"path": f, "bytes": 1} for f in files]),
                ),
            )
        db.commit()
    record = doubao_mcp.Record(tmp_path / "state", BASE)
    found = rows(tmp_path / "state")
    assert [f["kind"] for f in json.loads(found["cgt-whole"]["files"])] == [
        "video",
        "last_frame",
    ]
    assert (found["cgt-whole"]["complete"], found["cgt-half"]["complete"]) == (1, 0)
    assert record.orphans("me") == [("cgt-half", str(tmp_path))]
    with contextlib.closing(sqlite3.connect(record.path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_an_existing_open_state_folder_is_made_private(tmp_path: Path) -> None:
    """Item 13: prompts and paths live there."""
    (tmp_path / "state").mkdir(mode=0o777)
    os.chmod(tmp_path / "state", 0o777)
    doubao_mcp.Record(tmp_path / "state", BASE)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


async def test_a_poisoned_files_column_is_read_as_nothing_saved_and_the_video_is_saved(
    ark: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, record = record_server(tmp_path)
    poison(
        tmp_path / "state",
        {"task_id": TASK_ID, "files": "{", "complete": 1},
        {
            "task_id": "cgt-other",
            "files": json.dumps([{"path": 3, "bytes": "many"}]),
            "complete": 1,
        },
    )
    finished_task_and_files(ark)
    async with Client(server) as client:
        saved = await client.call_tool(
            "query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path / "out")}
        )
    task = saved.structured_content
    assert not saved.is_error and [f["kind"] for f in task["saved_files"]] == [
        "video",
        "last_frame",
    ], task
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{TASK_ID}-last-frame.png",
        f"{TASK_ID}.mp4",
    ]
    assert "holds files of cgt-20250331175019-6htr8 that cannot be read" in caplog.text
    # A row of another shape: nothing trusted
    assert record.files_of(["cgt-other"])["cgt-other"].files == []


def test_a_resume_skips_rows_it_cannot_read(tmp_path: Path) -> None:
    record = doubao_mcp.Record(tmp_path / "state", BASE)
    owner = doubao_mcp.key_fingerprint(KEY) or ""
    now = time.time()
    poison(
        tmp_path / "state",
        {
            "task_id": "cgt-ok",
            "status": "running",
            "save_dir": str(tmp_path),
            "created": now,
        },
        {
            "task_id": "cgt-folder",
            "status": "running",
            "save_dir": sqlite3.Binary(b"/x"),
            "created": now,
        },
        {
            "task_id": "cgt-stamp",
            "status": "running",
            "save_dir": str(tmp_path),
            "created": now,
            "watcher": "x@y",
            "watched": "soon",
        },
        {
            "task_id": "../../etc",
            "status": "running",
            "save_dir": str(tmp_path),
            "created": now,
        },
    )
    assert record.orphans(owner) == [("cgt-ok", str(tmp_path))]


# --- Downloads: only a real image or video is saved, from public addresses --------------------------------------------


async def test_a_quicktime_result_is_saved_as_mov_and_a_png_image_as_png(
    ark: Any, tmp_path: Path
) -> None:
    # The type header is not trusted
    finished_task_and_files(ark, {"body": MOV_BYTES, "content_type": "video/mp4"})
    ark.post(
        IMAGES,
        json={"data": [{"url": "https://cdn.test/poster", "output_format": "png"}]},
    )
    ark.get(
        "https://cdn.test/poster", body=PNG, content_type="application/octet-stream"
    )
    task = (
        await call("query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)})
    ).structured_content
    image = (
        await call(
            "generate_image",
            {"prompt": "a poster", "output_format": "png", "save_dir": str(tmp_path)},
        )
    ).structured_content
    assert task["saved_files"][0]["path"] == str(tmp_path.resolve() / f"{TASK_ID}.mov")
    assert Path(task["saved_files"][0]["path"]).read_bytes() == MOV_BYTES
    assert image["saved_files"][0]["path"].endswith("-0.png")


async def test_saving_never_overwrites_an_existing_file(
    ark: Any, tmp_path: Path
) -> None:
    write(tmp_path / f"{TASK_ID}.mp4", b"my own video")
    finished_task_and_files(ark)
    task = (
        await call("query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)})
    ).structured_content
    assert task["saved_files"][0]["path"] == str(
        tmp_path.resolve() / f"{TASK_ID}-1.mp4"
    )
    assert (tmp_path / f"{TASK_ID}.mp4").read_bytes() == b"my own video"


@pytest.mark.parametrize(
    "video, error",
    [
        ({"status": 404}, "the download answered HTTP 404"),
        ({"body": VIDEO_BYTES, "content_type": "video/mp4"}, "download cap"),
        (
            {"body": requests.ConnectionError("Connection aborted")},
            "Connection aborted",
        ),
    ],
)
async def test_a_failed_download_leaves_no_file_and_the_rest_still_comes_back(
    ark: Any, tmp_path: Path, video: dict[str, Any], error: str
) -> None:
    finished_task_and_files(ark, video)
    config = fast_polls(max_download_bytes=len(VIDEO_BYTES) - 1)
    result = await call(
        "query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)}, config
    )
    task = result.structured_content
    assert not result.is_error and task["video_url"] == VIDEO_URL
    assert (
        task["save_errors"][0]["source"] == VIDEO_URL
        and error in task["save_errors"][0]["error"]
    )
    assert [f["path"] for f in task["saved_files"]] == [
        str(tmp_path.resolve() / f"{TASK_ID}-last-frame.png")
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TASK_ID}-last-frame.png"]


def test_files_stream_into_a_hidden_part_file_and_appear_only_when_complete(
    tmp_path: Path,
) -> None:
    during: list[list[str]] = []

    def chunks() -> Any:
        for chunk in (VIDEO_BYTES[:100], VIDEO_BYTES[100:5000], VIDEO_BYTES[5000:]):
            yield chunk
            during.append([p.name for p in tmp_path.iterdir()])

    saved = doubao_mcp.write_file(
        doubao_mcp.open_folder(tmp_path, None), "cgt-1", chunks(), "video", 10**6
    )
    assert saved == {
        "path": str(tmp_path / "cgt-1.mp4"),
        "bytes": len(VIDEO_BYTES),
        "sha256": sha256(VIDEO_BYTES),
    }
    assert all(
        len(names) == 1
        and names[0].startswith(".cgt-1.")
        and names[0].endswith(".part")
        for names in during
    )
    assert [p.name for p in tmp_path.iterdir()] == ["cgt-1.mp4"]


def test_at_exit_a_download_that_started_loses_its_part_file_and_one_that_starts_later_makes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exit and a download's daemon thread race: stdin closing while the download's answer arrives left a .part
    file behind when the file was made just after the exit had removed the others."""
    # This process goes on after the "exit", and other tests' downloads in it keep their part files.
    monkeypatch.setattr(doubao_mcp, "PARTS_ENDED", threading.Event())
    monkeypatch.setattr(doubao_mcp, "LIVE_PARTS", set())
    folder = doubao_mcp.open_folder(tmp_path, None)
    exited = threading.Event()

    def chunks() -> Any:
        yield VIDEO_BYTES[:100]
        # The client closed stdin mid-download.
        doubao_mcp.remove_live_parts()
        exited.set()
        assert [p.name for p in tmp_path.iterdir()] == []
        yield VIDEO_BYTES[100:]

    # Its thread ran on until the end, its file gone: nothing is left.
    with pytest.raises(FileNotFoundError):
        doubao_mcp.write_file(folder, "cgt-1", chunks(), "video", 10**6)
    with pytest.raises(doubao_mcp.DoubaoError, match="the server is stopping"):
        doubao_mcp.write_file(folder, "cgt-2", iter([VIDEO_BYTES]), "video", 10**6)
    assert exited.is_set() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "chunks, error",
    [
        ([VIDEO_BYTES, VIDEO_BYTES], "larger than the"),
        (iter([VIDEO_BYTES[:10], requests.ConnectionError("dropped")]), "dropped"),
    ],
)
def test_a_stream_that_fails_midway_leaves_nothing(
    tmp_path: Path, chunks: Any, error: str
) -> None:
    def produce() -> Any:
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    with pytest.raises(Exception, match=error):
        doubao_mcp.write_file(
            doubao_mcp.open_folder(tmp_path, None),
            "cgt-1",
            produce(),
            "video",
            len(VIDEO_BYTES) + 1,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", DOWNLOAD_FAULTS)
async def test_download_faults_leave_no_file_and_keep_the_result(
    case: str, tmp_path: Path
) -> None:
    fault, expected = DOWNLOAD_FAULTS[case]
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="succeeded")
        fake.faults[("GET", "/files/")] = fault
        async with Client(
            make_server(Config(api_key=KEY, base_url=fake.url))
        ) as client:
            result = await client.call_tool(
                "query_video_task", {"task_id": "cgt-done", "save_dir": str(tmp_path)}
            )
            following = await client.call_tool("list_video_tasks", {})
    task = result.structured_content
    assert (
        not result.is_error
        and task["status"] == "succeeded"
        and task["video_url"].startswith(fake.root)
    )
    assert (
        task["save_errors"][0]["source"] == task["video_url"]
        and expected in task["save_errors"][0]["error"]
    )
    assert "saved_files" not in task and list(tmp_path.iterdir()) == []
    assert not following.is_error and KEY not in result.content[0].text


@pytest.mark.parametrize(
    "fault, limits, expected",
    [
        (
            endless_video(0.05, b"x"),
            {"download_min_rate": 1024, "rate_window": 0.5},
            "slower than 1 KB/s for 0.5 s",
        ),
        (
            endless_video(0.02, bytes(64 * 1024)),
            {"download_deadline": 1.0},
            "no complete answer within 1 s",
        ),
    ],
)
async def test_a_download_ends_at_its_deadline_or_below_its_minimum_rate(
    tmp_path: Path, fault: Any, limits: dict[str, Any], expected: str
) -> None:
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="succeeded")
        fake.faults[("GET", "/files/")] = fault
        with anyio.fail_after(20):
            result = await call(
                "query_video_task",
                {"task_id": "cgt-done", "save_dir": str(tmp_path)},
                small_lanes(fake, **limits),
            )
    task = result.structured_content
    assert (
        task["status"] == "succeeded" and expected in task["save_errors"][0]["error"]
    ), task
    # No .part file outlives its download
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fault, expected",
    [
        # Another local service's JSON
        (
            lambda fake: answer(
                302, "", "text/plain", Location=f"{fake.url}/contents/generations/tasks"
            ),
            "the download is not a video",
        ),
        (
            lambda fake: answer(
                302, "", "text/plain", Location=f"{fake.root}/files/loop.mp4"
            ),
            "more than 5 redirects",
        ),
    ],
)
async def test_only_a_real_video_is_saved_after_a_bounded_number_of_redirects(
    tmp_path: Path, fault: Any, expected: str
) -> None:
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="succeeded")
        fake.faults[("GET", "/files/")] = fault(fake)
        task = (
            await call(
                "query_video_task",
                {"task_id": "cgt-done", "save_dir": str(tmp_path)},
                Config(api_key=KEY, base_url=fake.url),
            )
        ).structured_content
    assert expected in task["save_errors"][0]["error"] and "saved_files" not in task
    assert list(tmp_path.iterdir()) == []


async def test_result_urls_and_redirects_into_loopback_services_are_refused(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Item 10: another port on the same loopback host is another service, reached neither directly, nor through a
    redirect from Ark's own origin, nor for a preview; the operator can allow it with DOUBAO_MEDIA_DOMAINS."""
    with SecretService() as secret:
        fake_ark.faults[("GET", f"{TASKS_ROUTE}/cgt-direct")] = answer(
            200,
            json.dumps(
                {
                    "id": "cgt-direct",
                    "status": "succeeded",
                    "content": {"video_url": f"{secret.url}/v.mp4"},
                }
            ),
        )
        fake_ark.faults[("GET", "/files/cgt-redirected")] = answer(
            302, "", Location=f"{secret.url}/v.mp4"
        )
        fake_ark.add_task("cgt-redirected", status="succeeded")
        fake_ark.faults[("POST", IMAGES_ROUTE)] = answer(
            200, json.dumps({"data": [{"url": f"{secret.url}/i.png"}]})
        )
        config = Config(api_key=KEY, base_url=fake_ark.url, previews=True)
        async with Client(make_server(config)) as client:
            direct = await client.call_tool(
                "query_video_task", {"task_id": "cgt-direct", "save_dir": str(tmp_path)}
            )
            redirected = await client.call_tool(
                "query_video_task",
                {"task_id": "cgt-redirected", "save_dir": str(tmp_path)},
            )
            image = await client.call_tool("generate_image", {"prompt": "a fox"})
        hits_before_allowing = list(secret.hits)
        with pytest.raises(
            doubao_mcp.DoubaoError, match=r"not an image \(no known file type\)"
        ) as refused:
            doubao_mcp.fetch_file(
                ArkClient(fake_ark.url, media_domains=[secret.url]),
                f"{secret.url}/allowed.png",
                "image",
                5,
            )
    # Allowed: fetched, then refused as
    assert hits_before_allowing == [] and secret.hits == ["/allowed.png"]
    # No image, and what it said is never quoted
    assert "SECRET" not in str(refused.value)
    for result in (direct, redirected):
        error = result.structured_content["save_errors"][0]["error"]
        assert (
            "127.0.0.1 is at 127.0.0.1, a loopback address" in error
            and "SECRET" not in result.content[0].text
        )
    # No preview from there
    assert [item.type for item in image.content] == ["text"]
    assert list(tmp_path.iterdir()) == []


def test_the_address_connected_to_is_checked_too(
    fake_ark: FakeArk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 10: a name that looked public when checked and is loopback when connected (DNS rebinding) is refused
    at the connection, before a request is sent."""
    with SecretService() as secret:
        client = ArkClient(fake_ark.url)
        monkeypatch.setattr(
            client.media,
            "check",
            lambda url: partial(client.media.refuse_address, "127.0.0.1"),
        )
        with pytest.raises(doubao_mcp.DoubaoError, match="a loopback address"):
            doubao_mcp.fetch_file(client, f"{secret.url}/rebound.png", "image", 5)
    assert secret.hits == []
    policy = doubao_mcp.MediaPolicy(BASE, ["https://*.volces.com"])
    assert "link-local" in policy.refuse_address(
        "meta.test", "meta.test", "169.254.169.254"
    )
    assert "loopback" in policy.refuse_address("v6.test", "v6.test", "::ffff:127.0.0.1")
    assert "private" in policy.refuse_address("lan.test", "lan.test", "192.168.1.20")
    assert policy.refuse_address("cdn.test", "cdn.test", "93.184.216.34") is None
    # The proxy resolves the name
    assert policy.refuse_address("cdn.test", "proxy.local", "127.0.0.1") is None
    assert policy.check("https://ark-content.tos-cn-beijing.volces.com/v.mp4") is None


# --- Previews: a small JPEG of each image a result shows --------------------------------------------------------------


async def test_a_preview_is_fetched_within_the_download_caps(ark: Any) -> None:
    ark.post(
        IMAGES,
        json={
            "data": [
                {"url": "https://cdn.test/huge.png"},
                {"url": "https://cdn.test/fine.png"},
            ]
        },
    )
    ark.get(
        "https://cdn.test/huge.png",
        body=PICTURE + bytes(41 * 2**20),
        content_type="image/png",
    )
    ark.get("https://cdn.test/fine.png", body=PICTURE, content_type="image/png")
    result = await call(
        "generate_image",
        {"prompt": "a", "max_images": 2},
        replace(Config.from_env(), previews=True),
    )
    assert len(jpegs(result)) == 1 and len(result.structured_content["images"]) == 2


async def test_two_image_calls_in_one_second_into_one_folder_each_preview_their_own_images(
    ark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 11: the same time stamp makes the second call's names doubao-<t>-0-1, doubao-<t>-1-1."""
    from PIL import Image

    monkeypatch.setattr(doubao_mcp.time, "strftime", lambda *args: "20261130-120000")
    colours = {
        f"https://cdn.test/{which}{i}.png": (
            255 * (which == "b"),
            60 * i,
            255 * (which == "a"),
        )
        for which in "ab"
        for i in range(2)
    }
    for url, colour in colours.items():
        out = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(out, "PNG")
        ark.get(url, body=out.getvalue(), content_type="image/png")
    for which in "ab":
        ark.post(
            IMAGES,
            json={
                "data": [{"url": f"https://cdn.test/{which}{i}.png"} for i in range(2)]
            },
        )
    config = replace(Config.from_env(), previews=True)
    results = [
        await call(
            "generate_image",
            {"prompt": "p", "max_images": 2, "save_dir": str(tmp_path)},
            config,
        )
        for _ in "ab"
    ]
    for call_name, result in zip("ab", results, strict=False):
        shown = [image.convert("RGB").getpixel((32, 32)) for image in jpegs(result)]
        wanted = [colours[f"https://cdn.test/{call_name}{i}.png"] for i in range(2)]
        assert all(
            max(abs(s - w) for s, w in zip(got, want, strict=False)) < 12
            for got, want in zip(shown, wanted, strict=False)
        ), shown
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "doubao-20261130-120000-0-1.png",
        "doubao-20261130-120000-0.png",
        "doubao-20261130-120000-1-1.png",
        "doubao-20261130-120000-1.png",
    ]


def test_a_decompression_bomb_is_refused_from_its_header_before_any_pixel_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 4: 11580x11580 is under twice Pillow's own limit, where Pillow only warns."""
    from PIL import ImageFile

    def decoded(*args: Any) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    with pytest.raises(
        doubao_mcp.DoubaoError, match="11580x11580 pixels, more than any Seedream image"
    ):
        doubao_mcp.make_preview(bomb())


async def test_bombs_as_result_images_get_no_preview_and_the_result_comes_back(
    fake_ark: FakeArk,
) -> None:
    fake_ark.faults[("GET", "/files/image-")] = answer(200, bomb(), "image/png")
    config = Config(api_key=KEY, base_url=fake_ark.url)
    async with Client(make_server(config)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "four foxes", "max_images": 4}
        )
    assert not result.is_error and len(result.structured_content["images"]) == 4
    assert [item.type for item in result.content] == ["text"]


async def test_with_save_dir_the_saved_file_makes_the_preview_and_nothing_is_downloaded_twice(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    async with Client(make_server(base_url=fake_ark.url, previews=True)) as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "two foxes", "max_images": 2, "save_dir": str(tmp_path)},
        )
    downloads = [
        r["path"] for r in fake_ark.requests if r["path"].startswith("/files/")
    ]
    # Once each: for the saved files
    assert sorted(downloads) == ["/files/image-0.png", "/files/image-1.png"]
    assert (
        len(jpegs(result)) == 2 and len(result.structured_content["saved_files"]) == 2
    )


async def test_previews_can_be_turned_off_and_one_that_fails_is_left_out(
    fake_ark: FakeArk, caplog: pytest.LogCaptureFixture
) -> None:
    async with Client(make_server(base_url=fake_ark.url, previews=False)) as client:
        off = await client.call_tool(
            "generate_image", {"prompt": "a fox", "max_images": 2}
        )
    fake_ark.faults[("GET", "/files/image-1.png")] = answer(200, '{"not": "an image"}')
    with caplog.at_level(logging.WARNING, logger="doubao_mcp"):
        async with Client(make_server(base_url=fake_ark.url, previews=True)) as client:
            partly = await client.call_tool(
                "generate_image", {"prompt": "a fox", "max_images": 3}
            )
    assert [item.type for item in off.content] == ["text"] and len(
        off.structured_content["images"]
    ) == 2
    assert [item.type for item in partly.content] == ["text", "image", "image"]
    assert not partly.is_error
    # The result itself is whole
    assert len(partly.structured_content["images"]) == 3
    assert "No preview of http" in caplog.text and "image-1.png" in caplog.text


async def test_a_finished_video_with_its_last_frame_shows_the_frame(
    fake_ark: FakeArk,
) -> None:
    fake_ark.polls_to_finish = 1
    async with Client(make_server(base_url=fake_ark.url, previews=True)) as client:
        created = await client.call_tool(
            "generate_video", {"prompt": "a fox", "return_last_frame": True}
        )
        task = await client.call_tool(
            "query_video_task", {"task_id": created.structured_content["task_id"]}
        )
    # Not finished: nothing to show yet
    assert [item.type for item in created.content] == ["text"]
    assert task.structured_content["last_frame_url"].endswith("-last.png")
    assert [image.size for image in jpegs(task)] == [(512, 384)]


# --- The watcher: videos saved when they finish, whoever still listens ------------------------------------------------


async def test_the_watcher_records_failures_retries_blips_never_blocks_a_call_and_stops_at_once(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    config = replace(
        Config.from_env(), base_url=fake_ark.url, poll_intervals=(0.01, 0.05)
    )
    record = doubao_mcp.Record(tmp_path / "state", config.base_url)
    client = ArkClient(config.base_url, secrets=[KEY])
    watcher = doubao_mcp.Watcher(client, record, KEY, config)
    body = {"model": "m", "content": [{"type": "text", "text": "a fox"}]}
    fake_ark.add_task(
        "cgt-failed",
        status="failed",
        error={"code": "InputTextSensitiveContentDetected", "message": "no"},
    )
    fake_ark.add_task("cgt-blip", status="succeeded")
    fake_ark.add_task("cgt-held", status="succeeded")
    for task_id in ("cgt-failed", "cgt-gone", "cgt-blip", "cgt-held"):
        record.created(
            {"task_id": task_id, "status": "queued"},
            body,
            tmp_path,
            doubao_mcp.key_fingerprint(KEY),
        )

    # The first poll of any kind, alone or in a list
    def blip(
        handler: BaseHTTPRequestHandler,
    ) -> None:
        del fake_ark.faults[("GET", TASKS_ROUTE)]
        answer(502, "<html>bad gateway</html>", "text/html")(handler)

    hold = Hold(then=answer(200, VIDEO_BYTES, "video/mp4"))
    fake_ark.faults[("GET", TASKS_ROUTE)] = blip
    fake_ark.faults[("GET", "/files/cgt-held")] = hold
    for task_id in ("cgt-failed", "cgt-gone", "cgt-blip"):
        watcher.watch(task_id, tmp_path)
    await anyio.to_thread.run_sync(fake_ark.requested, "GET", "/files/cgt-blip")
    # Polled after the blip's video is saved: one thing at a time
    watcher.watch("cgt-held", tmp_path)
    # The watcher's one thread is stuck in a download
    await anyio.to_thread.run_sync(hold.arrived, 1)
    async with Client(make_server(config, client=client, record=record)) as session:
        with anyio.fail_after(10):
            listed = await session.call_tool(
                "list_video_tasks", {"task_ids": ["cgt-blip"]}
            )
    assert listed.structured_content["tasks"][0]["status"] == "succeeded"
    watcher.stop()
    # What main() does at a stop: the held download ends at once
    client.close()
    assert watcher.thread
    await anyio.to_thread.run_sync(watcher.thread.join, 10)
    hold.release()
    assert not watcher.thread.is_alive()
    found = rows(tmp_path / "state")
    assert (found["cgt-failed"]["status"], found["cgt-failed"]["error"]) == (
        "failed",
        "InputTextSensitiveContentDetected: no",
    )
    assert (
        found["cgt-gone"]["save_dir"] is None
        and "404 ResourceNotFound" in found["cgt-gone"]["save_error"]
    )
    assert json.loads(found["cgt-blip"]["files"])[0]["path"] == str(
        tmp_path / "cgt-blip.mp4"
    )
    # Left for the next start
    assert found["cgt-held"]["files"] is None and found["cgt-held"]["saver"] is None
    assert "stopping" in found["cgt-held"]["save_error"]
    assert (found["cgt-held"]["status"], found["cgt-held"]["save_dir"]) == (
        "succeeded",
        str(tmp_path),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cgt-blip.mp4", "state"]


async def test_resuming_a_large_record_polls_in_batches_at_a_bounded_pace_and_closes_old_tasks(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Item 8: 250 unfinished tasks ask Ark in lists of at most 100, one request per gap; tasks past Ark's 7 days
    are closed without a request."""
    fake_ark.polls_to_finish = 10**6
    record = doubao_mcp.Record(tmp_path / "state", fake_ark.url)
    owner, now = doubao_mcp.key_fingerprint(KEY), time.time()
    fresh = [f"cgt-r{n}" for n in range(250)]
    for task_id in fresh:
        fake_ark.add_task(task_id, status="running")
    record._write(
        "INSERT INTO tasks (task_id, base_url, owner, save_dir, status, created, updated) VALUES "
        + ", ".join("(?, ?, ?, ?, 'running', ?, ?)" for _ in range(252)),
        *itertools.chain.from_iterable(
            (task_id, fake_ark.url, owner, str(tmp_path), created, created)
            for task_id, created in [(t, now) for t in fresh]
            + [("cgt-old-1", now - 8 * 86400), ("cgt-old-2", now - 9 * 86400)]
        ),
    )
    # No second round here
    config = replace(Config.from_env(), base_url=fake_ark.url, poll_intervals=(30, 60))
    watcher = doubao_mcp.Watcher(
        ArkClient(fake_ark.url, secrets=[KEY]), record, KEY, config, gap=0.01
    )
    watcher.resume()
    await anyio.to_thread.run_sync(fake_ark.requested, "GET", TASKS_ROUTE, 3)
    watcher.stop()
    asked = [
        [v for k, v in r["query"] if k == "filter.task_ids"]
        for r in fake_ark.requests[:3]
    ]
    assert [len(ids) for ids in asked] == [100, 100, 50] and sorted(
        reduce(operator.iadd, asked, [])
    ) == sorted(fresh)
    # Lists, not a GET per task
    assert all(r["path"] == TASKS_ROUTE for r in fake_ark.requests[:3])
    found = rows(tmp_path / "state")
    assert (
        found["cgt-old-1"]["save_dir"] is None
        and "7 days" in found["cgt-old-2"]["save_error"]
    )
    assert not any("cgt-old" in json.dumps(r["query"]) for r in fake_ark.requests)


async def test_while_a_server_runs_the_watchers_polls_join_its_shared_loop(
    fake_ark: FakeArk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: a task a wait and the watcher both follow is asked about in the same requests."""
    fake_ark.polls_to_finish = 3
    through_the_loop: list[list[str]] = []
    shared = doubao_mcp.polled_together

    async def spy(batcher: Any, task_ids: list[str]) -> Any:
        through_the_loop.append(list(task_ids))
        return await shared(batcher, task_ids)

    monkeypatch.setattr(doubao_mcp, "polled_together", spy)
    config = Config(
        api_key=KEY, base_url=fake_ark.url, previews=False, poll_intervals=(0.05, 0.2)
    )
    record = doubao_mcp.Record(tmp_path / "state", fake_ark.url)
    client = ArkClient(fake_ark.url, secrets=[KEY])
    watcher = doubao_mcp.Watcher(client, record, KEY, config, gap=0.01)
    async with Client(
        make_server(config, client=client, record=record, watcher=watcher)
    ) as session:
        assert watcher.shared is not None
        created = await session.call_tool(
            "generate_video", {"prompt": "a fox", "save_dir": str(tmp_path)}
        )
        task_id = created.structured_content["task_id"]
        await anyio.to_thread.run_sync(fake_ark.requested, "GET", f"/files/{task_id}")
    watcher.stop()
    # The server stopped: the watcher polls on its own again
    assert watcher.shared is None
    # Every watcher poll, shared
    assert through_the_loop and all(ids == [task_id] for ids in through_the_loop)


async def test_the_watcher_settles_the_days_spend_after_the_conversation_has_ended(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    fake_ark.polls_to_finish = 3
    config = Config(
        api_key=KEY,
        base_url=fake_ark.url,
        previews=False,
        poll_intervals=(0.05, 0.2),
        daily_limit=100.0,
        limit_set=True,
    )
    record = doubao_mcp.Record(tmp_path / "state", fake_ark.url)
    client = ArkClient(fake_ark.url, secrets=[KEY])
    watcher = doubao_mcp.Watcher(client, record, KEY, config, gap=0.01)
    async with Client(
        make_server(config, client=client, record=record, watcher=watcher)
    ) as session:
        created = await session.call_tool(
            "generate_video",
            {
                "prompt": "a fox",
                "model": DANCE_20,
                "duration": 4,
                "save_dir": str(tmp_path),
            },
        )
    task_id = created.structured_content["task_id"]
    await anyio.to_thread.run_sync(fake_ark.requested, "GET", f"/files/{task_id}")
    watcher.stop()
    with contextlib.closing(sqlite3.connect(record.path)) as db:
        settled = db.execute("SELECT task_id, state, amount FROM spend").fetchall()
    assert settled == [(task_id, "settled", pytest.approx(87_300 * 46 / 1e6))]


# --- The asset API: Ark's signed OpenAPI, each call signed, its answer read within a cap, mapped to data or an error


def test_the_v4_signer_signs_as_volcengines_own_does() -> None:
    """The same request signed by volcenginesdkcore and by sign_v4 at the same moment: the same Authorization."""
    from volcenginesdkcore.signv4 import SignerV4

    body = json.dumps(
        {"ProjectName": "default", "Filter": {"GroupType": "AIGC", "Name": "Mia ü"}}
    )
    query = {"Action": "ListAssetGroups", "Version": "2024-01-01"}
    theirs = {
        "Content-Type": "application/json",
        "Host": "ark.ap-southeast-1.byteplusapi.com",
    }
    SignerV4.sign(
        "/",
        "POST",
        theirs,
        body,
        {},
        query,
        "AK",
        "SK/secret+",
        "ap-southeast-1",
        "ark",
    )
    request = requests.Request(
        "POST",
        "https://ark.ap-southeast-1.byteplusapi.com/",
        params=list(query.items()),
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    ).prepare()
    when = datetime.strptime(theirs["X-Date"], "%Y%m%dT%H%M%SZ")
    doubao_mcp.sign_v4(request, "AK", "SK/secret+", "ap-southeast-1", when)
    assert request.headers["Authorization"] == theirs["Authorization"]
    assert request.headers["X-Content-Sha256"] == theirs["X-Content-Sha256"]


# --- Hosting: streamable HTTP for many callers, treated as hostile ----------------------------------------------------


async def test_get_and_delete_on_a_stateless_server_answer_405_at_once(
    fake_ark: FakeArk,
) -> None:
    async with hosting(fake_ark) as url, httpx2.AsyncClient() as http:
        # A GET used to open an event stream that never ended
        with anyio.fail_after(10):
            got = await http.get(f"{url}/mcp", headers={"Accept": "text/event-stream"})
            deleted = await http.delete(f"{url}/mcp")
    assert (got.status_code, deleted.status_code, got.headers["allow"]) == (
        405,
        405,
        "POST",
    )
    assert "answers POST only" in got.json()["error"]["message"]


async def test_idle_and_slow_connections_are_cut_off(fake_ark: FakeArk) -> None:
    async with hosting(fake_ark, header_timeout=0.3, body_timeout=0.3) as url:
        port = int(url.rsplit(":", 1)[1])
        replies = []
        # A body that stops
        for sent in (
            b"",
            # Nothing, then half a head
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"jsonrpc"',
        ):
            async with await anyio.connect_tcp("127.0.0.1", port) as connection:
                await connection.send(sent) if sent else None
                with anyio.fail_after(10):
                    try:
                        replies.append(await connection.receive())
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        replies.append(b"closed")
    assert replies[:2] == [b"closed", b"closed"]
    assert (
        replies[2].startswith(b"HTTP/1.1 408")
        and b"did not arrive within 0.3 s" in replies[2]
    )


async def test_request_bodies_fit_arks_input_limits_and_past_them_get_a_clear_error(
    fake_ark: FakeArk,
) -> None:
    # A 5 MB frame: 7 MB of JSON
    frame = data_url("image/png", PNG + bytes(5 * 2**20))
    async with hosting(fake_ark) as url:
        async with Client(streamable_http_client(f"{url}/mcp")) as client:
            result = await client.call_tool(
                "generate_video", {"prompt": "a", "first_frame": frame}
            )
    async with hosting(fake_ark, max_body=2**20) as url, httpx2.AsyncClient() as http:
        refused = await http.post(
            f"{url}/mcp", **tools_list(), content=b" " * (2 * 2**20)
        )
    assert (
        not result.is_error
        and fake_ark.requests[0]["body"]["content"][1]["image_url"]["url"] == frame
    )
    assert refused.status_code == 413
    assert (
        "The request body is over 1.0 MB, the most this server takes"
        in refused.json()["error"]["message"]
    )


async def test_request_bodies_in_flight_are_bounded_in_bytes(fake_ark: FakeArk) -> None:
    """Issue 23, item 7: what bodies in flight may take is counted in bytes, not connections."""
    hold = Hold(then=answer(200, json.dumps({"id": "cgt-held"})))
    fake_ark.faults[("POST", TASKS_ROUTE)] = hold
    # 1.3 MB of JSON
    frame = data_url("image/png", PNG + bytes(2**20))
    call_video = {
        "json": {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {
                "name": "generate_video",
                "arguments": {"prompt": "a", "first_frame": frame},
            },
        },
        "headers": {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        },
    }
    async with (
        hosting(fake_ark, max_body=2 * 2**20, max_bodies_in_flight=2 * 2**20) as url,
        httpx2.AsyncClient(timeout=30) as http,
    ):
        async with anyio.create_task_group() as group:
            group.start_soon(partial(http.post, f"{url}/mcp", **call_video))
            # The first body is held while its call runs
            await anyio.to_thread.run_sync(hold.arrived, 1)
            refused = await http.post(f"{url}/mcp", **call_video)
            small = await http.post(f"{url}/mcp", **tools_list())
            hold.release()
        again = await http.post(f"{url}/mcp", **call_video)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert (
        "The server is holding 1.3 MB of other requests, the most it holds at once"
        in refused.json()["error"]["message"]
    )
    # Room again once the first was answered
    assert small.status_code == 200 and again.status_code == 200


async def test_host_and_origin_checks_know_every_loopback_address_and_ignore_case(
    fake_ark: FakeArk,
) -> None:
    async with hosting(fake_ark, bind="127.0.0.2") as url, httpx2.AsyncClient() as http:
        port = url.rsplit(":", 1)[1]
        statuses = [
            (await http.post(f"{url}/mcp", **tools_list(host))).status_code
            for host in (
                "evil.example",
                f"127.0.0.2:{port}",
                f"LOCALHOST:{port}",
                f"[::1]:{port}",
            )
        ]
    assert statuses == [421, 200, 200, 200]
    async with (
        hosting(fake_ark, allowed_hosts=("mcp.example.com",)) as url,
        httpx2.AsyncClient() as http,
    ):
        port = url.rsplit(":", 1)[1]
        checks = [
            (await http.post(f"{url}/mcp", **tools_list(host, origin))).status_code
            for host, origin in [
                ("MCP.Example.COM", None),
                (f"mcp.example.com:{port}", None),
                (f"127.0.0.1:{port}", None),
                (f"127.0.0.1:{port}", "http://localhost:5173"),
                (f"127.0.0.1:{port}", "https://evil.example"),
                ("evil.example", None),
            ]
        ]
    # Allowed hosts keep the loopback ones working
    assert checks == [
        200,
        200,
        200,
        200,
        403,
        421,
    ]


async def test_over_http_redaction_tells_a_caller_nothing_of_another_callers_key(
    fake_ark: FakeArk,
) -> None:
    """Issue 23, item 9: a guess comes back as sent, whether or not it is somebody's key."""
    key_a, key_b = (
        "ark-caller-a-7c1e2d3f-4a5b-6c7d-8e9f-0a1b",
        "ark-caller-b-1f2e3d4c-5b6a-7980-a1b2-c3d4",
    )
    guesses = [key_a, KEY, key_a[:24], "ark-a-plain-guess-5f6e-7d8c-9b0a-1234"]
    for guess in guesses:
        fake_ark.unavailable[guess] = NOT_FOUND
    async with hosting(fake_ark) as url:
        async with http_caller(url, key_a) as caller_a:
            # Key A is now one the server knows
            await caller_a.call_tool("list_video_tasks", {})
        async with http_caller(url, key_b) as caller_b:
            texts = [
                error_text(
                    await caller_b.call_tool(
                        "generate_video", {"prompt": "a fox", "model": guess}
                    )
                )
                for guess in guesses
            ]
    for guess, text in zip(guesses, texts, strict=False):
        assert f"The model or endpoint {guess} does not exist" in text, text


# --- The viewer (MCP Apps) --------------------------------------------------------------------------------------------


async def test_three_tools_carry_the_viewer_and_the_viewer_is_served_with_its_csp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "DOUBAO_MEDIA_DOMAINS", "https://media.example.com, http://127.0.0.1:8123"
    )
    async with Client(make_server()) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        listed = (await client.list_resources()).resources
        read = (await client.read_resource(doubao_mcp.VIEWER_URI)).contents[0]
    assert {name for name, tool in tools.items() if (tool.meta or {}).get("ui")} == {
        "generate_image",
        "generate_video",
        "query_video_task",
    }
    assert tools["generate_video"].meta["ui"] == {
        "resourceUri": "ui://doubao-mcp/viewer.html"
    }
    assert [str(resource.uri) for resource in listed] == [doubao_mcp.VIEWER_URI]
    assert read.mime_type == "text/html;profile=mcp-app" and read.text.startswith(
        "<!doctype html>"
    )
    assert read.meta["ui"]["csp"]["resourceDomains"] == [
        "https://*.volces.com",
        "https://*.bytepluses.com",
        "https://media.example.com",
        "http://127.0.0.1:8123",
    ]
    # Self-contained and readable
    assert "<script src" not in read.text and read.text.count("\n") < 200


# --- The module, its docs and its release files -----------------------------------------------------------------------


def test_the_module_reads_top_to_bottom() -> None:
    """What the server does comes first, the machinery after it; no module-level name is used, when the module runs,
    above its definition (function bodies and annotations run later); no function is over 80 lines, and
    build_server is wiring."""
    import ast

    source = Path(doubao_mcp.__file__).read_text()
    # What the server knows first, then a call in the order it happens, then the machinery.
    sections = module_sections()
    assert sections[:4] == ["Tables", "Models", "Errors", "Settings"]
    assert (
        sections.index("Tools")
        < sections.index("The studio")
        < sections.index("The Ark client")
    )
    tree = ast.parse(source)
    import builtins

    defined = set(dir(builtins)) | {"__name__", "__doc__", "__file__"}
    early = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Try)):
            defined |= {
                (a.asname or a.name).split(".")[0]
                for n in ast.walk(node)
                if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names
            }
            defined |= {
                n.id
                for n in ast.walk(node)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            }
            continue
        # What runs when the statement does
        run_now: list[ast.AST] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            run_now = [
                *node.decorator_list,
                *node.args.defaults,
                *filter(None, node.args.kw_defaults),
            ]
        elif isinstance(node, ast.ClassDef):
            run_now = [*node.decorator_list, *node.bases] + [
                b.value
                for b in node.body
                if isinstance(b, (ast.Assign, ast.AnnAssign)) and b.value is not None
            ]
        elif not isinstance(node, ast.AnnAssign):
            run_now = [node]
        local = {
            n.id
            for part in run_now
            for n in ast.walk(part)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        local |= {
            b.name
            for b in getattr(node, "body", [])
            if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        early += [
            (n.id, n.lineno)
            for part in run_now
            for n in ast.walk(part)
            if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Load)
            and n.id not in defined | local
            and not any(
                isinstance(p, ast.Lambda) for p in ast.walk(part) if n in ast.walk(p)
            )
        ]
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [getattr(node, "target", node)]
        )
        defined |= {getattr(node, "name", "")} | {
            n.id
            for t in targets
            for n in ast.walk(t)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
    assert early == []
    lengths = {
        n.name: n.end_lineno
        - min([n.lineno] + [d.lineno for d in n.decorator_list])
        + 1
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    assert lengths["build_server"] <= 60 and max(lengths.values()) <= 80, {
        k: v for k, v in lengths.items() if v > 80
    }


def module_sections() -> list[str]:
    """The module's sections, by the name their header gives before its colon."""
    source = Path(doubao_mcp.__file__).read_text()
    return [
        name.strip()
        for name in re.findall(r"^# --- ([^:\n]+?)(?::| -)", source, re.MULTILINE)
    ]


def test_the_tests_sections_follow_the_modules() -> None:
    """Each section of this file tests the module's section of the same name, in the module's order: the test of a
    part is found where the part is."""
    source = Path(__file__).read_text()
    tested = [
        name.strip()
        for name in re.findall(r"^# --- ([^:\n]+?)(?::| -)", source, re.MULTILINE)
    ]
    module = module_sections()
    assert (
        tested[0] == "Helpers"
        and tested[-1] == "The module, its docs and its release files"
    )
    assert set(tested[1:-1]) <= set(module)
    assert tested[1:-1] == sorted(tested[1:-1], key=module.index)


def test_the_development_docs_draw_the_module_section_by_section() -> None:
    """The layout in docs/development.md names every section of the module, in its order, and no line numbers: a line
    added anywhere leaves it true."""
    layout = (
        (ROOT / "docs" / "development.md")
        .read_text()
        .split("## Layout", 1)[1]
        .split("\n## ", 1)[0]
    )
    drawn = re.findall(r"^\| \d+ \| ([^|]+?) \|", layout, re.MULTILINE)
    assert drawn == module_sections()
    assert not re.search(r"\b\d{3,}-\d{3,}\b", layout)


def test_the_docs_state_the_limits_the_schemas_enforce() -> None:
    maximum = {
        (tool.name, name): argument.get("maximum")
        for tool in doubao_mcp.published_tools()
        for name, argument in tool.parameters["properties"].items()
    }
    start_wait, query_wait = (
        maximum["generate_video", "wait_seconds"],
        maximum["query_video_task", "wait_seconds"],
    )
    tools = (ROOT / "docs" / "tools.md").read_text()
    generate_video = tools[
        tools.index("## `generate_video`") : tools.index("## `extra`")
    ]
    assert f"| `wait_seconds` | 0-{start_wait} " in generate_video
    record = (ROOT / "docs" / "record.md").read_text()
    assert f"`generate_video` waits at most {start_wait} s" in record
    assert f"waits up to {query_wait} s" in record
    assert f"(at most {maximum['list_video_tasks', 'wait_seconds']}," in record
    readme = (ROOT / "README.md").read_text()
    assert f"waits up to {start_wait} s with `wait_seconds`" in readme
    assert f"waits up to {query_wait} s with `wait_seconds`" in readme
    assert f"sets of up to {maximum['generate_image', 'max_images']}" in readme


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = [
        ROOT / "README.md",
        ROOT / "RELEASING.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists() or (anchor and anchor not in heading_anchors(file)):
                broken.append(f"{page.name}: {target}")
    assert len(pages) >= 9 and not broken, broken


def test_the_readme_fits_one_screen_then_links() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    first_screen = "\n".join(lines[:60])
    assert len(lines) <= 250
    for needed in (
        "uvx doubao-image-video-mcp",
        "python3 -m venv .venv && .venv/bin/pip install . &&",
        "ARK_API_KEY",
        "Claude Desktop",
        "Cursor",
        "claude mcp add",
        "VS Code",
        '"servers"',
        "generate_image",
        "generate_video",
        "tasks.sqlite3",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
    ):
        assert needed in first_screen, needed
    for page in (
        "models",
        "tools",
        "hosting",
        "record",
        "troubleshooting",
        "development",
        "configuration",
    ):
        assert f"](docs/{page}.md)" in readme, page
    # Every command and config installs this project's distribution: `doubao-mcp` on PyPI is another project's.
    commands = re.findall(
        r"```.*?```|\"args\": \[[^]]*\]", readme + docs_text(), re.DOTALL
    )
    assert not [
        c
        for c in commands
        if re.search(
            r"(uvx|pipx (install|run)|pip install)( -\S+)* doubao-mcp\b|"
            r"\"doubao-mcp(@\w+)?\"",
            c,
        )
    ]


async def test_release_files_carry_one_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """doubao_mcp.__version__ is the source; the metadata, --version, serverInfo and the JSON copies all say it."""
    import importlib.metadata

    version = doubao_mcp.__version__
    with pytest.raises(SystemExit):
        doubao_mcp.main(["--version"])
    config = Config.from_env()
    async with Client(make_server(config)) as client:
        server_version = client.server_info.version
    server, manifest = release_file("server.json"), release_file("manifest.json")
    assert (
        capsys.readouterr().out.strip(),
        server_version,
        server["version"],
        server["packages"][0]["version"],
        manifest["version"],
    ) == (f"doubao-image-video-mcp {version}", version, version, version, version)
    assert importlib.metadata.version("doubao-image-video-mcp") == version, (
        "reinstall: pip install -e '.[test]'"
    )


def test_release_files_version_is_set_everywhere_by_one_command(tmp_path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, ROOT / ".ci" / "version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (checked.returncode, checked.stdout) == (0, f"{doubao_mcp.__version__}\n"), (
        checked.stderr
    )
    for name in (".ci/version", "doubao_mcp.py", "server.json", "manifest.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    command = [sys.executable, tmp_path / ".ci" / "version"]
    assert (
        subprocess.run(
            [*command, "v2.3.4"], capture_output=True, text=True, check=True
        ).stdout
        == "2.3.4\n"
    )
    assert '\n__version__ = "2.3.4"\n' in (tmp_path / "doubao_mcp.py").read_text()
    server, manifest = (
        json.loads((tmp_path / name).read_text())
        for name in ("server.json", "manifest.json")
    )
    assert (
        server["version"],
        server["packages"][0]["version"],
        manifest["version"],
    ) == ("2.3.4",) * 3
    (tmp_path / "manifest.json").write_text(
        json.dumps({**manifest, "version": "2.3.3"})
    )
    drifted = subprocess.run(command, capture_output=True, text=True, check=False)
    assert (
        drifted.returncode == 1 and "manifest.json version is '2.3.3'" in drifted.stderr
    )
    refused = subprocess.run(
        [*command, "latest"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 1 and "'latest' is not a version" in refused.stderr


def test_release_files_server_json_is_what_the_registry_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import jsonschema

    schema = release_file("schemas/server.schema.json")
    server = release_file("server.json")
    jsonschema.validate(server, schema, format_checker=jsonschema.FormatChecker())
    # Names the schema it was validated with
    assert server["$schema"] == schema["$id"]
    (package,) = server["packages"]
    assert (
        package["registryType"],
        package["identifier"],
        package["runtimeHint"],
        package["transport"],
    ) == ("pypi", pyproject()["project"]["name"], "uvx", {"type": "stdio"})
    settings = {
        variable["name"]: variable for variable in package["environmentVariables"]
    }
    assert settings["ARK_API_KEY"]["isRequired"] and settings["ARK_API_KEY"]["isSecret"]
    assert not [
        name
        for name, variable in settings.items()
        if name != "ARK_API_KEY" and variable.get("isRequired")
    ]
    assert all(variable["description"] for variable in settings.values())
    in_help = set(
        re.findall(
            r"\b((?:ARK|DOUBAO|AWS|VOLCENGINE|BYTEPLUS|VOLC)_[A-Z0-9_]+[A-Z0-9])\b",
            settings_in_help(capsys),
        )
    )
    # boto3's own settings for DOUBAO_UPLOADS: the registry shows the four a person fills in; a profile or
    # AWS_REGION are for those who know them.
    aliases = {
        "DOUBAO_API_KEY",
        "DOUBAO_IMAGE_ENDPOINT_ID",
        "DOUBAO_VIDEO_ENDPOINT_ID",
        "AWS_REGION",
        "AWS_PROFILE",
        # The asset library's keys under BytePlus's and the legacy names: the registry shows Volcengine's.
        "BYTEPLUS_ACCESS_KEY",
        "BYTEPLUS_SECRET_KEY",
        "VOLC_ACCESSKEY",
        "VOLC_SECRETKEY",
    }
    # Every setting a stdio user may set, and no other
    assert set(settings) == in_help - HOSTING_OPTIONS - aliases
    # The registry takes a PyPI package only when its long description (the README) names the server.
    assert (
        f"<!-- mcp-name: {server['name']} -->"
        in (ROOT / "README.md").read_text().splitlines()[:5]
    )
    repository = server["repository"]["url"]
    assert (
        server["name"]
        == "io.github."
        + repository.removeprefix("https://github.com/").split("/")[0]
        + "/doubao-mcp"
    )
    assert repository in pyproject()["project"]["urls"].values()
    assert release_file("manifest.json")["repository"]["url"] == repository


def test_release_files_bundle_manifest_maps_its_fields_to_settings() -> None:
    import jsonschema

    manifest = release_file("manifest.json")
    jsonschema.validate(
        manifest, release_file("schemas/mcpb-manifest-v0.4.schema.json")
    )
    assert manifest["manifest_version"] == "0.4" and manifest["server"]["type"] == "uv"
    fields = manifest["user_config"]
    assert fields["ark_api_key"]["sensitive"] and fields["ark_api_key"]["required"]
    assert fields["output_dir"]["type"] == "directory"
    # Only the key is required: every other field needs a default, or Claude Desktop would pass "${user_config...}".
    only_the_key = bundle_environment(manifest, ark_api_key=KEY)
    assert not [value for value in only_the_key.values() if "${" in value], only_the_key
    config = Config.from_env(only_the_key)
    assert (
        config.api_key,
        config.output_dir,
        config.base_url,
        config.image_model,
        config.video_model,
        config.previews,
    ) == (KEY, "Downloads/doubao", doubao_mcp.DEFAULT_BASE_URL, None, None, True)
    chosen = Config.from_env(
        bundle_environment(
            manifest,
            ark_api_key=KEY,
            output_dir="/Users/me/Pictures/ai",
            image_model=PRO,
            previews=False,
        )
    )
    assert (chosen.output_dir, chosen.image_model, chosen.previews) == (
        "/Users/me/Pictures/ai",
        PRO,
        False,
    )
    assert [tool["name"] for tool in manifest["tools"]] == [
        tool.name for tool in doubao_mcp.published_tools()
    ]
    assert config.assets is None
    with_assets = Config.from_env(
        bundle_environment(
            manifest,
            ark_api_key=KEY,
            asset_access_key="AKLT-bundle",
            asset_secret_key="bundle-secret",
            asset_allow_remove=True,
        )
    ).assets
    assert with_assets is not None
    assert (with_assets.access_key, with_assets.project, with_assets.allow_remove) == (
        "AKLT-bundle",
        "default",
        True,
    )
    # Claude Desktop runs `uv run --directory <the bundle>`: uv builds the project from the files the bundle holds.
    assert (
        manifest["server"]["mcp_config"]["args"][-1]
        in pyproject()["project"]["scripts"]
    )
    ignored = (ROOT / ".mcpbignore").read_text().splitlines()
    kept = {line[1:] for line in ignored if line.startswith("!")}
    project = pyproject()
    needed = {
        "manifest.json",
        "pyproject.toml",
        project["project"]["readme"]["file"],
        manifest["server"]["entry_point"],
        *project["project"]["license-files"],
        *(f"{m}.py" for m in project["tool"]["setuptools"]["py-modules"]),
    }
    assert kept == needed and "*" in ignored


def test_release_files_workflows_test_every_python_and_publish_without_a_password() -> (
    None
):
    import yaml

    ci, release = (
        yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
        for name in ("ci.yml", "release.yml")
    )
    classified = [
        c.rsplit(" ", 1)[1]
        for c in pyproject()["project"]["classifiers"]
        if re.fullmatch(r".* 3\.\d+", c)
    ]
    (test,) = ci["jobs"].values()
    assert (
        test["strategy"]["matrix"]["python-version"]
        == classified
        == ["3.10", "3.11", "3.12", "3.13"]
    )
    assert pyproject()["project"]["requires-python"] == f">={classified[0]}"
    assert "bash .ci/run" in [step.get("run") for step in test["steps"]]
    # YAML 1.1 reads the key `on` as true
    assert release[True]["push"]["tags"] == ["v*"]
    build, pypi, github = (
        release["jobs"]["build"],
        release["jobs"]["pypi"],
        release["jobs"]["github-release"],
    )
    assert "bash .ci/build" in [step.get("run") for step in build["steps"]]
    assert {
        step["with"]["path"]
        for step in build["steps"]
        if "upload-artifact" in step.get("uses", "")
    } == {"dist/", "bundle/"}
    (publish,) = [
        step
        for step in pypi["steps"]
        if "pypa/gh-action-pypi-publish" in step.get("uses", "")
    ]
    assert pypi["permissions"] == {
        "id-token": "write"
    } and "password" not in publish.get("with", {})
    assert (
        "${{ secrets"
        not in (ROOT / ".github" / "workflows" / "release.yml").read_text()
    )
    assert github["permissions"] == {"contents": "write"} and "pypi" in github["needs"]
    assert any(
        "gh release create" in step.get("run", "") and "artifacts/*" in step["run"]
        for step in github["steps"]
    )


def test_the_cost_page_shows_every_built_in_price_as_the_table_holds_it() -> None:
    """docs/cost.md's tables, read back: a price changed in PRICES and not on the page (or the other way) fails."""
    page = (ROOT / "docs" / "cost.md").read_text()
    regions = {
        doubao_mcp.CHINA: page.split(
            "**Volcengine Ark (China), CNY per million tokens**"
        )[1].split("**BytePlus")[0],
        doubao_mcp.BYTEPLUS: page.split(
            "**BytePlus ModelArk, USD per million tokens**"
        )[1].split("## Your own")[0],
    }

    def shown(amount: float | None) -> str:
        return "-" if amount is None else f"{amount:g}"

    for region, text in regions.items():
        for family, price in doubao_mcp.PRICES[region].items():
            row = re.search(
                rf"^\| `{re.escape(family)}`(?: \(5.0 lite\))? \| (.+) \|$",
                text,
                re.MULTILINE,
            )
            if family == "seedream-5-0-lite":
                continue
            assert row, family
            if price.per_million_tokens:
                rates = [
                    shown(table.get(resolution))
                    for table in (price.per_million_tokens, price.with_video_input)
                    for resolution in ("480p", "720p", "1080p")
                ]
                assert row[1].split(" | ") == rates, family
            elif isinstance(price.per_image, dict):
                assert all(
                    f"{amount:g} at {size}" in row[1]
                    for size, amount in price.per_image.items()
                )
                assert f"plus {price.per_extra_reference:g} per reference" in row[1]
            else:
                assert row[1] == f"{price.per_image:g}", family
