"""Tests for doubao_mcp: `responses`-mocked unit tests, in-process MCP client tests, and end-to-end
runs of the installed console script over stdio against a fake Ark server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
from mcp import Client, StdioServerParameters

import doubao_mcp
from doubao_mcp import ArkAPIError, ArkClient, Config, build_server

pytestmark = pytest.mark.anyio

KEY = "ark-test-0f3c9a7e-5b1d-4c2e-9f8a-6d7e8f9a0b1c"
BASE = "https://ark.test/api/v3"
TASKS = f"{BASE}/contents/generations/tasks"
IMAGES = f"{BASE}/images/generations"
SCRIPT = Path(sys.executable).with_name("doubao-image-video-mcp")

SUCCEEDED_TASK = {
    "id": "cgt-20250331175019-6htr8", "model": "doubao-seedance-1-0-pro-250528", "status": "succeeded",
    "error": None, "created_at": 1743414619, "updated_at": 1743414673,
    "content": {"video_url": "https://cdn.test/v.mp4?sig=1", "last_frame_url": "https://cdn.test/last.png"},
    "seed": 10, "resolution": "720p", "ratio": "16:9", "duration": 5, "framespersecond": 24,
    "usage": {"completion_tokens": 108900, "total_tokens": 108900},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def ark_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake key, and none of the developer's own Ark settings leaking into a test."""
    for name in ("ARK_API_KEY", "DOUBAO_API_KEY", "ARK_BASE_URL", "DOUBAO_IMAGE_MODEL", "DOUBAO_VIDEO_MODEL",
                 "DOUBAO_IMAGE_ENDPOINT_ID", "DOUBAO_VIDEO_ENDPOINT_ID", "ARK_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARK_API_KEY", KEY)
    monkeypatch.setenv("ARK_BASE_URL", BASE)


@pytest.fixture
def ark() -> Any:
    """Mocked Ark: any request that was not registered fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


async def call(tool: str, arguments: dict[str, Any], config: Config | None = None) -> Any:
    async with Client(build_server(config or Config.from_env())) as client:
        return await client.call_tool(tool, arguments)


def sent_json(mock: Any, index: int = 0) -> Any:
    return json.loads(mock.calls[index].request.body)


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


# --- Configuration ----------------------------------------------------------------------------


def test_config_reads_the_official_names_first() -> None:
    config = Config.from_env({
        "ARK_API_KEY": "official", "DOUBAO_API_KEY": "legacy", "ARK_BASE_URL": "https://ark.ap-southeast.bytepluses.com/api/v3/",
        "DOUBAO_IMAGE_MODEL": "img-model", "DOUBAO_IMAGE_ENDPOINT_ID": "ep-img",
        "DOUBAO_VIDEO_MODEL": "vid-model", "DOUBAO_VIDEO_ENDPOINT_ID": "ep-vid", "ARK_TIMEOUT": "42",
    })
    assert (config.api_key, config.base_url) == ("official", "https://ark.ap-southeast.bytepluses.com/api/v3")
    assert (config.image_model, config.video_model, config.image_timeout) == ("img-model", "vid-model", 42.0)


def test_config_accepts_the_typescript_servers_names() -> None:
    config = Config.from_env({"DOUBAO_API_KEY": "legacy", "DOUBAO_IMAGE_ENDPOINT_ID": "ep-img",
                              "DOUBAO_VIDEO_ENDPOINT_ID": "ep-vid"})
    assert (config.api_key, config.image_model, config.video_model) == ("legacy", "ep-img", "ep-vid")


def test_config_defaults_are_real_models_on_the_china_host() -> None:
    config = Config.from_env({})
    assert config.api_key is None
    assert config.base_url == "https://ark.cn-beijing.volces.com/api/v3"
    assert config.image_model == "doubao-seedream-4-5-251128"
    assert config.video_model == "doubao-seedance-1-5-pro-251215"


@pytest.mark.parametrize("env, named", [
    ({"ARK_BASE_URL": "ark.cn-beijing.volces.com/api/v3"}, "ARK_BASE_URL"),
    ({"ARK_TIMEOUT": "soon"}, "ARK_TIMEOUT"),
    ({"ARK_TIMEOUT": "-1"}, "ARK_TIMEOUT"),
])
def test_config_refuses_bad_values_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Config.from_env(env)


def test_config_repr_hides_the_key() -> None:
    assert KEY not in repr(Config.from_env())


# --- generate_image ---------------------------------------------------------------------------


async def test_generate_image_sends_every_argument_and_returns_images_errors_and_usage(ark: Any) -> None:
    ark.post(IMAGES, json={
        "model": "doubao-seedream-4-0-250828", "created": 1757321139,
        "data": [{"url": "https://cdn.test/1.jpeg", "size": "2048x2048"},
                 {"error": {"code": "OutputImageSensitiveContentDetected", "message": "blocked"}},
                 {"url": "https://cdn.test/3.jpeg", "size": "2048x2048"}],
        "usage": {"generated_images": 2, "output_tokens": 32768, "total_tokens": 32768},
    })
    result = await call("generate_image", {
        "prompt": "a red fox in snow", "model": "doubao-seedream-4-0-250828",
        "images": ["https://img.test/a.png", "data:image/png;base64,iVBORw0KGgo="],
        "size": "2K", "max_images": 3, "seed": 7, "guidance_scale": 5.5, "watermark": False,
    })
    assert not result.is_error
    request = ark.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Client-Request-Id"]
    assert sent_json(ark) == {
        "model": "doubao-seedream-4-0-250828", "prompt": "a red fox in snow",
        "image": ["https://img.test/a.png", "data:image/png;base64,iVBORw0KGgo="],
        "size": "2K", "seed": 7, "guidance_scale": 5.5, "watermark": False,
        "sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 3},
    }
    assert result.structured_content == {
        "model": "doubao-seedream-4-0-250828", "created_at": "2025-09-08T08:45:39Z",
        "images": [{"index": 0, "url": "https://cdn.test/1.jpeg", "size": "2048x2048"},
                   {"index": 2, "url": "https://cdn.test/3.jpeg", "size": "2048x2048"}],
        "errors": [{"index": 1, "code": "OutputImageSensitiveContentDetected", "message": "blocked"}],
        "usage": {"generated_images": 2, "output_tokens": 32768, "total_tokens": 32768},
        "note": doubao_mcp.URL_LIFETIME_NOTE,
    }
    assert json.loads(result.content[0].text) == result.structured_content


async def test_generate_image_sends_only_what_was_given_with_the_env_default_model(
        ark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOUBAO_IMAGE_MODEL", "ep-20250101-image")
    ark.post(IMAGES, json={"data": [{"url": "https://cdn.test/1.jpeg"}]})
    result = await call("generate_image", {"prompt": "a cat", "images": ["https://img.test/a.png"]})
    assert sent_json(ark) == {"model": "ep-20250101-image", "prompt": "a cat", "image": "https://img.test/a.png"}
    assert result.structured_content["images"] == [{"index": 0, "url": "https://cdn.test/1.jpeg"}]


async def test_an_explicit_model_argument_wins_over_the_environment(
        ark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOUBAO_IMAGE_MODEL", "ep-from-env")
    monkeypatch.setenv("DOUBAO_VIDEO_MODEL", "ep-from-env")
    ark.post(IMAGES, json={"data": []})
    ark.post(TASKS, json={"id": "cgt-1"})
    await call("generate_image", {"prompt": "a", "model": "doubao-seedream-3-0-t2i-250415"})
    await call("generate_video", {"prompt": "a", "model": "doubao-seedance-1-0-lite-t2v-250428"})
    assert sent_json(ark, 0)["model"] == "doubao-seedream-3-0-t2i-250415"
    assert sent_json(ark, 1)["model"] == "doubao-seedance-1-0-lite-t2v-250428"


@pytest.mark.parametrize("arguments, message", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   \n"}, "must contain text"),
    ({"prompt": "x" * 100_000}, "at most 5000 characters"),
    ({"prompt": "a", "size": "huge"}, "must be 1K, 2K, 4K, adaptive, or WIDTHxHEIGHT"),
    ({"prompt": "a", "size": "100x100"}, "512x512 to 4096x4096"),
    ({"prompt": "a", "size": "4096x128"}, "aspect ratio"),
    ({"prompt": "a", "max_images": 16}, "max_images"),
    ({"prompt": "a", "max_images": "many"}, "max_images"),
    ({"prompt": "a", "seed": -2}, "seed"),
    ({"prompt": "a", "guidance_scale": 11}, "guidance_scale"),
    ({"prompt": "a", "watermark": "maybe"}, "watermark"),
    ({"prompt": "a", "model": "two words"}, "must be an Ark model id"),
    ({"prompt": "a", "images": ["ftp://host/a.png"]}, "images: 'ftp://host/a.png' is not an http(s) URL"),
    ({"prompt": "a", "images": "https://img.test/a.png"}, "images"),
    ({"prompt": "a", "images": ["https://img.test/a.png"] * 15}, "images"),
    ({"prompt": "a", "images": ["https://img.test/a.png"] * 5, "max_images": 11}, "total 15 at most, got 5 + 11"),
])
async def test_generate_image_refuses_bad_arguments_before_any_request(
        ark: Any, arguments: dict[str, Any], message: str) -> None:
    text = error_text(await call("generate_image", arguments))
    assert message in text
    assert text.startswith("Error executing tool generate_image")
    assert len(ark.calls) == 0


# --- generate_video ---------------------------------------------------------------------------


async def test_generate_video_sends_parameters_as_top_level_fields_and_frames_as_roles(ark: Any) -> None:
    ark.post(TASKS, json={"id": "cgt-20250331175019-6htr8"})
    result = await call("generate_video", {
        "prompt": "the fox runs", "first_frame": "https://img.test/first.png",
        "last_frame": "data:image/jpeg;base64,/9j/4AAQ", "resolution": "1080p", "ratio": "16:9",
        "duration": 10, "seed": 4294967295, "camera_fixed": True, "watermark": False, "generate_audio": True,
        "return_last_frame": True, "service_tier": "flex", "callback_url": "https://hooks.test/ark",
    })
    assert ark.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    assert sent_json(ark) == {
        "model": "doubao-seedance-1-5-pro-251215",
        "content": [
            {"type": "text", "text": "the fox runs"},
            {"type": "image_url", "image_url": {"url": "https://img.test/first.png"}, "role": "first_frame"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}, "role": "last_frame"},
        ],
        "resolution": "1080p", "ratio": "16:9", "duration": 10, "seed": 4294967295, "camera_fixed": True,
        "watermark": False, "generate_audio": True, "return_last_frame": True, "service_tier": "flex",
        "callback_url": "https://hooks.test/ark",
    }
    task = result.structured_content
    assert (task["task_id"], task["status"], task["model"]) == (
        "cgt-20250331175019-6htr8", "queued", "doubao-seedance-1-5-pro-251215")
    assert "query_video_task" in task["next_step"] and "cgt-20250331175019-6htr8" in task["next_step"]


async def test_generate_video_text_only_and_reference_images(ark: Any) -> None:
    ark.post(TASKS, json={"id": "cgt-a"})
    ark.post(TASKS, json={"id": "cgt-b"})
    await call("generate_video", {"prompt": "waves", "frames": 121})
    await call("generate_video", {"prompt": "a cat and a hat", "model": "doubao-seedance-1-0-lite-i2v-250428",
                                  "reference_images": ["https://img.test/cat.png", "https://img.test/hat.png"]})
    assert sent_json(ark, 0) == {"model": "doubao-seedance-1-5-pro-251215",
                                 "content": [{"type": "text", "text": "waves"}], "frames": 121}
    assert sent_json(ark, 1)["content"][1:] == [
        {"type": "image_url", "image_url": {"url": "https://img.test/cat.png"}, "role": "reference_image"},
        {"type": "image_url", "image_url": {"url": "https://img.test/hat.png"}, "role": "reference_image"},
    ]


@pytest.mark.parametrize("arguments, message", [
    ({"last_frame": "https://img.test/l.png"}, "last_frame needs first_frame"),
    ({"first_frame": "https://img.test/f.png", "reference_images": ["https://img.test/r.png"]},
     "either reference_images or first_frame/last_frame"),
    ({"reference_images": ["https://img.test/r.png"] * 5}, "1 to 4 images, got 5"),
    ({"duration": 5, "frames": 121}, "duration or frames, not both"),
    ({"duration": 1}, "must be 2..12 seconds"),
    ({"duration": 13}, "must be 2..12 seconds"),
    ({"frames": 30}, "25 + 4n"),
    ({"frames": 293}, "frames"),
    ({"resolution": "4k"}, "resolution"),
    ({"ratio": "2:1"}, "ratio"),
    ({"service_tier": "cheap"}, "service_tier"),
    ({"seed": 2**32}, "seed"),
    ({"camera_fixed": "yes please"}, "camera_fixed"),
    ({"callback_url": "not a url"}, "callback_url"),
    ({"first_frame": "/no/such/file.png"}, "first_frame"),
])
async def test_generate_video_refuses_impossible_requests_before_any_request(
        ark: Any, arguments: dict[str, Any], message: str) -> None:
    text = error_text(await call("generate_video", {"prompt": "a scene", **arguments}))
    assert message in text
    assert len(ark.calls) == 0


# --- query / list / cancel --------------------------------------------------------------------


async def test_query_video_task_returns_the_normalized_view(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-20250331175019-6htr8", json=SUCCEEDED_TASK)
    result = await call("query_video_task", {"task_id": "cgt-20250331175019-6htr8"})
    assert ark.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    assert result.structured_content == {
        "task_id": "cgt-20250331175019-6htr8", "status": "succeeded", "model": "doubao-seedance-1-0-pro-250528",
        "video_url": "https://cdn.test/v.mp4?sig=1", "last_frame_url": "https://cdn.test/last.png",
        "created_at": "2025-03-31T09:50:19Z", "updated_at": "2025-03-31T09:51:13Z", "resolution": "720p",
        "ratio": "16:9", "duration": 5, "fps": 24, "seed": 10,
        "usage": {"completion_tokens": 108900, "total_tokens": 108900},
        "next_step": doubao_mcp.URL_LIFETIME_NOTE,
    }


async def test_a_failed_task_is_a_result_not_an_error(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-x", json={"id": "cgt-x", "status": "failed", "frames": 121,
                                    "error": {"code": "OutputVideoSensitiveContentDetected", "message": "blocked"}})
    result = await call("query_video_task", {"task_id": "cgt-x"})
    assert not result.is_error
    assert result.structured_content["error_code"] == "OutputVideoSensitiveContentDetected"
    assert result.structured_content["error_message"] == "blocked"
    assert result.structured_content["frames"] == 121
    assert "generate_video again" in result.structured_content["next_step"]


@pytest.mark.parametrize("task_id", ["", "   ", " cgt-1", "cgt/1", "../tasks", "cgt-1..2", "cgt-1%2F", "cgt\n1",
                                     "cgt-ü", "c" * 129])
async def test_task_ids_are_checked_before_any_request(ark: Any, task_id: str) -> None:
    for tool in ("query_video_task", "cancel_video_task"):
        assert "task_id" in error_text(await call(tool, {"task_id": task_id}))
    assert "task_ids" in error_text(await call("list_video_tasks", {"task_ids": ["cgt-ok", task_id]}))
    assert len(ark.calls) == 0


def test_task_ids_are_url_encoded_in_the_path(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt%3A1", json={"id": "cgt:1", "status": "queued"})
    ArkClient(BASE).get_task("cgt:1", KEY)
    assert ark.calls[0].request.url == f"{TASKS}/cgt%3A1"


async def test_list_video_tasks_sends_filters_and_normalizes_each_task(ark: Any) -> None:
    ark.get(TASKS, json={"total": 2, "items": [
        SUCCEEDED_TASK, {"id": "cgt-2", "status": "failed", "failure_reason": {"code": "E", "message": "boom"}}]})
    result = await call("list_video_tasks", {"status": "succeeded", "model": "doubao-seedance-1-0-pro-250528",
                                             "task_ids": ["cgt-1", "cgt-2"], "page_num": 2, "page_size": 50})
    sent = urlsplit(ark.calls[0].request.url)
    assert sent.path == "/api/v3/contents/generations/tasks"
    assert parse_qsl(sent.query) == [("page_num", "2"), ("page_size", "50"), ("filter.status", "succeeded"),
                                     ("filter.model", "doubao-seedance-1-0-pro-250528"),
                                     ("filter.task_ids", "cgt-1"), ("filter.task_ids", "cgt-2")]
    listing = result.structured_content
    assert listing["total"] == 2
    assert listing["tasks"][0]["video_url"] == "https://cdn.test/v.mp4?sig=1"
    assert (listing["tasks"][1]["error_code"], listing["tasks"][1]["error_message"]) == ("E", "boom")


async def test_list_video_tasks_without_filters_sends_no_query(ark: Any) -> None:
    ark.get(TASKS, json={"total": 0, "items": []})
    result = await call("list_video_tasks", {})
    assert ark.calls[0].request.url == TASKS
    assert result.structured_content == {"total": 0, "tasks": []}


@pytest.mark.parametrize("status, outcome", [("queued", "cancelled"), ("succeeded", "deleted"),
                                             ("failed", "deleted"), ("expired", "deleted")])
async def test_cancel_video_task_says_whether_it_cancelled_or_deleted(ark: Any, status: str, outcome: str) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": status})
    ark.delete(f"{TASKS}/cgt-1", json={})
    result = await call("cancel_video_task", {"task_id": "cgt-1"})
    assert ark.calls[1].request.method == "DELETE"
    assert ark.calls[1].request.headers["Authorization"] == f"Bearer {KEY}"
    assert result.structured_content["outcome"] == outcome
    assert result.structured_content["previous_status"] == status


async def test_cancelling_a_running_task_explains_arks_refusal(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "running"})
    ark.delete(f"{TASKS}/cgt-1", status=400, json={"error": {
        "code": "InvalidParameter", "message": "task cannot be deleted in status running. Request id: 0217abc"}})
    text = error_text(await call("cancel_video_task", {"task_id": "cgt-1"}))
    assert "Ark API error 400 InvalidParameter: task cannot be deleted in status running (request id 0217abc)." in text
    assert "The task is running: Ark cannot cancel or delete it now. Wait until it finishes" in text


async def test_cancelling_an_unknown_task_says_so(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-gone", status=404, json={"error": {"code": "ResourceNotFound", "message": "not found"}})
    text = error_text(await call("cancel_video_task", {"task_id": "cgt-gone"}))
    assert "Ark API error 404 ResourceNotFound: not found" in text
    assert doubao_mcp.TASK_NOT_FOUND_HINT in text


# --- Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status, body, headers, expected", [
    (401, {"error": {"code": "AuthenticationError", "message": "the API key is invalid"}}, {},
     "Ark API error 401 AuthenticationError: the API key is invalid (request id {sent}). Check ARK_API_KEY"),
    (404, {"error": {"code": "ModelNotOpen", "message": "Your account has not activated the model. Request id: 02174"}},
     {}, "Ark API error 404 ModelNotOpen: Your account has not activated the model (request id 02174). "
         "Activate the model in the Ark console or set DOUBAO_VIDEO_MODEL."),
    (400, {"error": {"code": "InvalidParameter", "message": "bad duration", "param": "duration"}},
     {"X-Request-Id": "req-9"}, "Ark API error 400 InvalidParameter: bad duration (param duration, request id req-9)."),
    (400, {"error": {"code": "InputTextSensitiveContentDetected", "message": "flagged"}}, {},
     "rephrase the prompt or use another image"),
    (403, {"error": {"code": "AccountOverdueError", "message": "overdue"}}, {}, "top it up"),
    (429, {"error": {"code": "RateLimitExceeded.EndpointRPM", "message": "slow down"}}, {},
     "Ark API error 429 RateLimitExceeded.EndpointRPM: slow down"),
    (429, {"error": {"code": "QuotaExceeded", "message": "too many"}}, {}, "120 per account"),
    (500, {"error": {"code": "InternalServiceError", "message": "oops"}}, {}, "retry in a minute"),
    (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"},
     "Ark API error 502: Bad Gateway; non-JSON response (text/html): '502 Bad Gateway' (request id {sent}). "
     "Ark failed on its side"),
    (503, "", {}, "Ark API error 503: Service Unavailable; empty response"),
    (500, '{"error": {"code": "Internal', {"Content-Type": "application/json"}, "non-JSON response (application/json)"),
    (302, "", {"Location": "https://elsewhere.test/"}, "Ark API error 302: redirect to https://elsewhere.test/"),
])
async def test_non_2xx_answers_become_one_clear_error(ark: Any, status: int, body: Any, headers: dict[str, str],
                                                      expected: str) -> None:
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    ark.post(TASKS, status=status, headers=headers, **kwargs)
    text = error_text(await call("generate_video", {"prompt": "a"}))
    sent = ark.calls[0].request.headers["X-Client-Request-Id"]
    assert expected.format(sent=sent) in text
    assert KEY not in text


async def test_model_hint_names_the_image_variable_for_image_calls(ark: Any) -> None:
    ark.post(IMAGES, status=404, json={"error": {"code": "InvalidEndpointOrModel.NotFound", "message": "no model"}})
    assert "set DOUBAO_IMAGE_MODEL" in error_text(await call("generate_image", {"prompt": "a"}))


def test_the_error_carries_status_code_message_param_and_request_id(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", status=400, headers={"X-Client-Request-Id": "echoed"},
            json={"error": {"code": "InvalidParameter.TaskId", "message": "bad id", "param": "id"}})
    with pytest.raises(ArkAPIError) as raised:
        ArkClient(BASE).get_task("cgt-1", KEY)
    error = raised.value
    assert (error.status, error.code, error.message, error.param, error.request_id) == (
        400, "InvalidParameter.TaskId", "bad id", "id", "echoed")


async def test_an_error_page_echoing_the_key_is_redacted(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", status=502, body=f"<pre>Authorization: Bearer {KEY}</pre>")
    text = error_text(await call("query_video_task", {"task_id": "cgt-1"}))
    assert "Bearer ***" in text and KEY not in text


@pytest.mark.parametrize("failure, expected", [
    (requests.ReadTimeout("read timed out"), "Ark did not answer GET https://ark.test/api/v3/contents/generations/"
                                             "tasks/cgt-1 within 30 s"),
    (requests.ConnectTimeout("connect timed out"), "Timed out connecting to https://ark.test"),
    (requests.ConnectionError("[Errno 111] Connection refused"), "Connection to Ark failed for GET https://ark.test"
                                                                 "/api/v3/contents/generations/tasks/cgt-1: [Errno 111] Connection refused"),
])
async def test_timeouts_and_connection_failures_are_explained(ark: Any, failure: Exception, expected: str) -> None:
    ark.get(f"{TASKS}/cgt-1", body=failure)
    assert expected in error_text(await call("query_video_task", {"task_id": "cgt-1"}))


@pytest.mark.parametrize("body, expected", [
    ("<html>maintenance</html>", "not a JSON object: non-JSON response"),
    ("[1, 2]", "not a JSON object"),
    ('{"data": "nope"}', "an image result without a data list"),
])
async def test_unreadable_2xx_bodies_are_explained(ark: Any, body: str, expected: str) -> None:
    ark.post(IMAGES, body=body, content_type="application/json")
    assert expected in error_text(await call("generate_image", {"prompt": "a"}))


async def test_a_task_record_with_wrong_types_is_explained_not_crashed(ark: Any) -> None:
    ark.get(f"{TASKS}/cgt-1", json={"id": 12, "status": ["running"]})
    ark.get(f"{TASKS}/cgt-2", json={"id": "cgt-2", "status": "running", "content": "x", "duration": "5",
                                    "usage": [1], "created_at": "yesterday"})
    assert "without an id or status" in error_text(await call("query_video_task", {"task_id": "cgt-1"}))
    shaped = (await call("query_video_task", {"task_id": "cgt-2"})).structured_content
    assert shaped == {"task_id": "cgt-2", "status": "running", "created_at": "yesterday",
                      "next_step": doubao_mcp.NEXT_STEP["running"].format(task_id="cgt-2")}


def test_requests_use_connect_and_read_timeouts(ark: Any) -> None:
    ark.post(IMAGES, json={"data": []})
    ark.get(f"{TASKS}/cgt-1", json={"id": "cgt-1", "status": "queued"})
    client = ArkClient(BASE, image_timeout=120)
    client.generate_images({"model": "m", "prompt": "p"}, KEY)
    client.get_task("cgt-1", KEY)
    assert ark.calls[0].request.req_kwargs["timeout"] == (doubao_mcp.CONNECT_TIMEOUT, 120)
    assert ark.calls[1].request.req_kwargs["timeout"] == (doubao_mcp.CONNECT_TIMEOUT, doubao_mcp.TASK_TIMEOUT)


async def test_without_a_key_tools_are_listed_and_calls_name_ark_api_key(ark: Any) -> None:
    config = Config.from_env({"ARK_BASE_URL": BASE})
    async with Client(build_server(config)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("query_video_task", {"task_id": "cgt-1"})
    assert names == {"generate_image", "generate_video", "query_video_task", "list_video_tasks", "cancel_video_task"}
    assert "set ARK_API_KEY" in error_text(result)
    assert len(ark.calls) == 0


async def test_tools_declare_output_schemas_and_annotations() -> None:
    async with Client(build_server(Config.from_env())) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    hints = {name: (t.annotations.read_only_hint, t.annotations.destructive_hint, t.annotations.open_world_hint)
             for name, t in tools.items()}
    assert hints == {"generate_image": (False, False, True), "generate_video": (False, False, True),
                     "query_video_task": (True, None, True), "list_video_tasks": (True, None, True),
                     "cancel_video_task": (False, True, True)}
    assert tools["query_video_task"].output_schema["required"] == ["task_id", "status", "next_step"]
    assert tools["generate_image"].input_schema["properties"]["max_images"] == {
        "description": "Above 1: a set of up to this many related images (Seedream 4.x).",
        "maximum": 15, "minimum": 1, "type": "integer"}
    listing = json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.values()])
    assert '"title": "Prompt"' not in listing


# --- The console script, end to end -----------------------------------------------------------


class FakeArk:
    """A small Ark look-alike on 127.0.0.1: image generation and the video-task lifecycle.

    A task is queued when created and at its first GET, running after that, and succeeded
    from its `polls_to_finish`-th GET on. Every request is recorded with the key it carried.
    """

    def __init__(self, polls_to_finish: int = 3):
        self.polls_to_finish = polls_to_finish
        self.requests: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v3"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeArk:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, path: str, query: list[tuple[str, str]], body: Any) -> tuple[int, Any]:
        with self.lock:
            if method == "POST" and path == "/api/v3/images/generations":
                return 200, {"model": body["model"], "created": 1757321139,
                             "data": [{"url": "https://cdn.test/image-0.jpeg", "size": "2048x2048"}]}
            if method == "POST" and path == "/api/v3/contents/generations/tasks":
                task_id = f"cgt-fake-{len(self.tasks) + 1}"
                self.tasks[task_id] = {"id": task_id, "model": body["model"], "status": "queued", "polls": 0,
                                       "created_at": 1743414619, "updated_at": 1743414619}
                return 200, {"id": task_id}
            if method == "GET" and path == "/api/v3/contents/generations/tasks":
                wanted = {v for k, v in query if k == "filter.task_ids"}
                items = [self._view(t) for t in reversed(self.tasks.values()) if not wanted or t["id"] in wanted]
                return 200, {"total": len(items), "items": items}
            task = self.tasks.get(path.rsplit("/", 1)[-1])
            if task is None:
                return 404, {"error": {"code": "ResourceNotFound", "message": "task not found"}}
            if method == "GET":
                task["polls"] += 1
                if task["status"] in ("queued", "running") and task["polls"] > 1:
                    task["status"] = "succeeded" if task["polls"] >= self.polls_to_finish else "running"
                return 200, self._view(task)
            if method == "DELETE":
                if task["status"] == "queued":
                    task["status"] = "cancelled"
                elif task["status"] in ("succeeded", "failed", "expired"):
                    del self.tasks[task["id"]]
                else:
                    return 400, {"error": {"code": "InvalidParameter",
                                           "message": f"cannot delete a {task['status']} task"}}
                return 200, {}
        return 404, {"error": {"code": "NotFound", "message": "no such route"}}

    @staticmethod
    def _view(task: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in task.items() if k != "polls"}
        if task["status"] == "succeeded":
            view.update(content={"video_url": f"https://cdn.test/{task['id']}.mp4"}, resolution="720p",
                        ratio="16:9", duration=5, framespersecond=24)
        return view

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                split = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                query = parse_qsl(split.query)
                fake.requests.append({"method": self.command, "path": split.path, "query": query, "body": body,
                                      "authorization": self.headers.get("Authorization")})
                status, answer = fake.handle(self.command, split.path, query, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def fake_ark() -> Any:
    with FakeArk() as fake:
        yield fake


def stdio_server(fake: FakeArk, **env: str) -> StdioServerParameters:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: install the project first (see README: pip install -e '.[test]')")
    return StdioServerParameters(command=str(SCRIPT), env={"ARK_API_KEY": KEY, "ARK_BASE_URL": fake.url, **env})


async def test_console_script_runs_the_whole_video_task_lifecycle_over_stdio(fake_ark: FakeArk) -> None:
    async with Client(stdio_server(fake_ark)) as client:
        created = await client.call_tool("generate_video", {"prompt": "a fox", "duration": 5})
        task_id = created.structured_content["task_id"]
        statuses = []
        for _ in range(5):
            task = (await client.call_tool("query_video_task", {"task_id": task_id})).structured_content
            statuses.append(task["status"])
            if task["status"] == "succeeded":
                break
        listing = (await client.call_tool("list_video_tasks", {"task_ids": [task_id]})).structured_content
        deleted = (await client.call_tool("cancel_video_task", {"task_id": task_id})).structured_content
        gone = await client.call_tool("query_video_task", {"task_id": task_id})
    assert created.structured_content["status"] == "queued"
    assert statuses == ["queued", "running", "succeeded"]
    assert task["video_url"] == f"https://cdn.test/{task_id}.mp4"
    assert [t["task_id"] for t in listing["tasks"]] == [task_id] and listing["total"] == 1
    assert (deleted["outcome"], deleted["previous_status"]) == ("deleted", "succeeded")
    assert "Ark API error 404 ResourceNotFound" in error_text(gone)
    assert fake_ark.requests[0]["body"] == {"model": "doubao-seedance-1-5-pro-251215", "duration": 5,
                                            "content": [{"type": "text", "text": "a fox"}]}
    assert {r["authorization"] for r in fake_ark.requests} == {f"Bearer {KEY}"}


async def test_console_script_generates_images_and_cancels_queued_tasks(fake_ark: FakeArk) -> None:
    async with Client(stdio_server(fake_ark, DOUBAO_IMAGE_MODEL="ep-image")) as client:
        image = (await client.call_tool("generate_image", {"prompt": "a fox"})).structured_content
        task_id = (await client.call_tool("generate_video", {"prompt": "a fox"})).structured_content["task_id"]
        cancelled = (await client.call_tool("cancel_video_task", {"task_id": task_id})).structured_content
    assert image["images"] == [{"index": 0, "url": "https://cdn.test/image-0.jpeg", "size": "2048x2048"}]
    assert fake_ark.requests[0]["body"] == {"model": "ep-image", "prompt": "a fox"}
    assert (cancelled["outcome"], cancelled["previous_status"]) == ("cancelled", "queued")
    assert fake_ark.tasks[task_id]["status"] == "cancelled"


@pytest.mark.parametrize("command", [[str(SCRIPT)], [str(SCRIPT.with_name("doubao-mcp"))],
                                     [sys.executable, "-m", "doubao_mcp"]])
def test_help_and_version_need_no_key_and_no_network(command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "ARK_BASE_URL": "http://127.0.0.1:9/unreachable"}
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, env=env, timeout=30)
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert version.returncode == 0 and version.stdout.strip() == f"doubao-image-video-mcp {doubao_mcp.__version__}"
    assert helped.returncode == 0 and "ARK_API_KEY" in helped.stdout


def test_a_bad_setting_stops_start_up_with_a_message_on_stderr_only() -> None:
    run = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=30, input="",
                         env={"PATH": "/usr/bin:/bin", "ARK_BASE_URL": "ftp://ark"})
    assert run.returncode != 0
    assert run.stdout == ""
    assert "ARK_BASE_URL must be an http(s) URL" in run.stderr and "Traceback" not in run.stderr
