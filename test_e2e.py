"""End-to-end tests: the installed console script over stdio and HTTP, a real browser for the viewer, several
processes sharing one task record, real full and locked disks. Marked e2e: `python -m pytest -m e2e`."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx2
import mcp_types
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import doubao_mcp
from conftest import (
    ASSET_PHOTO,
    ASSET_SECRET,
    BASE,
    DANCE_20,
    FLASH,
    KEY,
    NOT_FOUND,
    PICTURE,
    PNG,
    PRO,
    S45,
    SCRIPT,
    SCRIPT_ENV,
    STORAGE_SECRET,
    TASK_ID,
    TASKS_ROUTE,
    UPLOAD_BUCKET,
    URL,
    VIDEO_BYTES,
    FakeArk,
    FakeAssets,
    Hold,
    HttpServer,
    LockHolder,
    Stderr,
    answer,
    ark_error,
    call,
    data_url,
    error_text,
    finished_task_and_files,
    jpegs,
    make_server,
    mp4,
    posted_models,
    rows,
    sha256,
    write,
)
from doubao_mcp import ArkClient, Config

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def stdio_server(fake: FakeArk, **env: str) -> StdioServerParameters:
    if not SCRIPT.exists():
        pytest.fail(
            f"{SCRIPT} is missing: install the project first (see README: pip install -e '.[test]')"
        )
    return StdioServerParameters(
        command=str(SCRIPT),
        env={
            "ARK_API_KEY": KEY,
            "ARK_BASE_URL": fake.url,
            "DOUBAO_STATE_DIR": "off",
            **env,
        },
    )


def start_with_stdin_closed(
    *argv: str, **env: str
) -> subprocess.CompletedProcess[bytes]:
    """The console script started as a client would, with `env` over the tests' own, and stdin closed at once:
    it starts (or refuses to) and ends."""
    return subprocess.run(
        [str(SCRIPT), *argv],
        input=b"",
        capture_output=True,
        timeout=30,
        env={**SCRIPT_ENV, **env},
    )


def jsonrpc_lines(*calls: dict[str, Any]) -> bytes:
    """What a client writes to a server's stdin: initialize, initialized, then `calls` (each with its own id)."""
    opening = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    return b"".join(json.dumps(m).encode() + b"\n" for m in [*opening, *calls])


def tool_call(number: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": number,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


async def test_console_script_runs_the_whole_video_task_lifecycle_over_stdio(
    fake_ark: FakeArk,
) -> None:
    async with Client(stdio_server(fake_ark)) as client:
        created = await client.call_tool(
            "generate_video", {"prompt": "a fox", "duration": 5}
        )
        task_id = created.structured_content["task_id"]
        statuses = []
        for _ in range(5):
            task = (
                await client.call_tool("query_video_task", {"task_id": task_id})
            ).structured_content
            statuses.append(task["status"])
            if task["status"] == "succeeded":
                break
        listing = (
            await client.call_tool("list_video_tasks", {"task_ids": [task_id]})
        ).structured_content
        deleted = (
            await client.call_tool("cancel_video_task", {"task_id": task_id})
        ).structured_content
        gone = await client.call_tool("query_video_task", {"task_id": task_id})
    assert created.structured_content["status"] == "queued"
    assert statuses == ["queued", "running", "succeeded"]
    assert task["video_url"] == f"{fake_ark.root}/files/{task_id}.mp4?sig=x"
    assert [t["task_id"] for t in listing["tasks"]] == [task_id] and listing[
        "total"
    ] == 1
    assert (deleted["outcome"], deleted["previous_status"]) == ("deleted", "succeeded")
    assert "Ark API error 404 ResourceNotFound" in error_text(gone)
    assert fake_ark.requests[0]["body"] == {
        "model": "doubao-seedance-2-0-260128",
        "duration": 5,
        "content": [{"type": "text", "text": "a fox"}],
    }
    assert {r["authorization"] for r in fake_ark.requests} == {f"Bearer {KEY}"}


async def test_console_script_generates_images_and_cancels_queued_tasks(
    fake_ark: FakeArk,
) -> None:
    async with Client(stdio_server(fake_ark, DOUBAO_IMAGE_MODEL="ep-image")) as client:
        image = (
            await client.call_tool("generate_image", {"prompt": "a fox"})
        ).structured_content
        task_id = (
            await client.call_tool("generate_video", {"prompt": "a fox"})
        ).structured_content["task_id"]
        cancelled = (
            await client.call_tool("cancel_video_task", {"task_id": task_id})
        ).structured_content
    assert image["images"] == [
        {"index": 0, "url": f"{fake_ark.root}/files/image-0.png", "size": "1024x768"}
    ]
    assert fake_ark.requests[0]["body"] == {"model": "ep-image", "prompt": "a fox"}
    assert (cancelled["outcome"], cancelled["previous_status"]) == (
        "cancelled",
        "queued",
    )
    assert fake_ark.tasks[task_id]["status"] == "cancelled"


async def test_console_script_runs_the_draft_then_final_flow_and_multimodal_references(
    fake_ark: FakeArk,
) -> None:
    async def finished(client: Any, task_id: str) -> dict[str, Any]:
        for _ in range(fake_ark.polls_to_finish):
            task = (
                await client.call_tool("query_video_task", {"task_id": task_id})
            ).structured_content
        return task

    model = "doubao-seedance-1-5-pro-251215"
    async with Client(stdio_server(fake_ark)) as client:
        draft_id = (
            await client.call_tool(
                "generate_video",
                {"prompt": "a fox at dawn", "model": model, "draft": True},
            )
        ).structured_content["task_id"]
        early = await client.call_tool(
            "generate_video", {"model": model, "draft_task_id": draft_id}
        )
        draft = await finished(client, draft_id)
        final_id = (
            await client.call_tool(
                "generate_video", {"model": model, "draft_task_id": draft_id}
            )
        ).structured_content["task_id"]
        final = await finished(client, final_id)
        multimodal = await client.call_tool(
            "generate_video",
            {
                "prompt": "@Image1 dances to @Audio1 in the style of @Video1",
                "reference_images": [URL + "dancer.png"],
                "reference_videos": [URL + "style.mp4"],
                "reference_audios": ["asset://asset-2026-song"],
            },
        )
    assert (
        "Ark API error 400 InvalidParameter: draft_task must name a succeeded draft task"
        in error_text(early)
    )
    assert (draft["status"], draft["draft"]) == ("succeeded", True)
    assert (final["status"], final["draft"], final["draft_task_id"]) == (
        "succeeded",
        False,
        draft_id,
    )
    creations = [r["body"] for r in fake_ark.requests if r["method"] == "POST"]
    assert creations[0] == {
        "model": model,
        "content": [{"type": "text", "text": "a fox at dawn"}],
        "draft": True,
    }
    assert creations[2] == {
        "model": model,
        "content": [{"type": "draft_task", "draft_task": {"id": draft_id}}],
    }
    assert not multimodal.is_error, multimodal.content
    assert [item["type"] for item in creations[3]["content"]] == [
        "text",
        "image_url",
        "video_url",
        "audio_url",
    ]


async def test_console_script_waits_with_progress_and_saves_a_video_made_from_a_local_file(
    tmp_path: Path,
) -> None:
    frame = Path(write(tmp_path / "first frame.png", PNG))
    out = tmp_path / "videos"
    out.mkdir()
    updates: list[str | None] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        updates.append(message)

    # Queued at the first look, done at the next: a wait with progress, then a save.
    with FakeArk(polls_to_finish=2) as fake:
        async with Client(stdio_server(fake)) as client:
            result = await client.call_tool(
                "generate_video",
                {
                    "prompt": "the fox wakes up",
                    "first_frame": str(frame),
                    "wait_seconds": 55,
                    "save_dir": str(out),
                },
                progress_callback=progress,
            )
    task = result.structured_content
    assert task["status"] == "succeeded", result
    assert fake.requests[0]["body"]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": data_url("image/png", PNG)},
        "role": "first_frame",
    }
    video = out.resolve() / f"{task['task_id']}.mp4"
    assert task["saved_files"] == [
        {
            "path": str(video),
            "bytes": len(VIDEO_BYTES),
            "sha256": sha256(VIDEO_BYTES),
            "kind": "video",
        }
    ]
    assert video.read_bytes() == VIDEO_BYTES and [p.name for p in out.iterdir()] == [
        video.name
    ]
    assert updates and updates[0] == f"{task['task_id']}: queued, 0 s of about 90 s"
    download = [r for r in fake.requests if r["path"].startswith("/files/")]
    assert len(download) == 1 and download[0]["authorization"] is None


# --- The fault and bad-input suite ---------------------------------------------------------------
# Every case runs against FakeArk over real sockets and must give a clear isError naming the cause,
# with no key in the text, no file left behind, and the server answering the next call.


async def test_over_http_each_callers_key_is_used_for_its_own_calls_only(
    fake_ark: FakeArk,
) -> None:
    keys = {i: f"caller-key-{i}-{'x' * 20}" for i in range(8)}

    async def caller(i: int) -> None:
        header = (
            {"Authorization": f"Bearer {keys[i]}"} if i % 2 else {"X-API-Key": keys[i]}
        )
        async with server_http.client(**header) as client:
            for _ in range(3):
                result = await client.call_tool(
                    "list_video_tasks", {"task_ids": [f"cgt-caller-{i}"]}
                )
                assert not result.is_error, result.content

    with HttpServer(fake_ark, "--log-level", "DEBUG") as server_http:
        async with anyio.create_task_group() as group:
            for i in keys:
                group.start_soon(caller, i)
    # Each listing asks for its task by id, and then (Ark knows no such task) asks about it alone.
    upstream = [
        (
            dict(r["query"]).get("filter.task_ids") or r["path"].rsplit("/", 1)[1],
            r["authorization"],
        )
        for r in fake_ark.requests
    ]
    assert len(upstream) == 48
    assert all(
        key == f"Bearer {keys[int(task.rsplit('-', 1)[1])]}" for task, key in upstream
    )
    # Logs go to stderr, even uvicorn's
    assert server_http.stdout == ""
    assert "doubao_mcp" in server_http.stderr or "uvicorn" in server_http.stderr
    assert (
        not any(key in server_http.stderr for key in keys.values())
        and "Traceback" not in server_http.stderr
    )


async def test_beyond_loopback_without_a_key_calls_are_refused_before_ark(
    fake_ark: FakeArk,
) -> None:
    with HttpServer(fake_ark, "--host", "0.0.0.0") as server_http:
        async with server_http.client() as client:
            result = await client.call_tool("generate_video", {"prompt": "a fox"})
    assert (
        "No Ark API key: send yours with the request as 'Authorization: Bearer <Ark API key>'"
        in error_text(result)
    )
    assert fake_ark.requests == []
    assert "DNS-rebinding protection is off for 0.0.0.0" in server_http.stderr


async def test_over_http_the_server_key_serves_callers_without_one_and_progress_arrives(
    fake_ark: FakeArk,
) -> None:
    fake_ark.polls_to_finish = 2
    updates: list[str | None] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        updates.append(message)

    with HttpServer(fake_ark, ARK_API_KEY=KEY) as server_http:
        async with server_http.client() as client:
            created = (
                await client.call_tool("generate_video", {"prompt": "a fox"})
            ).structured_content
        # A new connection: nothing was kept between them
        async with server_http.client() as client:
            task = (
                await client.call_tool(
                    "query_video_task",
                    {"task_id": created["task_id"], "wait_seconds": 30},
                    progress_callback=progress,
                )
            ).structured_content
    assert task["status"] == "succeeded"
    assert updates and updates[0].startswith(
        f"{created['task_id']}: queued, 0 s of about "
    )
    assert {r["authorization"] for r in fake_ark.requests} == {f"Bearer {KEY}"}


def post_tools_list(url: str, host: str) -> Any:
    return httpx2.post(
        url,
        headers={"Host": host, "Accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    )


def test_the_host_check_guards_loopback_and_named_hosts(fake_ark: FakeArk) -> None:
    with HttpServer(fake_ark) as loopback:
        assert post_tools_list(loopback.url, "evil.example").status_code == 421
        answer = post_tools_list(loopback.url, f"127.0.0.1:{loopback.port}")
        # Stateless
        assert answer.status_code == 200 and "mcp-session-id" not in answer.headers
    with HttpServer(
        fake_ark, "--host", "0.0.0.0", DOUBAO_MCP_ALLOWED_HOSTS="mcp.example.com"
    ) as named:
        assert post_tools_list(named.url, "evil.example").status_code == 421
        assert post_tools_list(named.url, "mcp.example.com").status_code == 200
        assert (
            post_tools_list(named.url, f"mcp.example.com:{named.port}").status_code
            == 200
        )


async def test_over_http_local_files_need_an_allowed_folder_and_stay_in_it(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    write(allowed / "frame.png", PNG)
    write(tmp_path / "secret.png", PNG)
    with HttpServer(fake_ark, ARK_API_KEY=KEY) as closed:
        async with closed.client() as client:
            refused = await client.call_tool(
                "generate_video",
                {"prompt": "a", "first_frame": str(allowed / "frame.png")},
            )
            no_save = await client.call_tool(
                "query_video_task", {"task_id": "cgt-1", "save_dir": str(allowed)}
            )
    with HttpServer(
        fake_ark, ARK_API_KEY=KEY, DOUBAO_ALLOWED_DIR=str(allowed)
    ) as opened:
        async with opened.client() as client:
            inside = await client.call_tool(
                "generate_video", {"prompt": "a", "first_frame": "frame.png"}
            )
            outside = await client.call_tool(
                "generate_video", {"prompt": "a", "first_frame": "../secret.png"}
            )
    assert (
        "first_frame: local files are off because this server is used over HTTP"
        in error_text(refused)
    )
    assert (
        "save_dir: saving is off because this server is used over HTTP"
        in error_text(no_save)
    )
    assert "download the result URLs yourself" in error_text(
        no_save
    ) and "data:" not in error_text(no_save)
    assert (
        not inside.is_error
        and "'../secret.png' is outside the allowed folder" in error_text(outside)
    )
    assert [r["body"]["content"][1]["image_url"]["url"] for r in fake_ark.requests] == [
        data_url("image/png", PNG)
    ]


def test_stdio_carries_only_protocol_messages_and_ends_cleanly_on_ctrl_c(
    fake_ark: FakeArk,
) -> None:
    process = subprocess.Popen(
        [str(SCRIPT), "--log-level", "debug"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**SCRIPT_ENV, "ARK_BASE_URL": fake_ark.url},
    )
    assert process.stdin and process.stdout
    process.stdin.write(
        jsonrpc_lines(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            tool_call(3, "list_video_tasks", {}),
            tool_call(4, "generate_video", {}),
        )
        + b"not json at all\n"
    )
    process.stdin.flush()
    # The last line's -32700 among them
    answers = [json.loads(process.stdout.readline()) for _ in range(5)]
    process.send_signal(signal.SIGINT)
    # With stdin still open, as when Ctrl-C is pressed
    process.wait(timeout=15)
    rest, err = process.communicate()
    replies = sorted((r for r in answers if r["id"] is not None), key=lambda r: r["id"])
    assert [r["id"] for r in replies] == [1, 2, 3, 4] and all(
        r["jsonrpc"] == "2.0" for r in answers
    )
    assert [r["error"]["code"] for r in answers if r["id"] is None] == [-32700]
    assert "set ARK_API_KEY" in replies[2]["result"]["content"][0]["text"]
    assert replies[3]["result"]["isError"] and rest == b""
    assert (
        process.returncode == 0
        and b"Traceback" not in err
        and b"ARK_API_KEY is not set" in err
    )


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_started_by_hand_it_says_it_waits_for_a_client_and_ctrl_c_stops_it() -> None:
    import pty

    terminal, keyboard = pty.openpty()
    process = subprocess.Popen(
        [str(SCRIPT)],
        stdin=keyboard,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**SCRIPT_ENV, "ARK_API_KEY": KEY},
    )
    assert process.stderr
    first_line = process.stderr.readline()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=15)
    out, err = process.communicate()
    os.close(terminal)
    os.close(keyboard)
    assert b"waits for an MCP client" in first_line and b"Ctrl-C stops it" in first_line
    assert (process.returncode, out) == (0, b"") and b"Traceback" not in err


CTRL_C_DURING_A_STDERR_WRITE = """
import io, os, signal, sys
import doubao_mcp

signal.signal(signal.SIGINT, doubao_mcp.exit_at_once)


class Terminal(io.RawIOBase):
    def writable(self):
        return True

    def write(self, data):  # runs with the BufferedWriter's lock held, as a real banner write does
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # bytecode boundaries: the Python-level handler runs here
            pass
        return len(data)


sys.stderr = io.TextIOWrapper(io.BufferedWriter(Terminal()), line_buffering=True)
sys.stderr.write("doubao-mcp is serving MCP on stdin/stdout...\\n")
os._exit(3)  # reached only if the handler returned instead of ending the process
"""


def test_ctrl_c_that_lands_inside_a_stderr_write_still_exits_with_status_0() -> None:
    """The start-up banner race, made deterministic: the signal arrives while stderr's buffer is locked."""
    run = subprocess.run(
        [sys.executable, "-c", CTRL_C_DURING_A_STDERR_WRITE],
        capture_output=True,
        timeout=30,
    )
    assert (run.returncode, run.stdout) == (0, b""), run.stderr
    assert b"reentrant" not in run.stderr


def test_closing_stdin_ends_the_server_cleanly() -> None:
    run = start_with_stdin_closed(ARK_API_KEY=KEY)
    assert (run.returncode, run.stdout) == (0, b"") and b"Traceback" not in run.stderr


@pytest.mark.parametrize(
    "command",
    [
        [str(SCRIPT)],
        [str(SCRIPT.with_name("doubao-mcp"))],
        [sys.executable, "-m", "doubao_mcp"],
    ],
)
def test_version_needs_no_key_and_no_network(command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "ARK_BASE_URL": "http://127.0.0.1:9/unreachable"}
    version = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, env=env, timeout=30
    )
    assert (
        version.returncode == 0
        and version.stdout.strip() == f"doubao-image-video-mcp {doubao_mcp.__version__}"
    )


# --- Holding up under load and against a hostile upstream ---------------------------------------------


def test_the_console_script_refuses_an_unusable_setting_on_stderr_only() -> None:
    """The console script's own streams and status; every other refusal is tested through main() in-process."""
    key = "ark-key-with-a-newline\nX-Evil: 1"
    run = start_with_stdin_closed(ARK_API_KEY=key)
    assert run.returncode != 0 and run.stdout == b""
    assert (
        b"ARK_API_KEY contains a control character or a character outside Latin-1"
        in run.stderr
    )
    assert (
        b"Traceback" not in run.stderr and key.split("\n")[0].encode() not in run.stderr
    )


async def test_over_http_x_api_key_wins_over_a_gateways_authorization(
    fake_ark: FakeArk,
) -> None:
    with HttpServer(fake_ark) as hosted:
        async with hosted.client(
            **{
                "Authorization": "Bearer gateway-token-0123456789",
                "X-API-Key": "caller-key-0123456789",
            }
        ) as client:
            result = await client.call_tool("list_video_tasks", {})
        async with hosted.client(
            **{"X-API-Key": "caller-key-\x01-0123456789"}
        ) as client:
            refused = await client.call_tool("list_video_tasks", {})
    assert not result.is_error
    assert [r["authorization"] for r in fake_ark.requests] == [
        "Bearer caller-key-0123456789"
    ]
    assert "Your API key header contains a control character" in error_text(refused)


@pytest.mark.skipif(
    os.name != "posix",
    reason="POSIX file locks: on Windows an old .part file is removed by age",
)
async def test_part_files_left_by_a_killed_server_are_removed_at_once_by_the_next_save(
    ark: Any, tmp_path: Path
) -> None:
    """Liveness is the writer's lock, not the file's age: a .part file written a moment ago by a process killed
    since is removed by the next save into the folder; one a live download holds is left alone."""
    stale, live = (
        write(tmp_path / ".cgt-old.0123abcd.part"),
        write(tmp_path / ".cgt-now.4567cdef.part"),
    )
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'ab'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
            live,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    # A download in another process, still going
    assert holder.stdout and holder.stdout.readline() == "locked\n"
    finished_task_and_files(ark)
    await call("query_video_task", {"task_id": TASK_ID, "save_dir": str(tmp_path)})
    holder.communicate("", timeout=10)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert Path(stale).name not in names and Path(live).name in names


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_lets_calls_in_flight_finish_and_ends_waits_with_the_task(
    fake_ark: FakeArk, stop: int
) -> None:
    fake_ark.polls_to_finish = 10**6
    results: list[Any] = []
    with HttpServer(fake_ark, ARK_API_KEY=KEY) as hosted:
        async with hosted.client() as client, anyio.create_task_group() as group:
            # The SDK client fetches tools/list after a tool's first result (to check it against the output
            # schema): done now, so that it makes no request once the server has stopped listening.
            await client.list_tools()

            async def waiting() -> None:
                results.append(
                    await client.call_tool(
                        "generate_video", {"prompt": "a fox", "wait_seconds": 55}
                    )
                )

            group.start_soon(waiting)
            # Made: its wait begins
            await anyio.to_thread.run_sync(fake_ark.requested, "POST", TASKS_ROUTE)
            hosted.process.send_signal(stop)
        hosted.process.wait(timeout=30)
    task = results[0].structured_content
    assert task["task_id"] == "cgt-fake-1" and task["status"] in ("queued", "running")
    assert (
        "This server is stopping, so it stopped waiting; the task goes on at Ark"
        in task["next_step"]
    )
    assert hosted.process.returncode == 0 and "Traceback" not in hosted.stderr


def test_closing_stdin_mid_download_ends_the_server_at_once_and_leaves_no_part_file(
    tmp_path: Path,
) -> None:
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="succeeded")
        hold = stalled_download(fake)
        process = subprocess.Popen(
            [str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**SCRIPT_ENV, "ARK_API_KEY": KEY, "ARK_BASE_URL": fake.url},
        )
        assert process.stdin
        process.stdin.write(
            jsonrpc_lines(
                tool_call(
                    2,
                    "query_video_task",
                    {"task_id": "cgt-done", "save_dir": str(tmp_path)},
                )
            )
        )
        process.stdin.flush()
        # The download has begun, and stalls
        hold.arrived(1)
        # The client goes away
        process.stdin.close()
        try:
            process.wait(timeout=15)
        finally:
            process.kill()
            hold.release()
        err = process.stderr.read() if process.stderr else b""
    assert process.returncode == 0 and b"Traceback" not in err
    assert list(tmp_path.iterdir()) == []


async def test_over_http_a_rejected_key_is_the_callers_own(fake_ark: FakeArk) -> None:
    fake_ark.faults[("GET", TASKS_ROUTE)] = ark_error(
        401, "AuthenticationError", "bad key"
    )
    with HttpServer(fake_ark, ARK_API_KEY=KEY) as hosted:
        async with hosted.client(**{"X-API-Key": "caller-key-0123456789"}) as client:
            mine = error_text(await client.call_tool("list_video_tasks", {}))
        async with hosted.client() as client:
            servers = error_text(await client.call_tool("list_video_tasks", {}))
    assert (
        "Ark refused the key this request sent (X-API-Key or Authorization: Bearer)"
        in mine
    )
    assert "ARK_API_KEY" not in mine and "Check ARK_API_KEY" in servers


@pytest.mark.parametrize("transport", ["streamable-http", "http"])
def test_http_start_up_says_where_to_connect(fake_ark: FakeArk, transport: str) -> None:
    with HttpServer(fake_ark, "--transport", transport) as hosted:
        assert (
            post_tools_list(hosted.url, f"127.0.0.1:{hosted.port}").status_code == 200
        )
    assert (
        f"serving MCP over streamable HTTP at http://127.0.0.1:{hosted.port}/mcp"
        in hosted.stderr
    )


# --- Showing what was made: previews and the viewer -------------------------------------------------------


async def test_generate_image_returns_a_small_preview_of_each_image_beside_the_result(
    fake_ark: FakeArk,
) -> None:
    async with Client(stdio_server(fake_ark)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "three foxes", "max_images": 3}
        )
    previews = jpegs(result)
    assert [item.type for item in result.content] == ["text", "image", "image", "image"]
    assert (
        len(result.structured_content["images"]) == 3
        and json.loads(result.content[0].text) == result.structured_content
    )
    assert all(max(image.size) <= 512 and image.format == "JPEG" for image in previews)
    assert all(
        len(base64.b64decode(item.data)) <= 100 * 1024
        for item in result.content
        if item.type == "image"
    )
    # The 1024x768 image, scaled down whole
    assert previews[0].size == (512, 384)


# The host side of SEP-1865, as small as a test can have it: the viewer in a sandboxed iframe under the CSP its
# resource declares; ui/initialize answered (dark theme); the tool's input and result sent once the view is
# initialized; the view's tools/call recorded and handed to Python, which calls the real server.
HOST_PAGE = """<!doctype html><html><body style="margin:0;background:#222">
<iframe id="view" sandbox="allow-scripts" style="border:0;width:640px;height:200px;background:#171717"></iframe>
<script>
const frame = document.getElementById("view");
window.calls = []; window.sizes = [];
function reply(id, result) { frame.contentWindow.postMessage({ jsonrpc: "2.0", id, result }, "*"); }
function notify(method, params) { frame.contentWindow.postMessage({ jsonrpc: "2.0", method, params }, "*"); }
addEventListener("message", async (event) => {
  const m = event.data;
  if (m.method === "ui/initialize") reply(m.id, { protocolVersion: "2026-01-26", hostInfo: { name: "test host",
    version: "1" }, hostCapabilities: { serverTools: {} }, hostContext: { theme: "dark", displayMode: "inline" } });
  if (m.method === "ui/notifications/initialized") {
    notify("ui/notifications/tool-input", { arguments: window.toolInput });
    notify("ui/notifications/tool-result", window.toolResult);
  }
  if (m.method === "ui/notifications/size-changed") {
    window.sizes.push(m.params);
    frame.style.height = m.params.height + "px";
  }
  if (m.method === "tools/call") {
    window.calls.push(m.params);
    reply(m.id, JSON.parse(await window.callTool(JSON.stringify(m.params))));
  }
});
window.show = (html, csp, input, result) => {
  window.toolInput = input; window.toolResult = result;
  frame.srcdoc = html.replace("<head>", '<head><meta http-equiv="Content-Security-Policy" content="' + csp + '">');
};
</script></body></html>"""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def host_csp(resource_meta: dict[str, Any]) -> str:
    """The CSP a host builds from a resource's _meta.ui.csp (SEP-1865's defaults plus the declared domains)."""
    domains = " ".join(resource_meta["ui"]["csp"].get("resourceDomains", []))
    return (
        f"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: {domains}; "
        f"media-src data: {domains}; connect-src 'none'; object-src 'none'; base-uri 'self'"
    )


@pytest.mark.skipif(
    not CHROMIUM,
    reason="needs Chromium: `sudo apt install chromium` on Debian or Ubuntu "
    "(.ci/run installs it), then run the tests again",
)
async def test_the_viewer_in_a_real_browser_shows_images_a_running_task_and_a_finished_video(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    # DOUBAO_SCREENSHOTS=docs refreshes the README's
    shots = Path(os.environ.get("DOUBAO_SCREENSHOTS") or tmp_path)
    # A task is queued at its first poll, running at its second, done at its third
    fake_ark.polls_to_finish = 3
    async with (
        Client(stdio_server(fake_ark, DOUBAO_MEDIA_DOMAINS=fake_ark.root)) as client,
        async_playwright() as pw,
    ):
        resource = (await client.read_resource(doubao_mcp.VIEWER_URI)).contents[0]
        csp = host_csp(resource.meta)
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = await browser.new_page(viewport={"width": 660, "height": 700})

        async def call_tool(params: str) -> str:
            called = json.loads(params)
            result = await client.call_tool(called["name"], called["arguments"])
            return result.model_dump_json(by_alias=True, exclude_none=True)

        await page.expose_function("callTool", call_tool)
        await page.set_content(HOST_PAGE)

        async def show(arguments: dict[str, Any], result: Any, ready: str) -> Any:
            await page.evaluate(
                "([html, csp, input, result]) => show(html, csp, input, result)",
                [
                    resource.text,
                    csp,
                    arguments,
                    result.model_dump(mode="json", by_alias=True, exclude_none=True),
                ],
            )
            view = page.frame_locator("#view")
            await view.locator(ready).first.wait_for()
            return view

        images = {"prompt": "three foxes", "max_images": 3}
        view = await show(
            images, await client.call_tool("generate_image", images), "img"
        )
        await page.wait_for_function("() => window.sizes.length > 0")
        frame = page.frames[1]
        loaded = await frame.evaluate(
            "() => Promise.all([...document.images].map((img) => img.decode().then("
            "() => [img.naturalWidth, img.getAttribute('src')])))"
        )
        theme = await frame.evaluate("() => document.documentElement.dataset.theme")
        await page.locator("#view").screenshot(path=shots / "viewer-images.png")
        assert [src for _, src in loaded] == [
            f"{fake_ark.root}/files/image-{i}.png" for i in range(3)
        ]
        # Every image loaded, under the CSP
        assert all(width == 1024 for width, _ in loaded) and theme == "dark"
        assert (
            page.frames[1].url == "about:srcdoc"
            and (await page.evaluate("window.sizes"))[-1]["height"] > 100
        )

        created = await client.call_tool(
            "generate_video", {"prompt": "a fox", "return_last_frame": True}
        )
        task_id = created.structured_content["task_id"]
        # Its first poll: still queued
        await client.call_tool("query_video_task", {"task_id": task_id})
        view = await show({"prompt": "a fox"}, created, "button")
        assert task_id in await view.locator("h1").inner_text()
        assert "queued" in await view.locator("h1").inner_text()
        assert await view.locator(".cost").inner_text() == (
            "About 5.0094 CNY (720p 16:9 5 s: 108,900 tokens at 46 CNY/M)"
        )
        await page.locator("#view").screenshot(path=shots / "viewer-running.png")
        # Check again: the host forwards tools/call to the server
        await view.locator("button").click()
        await view.locator("h1", has_text="running").wait_for()
        assert await page.evaluate("window.calls") == [
            {"name": "query_video_task", "arguments": {"task_id": task_id}}
        ]

        await view.locator("button").click()
        await view.locator("video").wait_for()
        video = view.locator("video")
        assert (
            await video.get_attribute("src")
            == f"{fake_ark.root}/files/{task_id}.mp4?sig=x"
        )
        assert (
            await video.get_attribute("poster")
            == f"{fake_ark.root}/files/{task_id}-last.png"
        )
        # What Ark billed, at the rate this server quoted the task at.
        assert await view.locator(".cost").inner_text() == (
            "Billed 5.0094 CNY (108,900 tokens at 46 CNY/M)"
        )
        await page.locator("#view").screenshot(path=shots / "viewer-video.png")
        await browser.close()


# --- The task record, and saving that finishes on its own ---------------------------------------------------


@contextlib.asynccontextmanager
async def started(fake: FakeArk, state: Path, **env: str) -> Any:
    """The console script over stdio with a task record in `state`, logging at INFO to a `Stderr`."""
    errors = Stderr()
    params = stdio_server(
        fake, DOUBAO_STATE_DIR=str(state), DOUBAO_MCP_LOG_LEVEL="INFO", **env
    )
    async with (
        stdio_client(params, errlog=errors.file) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        yield session, errors


def downloads(fake: FakeArk) -> list[str]:
    return sorted(r["path"] for r in fake.requests if r["path"].startswith("/files/"))


async def test_a_video_started_with_save_dir_is_saved_with_no_further_call(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    # Done at the watcher's first poll
    fake_ark.polls_to_finish = 1
    default = tmp_path / "default"
    async with started(
        fake_ark, tmp_path / "state", DOUBAO_OUTPUT_DIR=str(default)
    ) as (session, errors):
        created = await session.call_tool(
            "generate_video",
            {
                "prompt": "a fox on a hill " * 20,
                "duration": 5,
                "return_last_frame": True,
                "save_dir": str(tmp_path),
            },
        )
        task_id = created.structured_content["task_id"]
        other = (
            await session.call_tool("generate_video", {"prompt": "a hare"})
        ).structured_content["task_id"]
        await anyio.to_thread.run_sync(errors.seen, f"Saved {task_id}")
        await anyio.to_thread.run_sync(errors.seen, f"Saved {other}")
    assert (
        f"It is saved into {tmp_path} when it finishes"
        in created.structured_content["next_step"]
    )
    # DOUBAO_OUTPUT_DIR: saved there the same way
    assert [p.name for p in default.iterdir()] == [f"{other}.mp4"]
    video, frame = tmp_path / f"{task_id}.mp4", tmp_path / f"{task_id}-last-frame.png"
    assert video.read_bytes() == VIDEO_BYTES and frame.read_bytes() == PICTURE
    row = rows(tmp_path / "state")[task_id]
    assert (row["status"], row["model"], row["save_dir"], row["owner"]) == (
        "succeeded",
        "doubao-seedance-2-0-260128",
        str(tmp_path),
        doubao_mcp.key_fingerprint(KEY),
    )
    assert row["prompt"] == ("a fox on a hill " * 20)[:200] and json.loads(
        row["parameters"]
    ) == {"duration": 5, "return_last_frame": True}
    assert (
        row["video_url"] == f"{fake_ark.root}/files/{task_id}.mp4?sig=x"
        and row["finished"] >= row["created"]
    )
    assert json.loads(row["files"]) == [
        {
            "path": str(video),
            "bytes": len(VIDEO_BYTES),
            "sha256": sha256(VIDEO_BYTES),
            "kind": "video",
        },
        {
            "path": str(frame),
            "bytes": len(PICTURE),
            "sha256": sha256(PICTURE),
            "kind": "last_frame",
        },
    ]
    assert row["complete"] == 1 and row["save_error"] is None
    assert downloads(fake_ark) == sorted(
        [f"/files/{task_id}-last.png", f"/files/{task_id}.mp4", f"/files/{other}.mp4"]
    )


async def test_after_a_kill_9_before_the_video_finished_the_next_start_saves_it(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    # Not while the first server lives
    fake_ark.polls_to_finish = 10**6
    state, out = tmp_path / "state", tmp_path / "out"
    # The client sees its server die mid-session
    with contextlib.suppress(Exception):
        async with started(fake_ark, state) as (session, _):
            created = await session.call_tool(
                "generate_video", {"prompt": "a fox", "save_dir": str(out)}
            )
            task_id = created.structured_content["task_id"]
            pid = int(rows(state)[task_id]["watcher"].partition("@")[0])
            os.kill(pid, signal.SIGKILL)
    assert (
        rows(state)[task_id]["status"] in ("queued", "running")
        and list(out.iterdir()) == []
    )
    # It finishes while no server runs
    fake_ark.polls_to_finish = 1
    fake_ark.tasks[task_id]["polls"] = 0
    # No tool call at all
    async with started(fake_ark, state) as (_, errors):
        await anyio.to_thread.run_sync(errors.seen, f"Saved {task_id}")
    assert (out / f"{task_id}.mp4").read_bytes() == VIDEO_BYTES
    assert any(f"Resuming {task_id}" in line for line in errors.lines)
    assert downloads(fake_ark) == [f"/files/{task_id}.mp4"]


async def test_two_servers_sharing_the_record_each_save_their_own_videos_exactly_once(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    # Done at the watcher's first poll
    fake_ark.polls_to_finish = 1
    state = tmp_path / "state"
    async with (
        started(fake_ark, state) as (first, first_log),
        started(fake_ark, state) as (second, second_log),
    ):
        ids = {}
        for name, session in (("first", first), ("second", second)):
            created = await session.call_tool(
                "generate_video", {"prompt": name, "save_dir": str(tmp_path / name)}
            )
            ids[name] = created.structured_content["task_id"]
        await anyio.to_thread.run_sync(first_log.seen, f"Saved {ids['first']}")
        await anyio.to_thread.run_sync(second_log.seen, f"Saved {ids['second']}")
        # Asked to save the other's video, each is told of the file the record holds: nothing is fetched again.
        crossed = await first.call_tool(
            "query_video_task", {"task_id": ids["second"], "save_dir": str(tmp_path)}
        )
        listed = await second.call_tool("list_video_tasks", {})
    assert downloads(fake_ark) == sorted(
        f"/files/{task_id}.mp4" for task_id in ids.values()
    )
    for name, task_id in ids.items():
        assert (tmp_path / name / f"{task_id}.mp4").read_bytes() == VIDEO_BYTES
        assert (
            rows(state)[task_id]["watcher"]
            != rows(state)[ids["first" if name == "second" else "second"]]["watcher"]
        )
    saved = {
        "path": str(tmp_path / "second" / f"{ids['second']}.mp4"),
        "bytes": len(VIDEO_BYTES),
        "sha256": sha256(VIDEO_BYTES),
        "kind": "video",
    }
    assert crossed.structured_content["saved_files"] == [saved]
    assert {
        t["task_id"]: t["saved_files"][0]["path"]
        for t in listed.structured_content["tasks"]
    } == {
        task_id: str(tmp_path / name / f"{task_id}.mp4")
        for name, task_id in ids.items()
    }
    assert not any("Saved" in line for line in first_log.lines if ids["second"] in line)


def test_concurrent_writers_in_separate_processes_each_claim_a_video_once(
    tmp_path: Path,
) -> None:
    """Four processes create 50 tasks each in one record, then all race to save all 200: each is saved once."""
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from doubao_mcp import Record
        record, me = Record(Path({str(tmp_path / "state")!r}), "https://ark.test"), sys.argv[1]
        body = {{"model": "m", "content": [{{"type": "text", "text": "p"}}]}}
        for n in range(50):
            record.created({{"task_id": f"cgt-{{me}}-{{n}}", "status": "queued"}}, body, None, None)
        sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()  # all start the race together
        for task_id in [f"cgt-{{w}}-{{n}}" for n in range(50) for w in range(4)]:
            task = {{"task_id": task_id, "status": "succeeded"}}
            if record.save(task, Path("."), lambda: {{"saved_files": [{{"path": me, "bytes": 1}}]}}) is not None:
                print(task_id, flush=True)
    """)
    )
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), str(w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    for writer in writers:
        assert writer.stdout and writer.stdout.readline() == "ready\n"
    for writer in writers:
        assert writer.stdin
        writer.stdin.write("go\n")
        writer.stdin.flush()
    claimed = []
    for writer in writers:
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0
        claimed += out.split()
    assert len(claimed) == 200 and len(set(claimed)) == 200
    saved_by = {
        task_id: json.loads(row["files"])[0]["path"]
        for task_id, row in rows(tmp_path / "state").items()
    }
    assert len(saved_by) == 200 and all(
        row["saver"] is None for row in rows(tmp_path / "state").values()
    )


async def test_the_record_is_off_over_http_unless_the_operator_sets_it(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with HttpServer(
        fake_ark,
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        DOUBAO_STATE_DIR="",
        ARK_API_KEY=KEY,
        DOUBAO_ALLOWED_DIR=str(tmp_path),
    ) as hosted:
        async with hosted.client() as client:
            unrecorded = await client.call_tool(
                "generate_video", {"prompt": "a fox", "save_dir": str(tmp_path)}
            )
    with HttpServer(
        fake_ark,
        DOUBAO_STATE_DIR=str(tmp_path / "state"),
        DOUBAO_ALLOWED_DIR=str(tmp_path),
    ) as hosted:
        async with hosted.client(Authorization=f"Bearer {KEY}-caller") as client:
            recorded = await client.call_tool(
                "generate_video", {"prompt": "a fox", "save_dir": str(tmp_path)}
            )
    assert not home.exists()
    assert not recorded.is_error and not unrecorded.is_error, (
        recorded.content,
        unrecorded.content,
    )
    assert (
        "Pass save_dir again to save it" in unrecorded.structured_content["next_step"]
    )
    task_id = recorded.structured_content["task_id"]
    # A caller's key: not watched
    assert "Pass save_dir again to save it" in recorded.structured_content["next_step"]
    assert rows(tmp_path / "state")[task_id]["owner"] is None
    stored = b"".join(path.read_bytes() for path in (tmp_path / "state").iterdir())
    assert task_id.encode() in stored and KEY.encode() not in stored


async def test_a_cancelled_task_is_not_watched_after_a_restart(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    fake_ark.polls_to_finish = 10**6
    state = tmp_path / "state"
    async with started(fake_ark, state) as (session, _):
        task_id = (
            await session.call_tool(
                "generate_video", {"prompt": "a fox", "save_dir": str(tmp_path)}
            )
        ).structured_content["task_id"]
        cancelled = await session.call_tool("cancel_video_task", {"task_id": task_id})
    assert cancelled.structured_content["outcome"] == "cancelled"
    row = rows(state)[task_id]
    # Nothing failed: nothing to show
    assert (row["save_dir"], row["save_error"]) == (
        None,
        None,
    )
    assert (
        doubao_mcp.Record(state, fake_ark.url).orphans(
            doubao_mcp.key_fingerprint(KEY) or ""
        )
        == []
    )


def test_an_unusable_record_folder_at_the_default_place_never_stops_start_up(
    tmp_path: Path,
) -> None:
    """Where the person asked for it, a folder that cannot be made stops start-up: tested through main() in
    test_doubao_mcp.py. At the default place, start-up goes on without a record, and says so."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    default = start_with_stdin_closed(
        ARK_API_KEY=KEY,
        DOUBAO_STATE_DIR="",
        XDG_DATA_HOME=str(blocker),
        HOME=str(blocker),
    )
    assert (
        default.returncode == 0
        and default.stdout == b""
        and b"Traceback" not in default.stderr
    )
    assert (
        "No task record, so videos are saved only when a call asks"
        in default.stderr.decode()
    )


def test_start_up_resumes_the_tasks_nobody_alive_watches_and_whose_links_still_work(
    tmp_path: Path,
) -> None:
    record = doubao_mcp.Record(tmp_path / "state", BASE)
    owner, host, now = (
        doubao_mcp.key_fingerprint(KEY),
        socket.gethostname(),
        time.time(),
    )
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    body = {"model": "m", "content": [{"type": "text", "text": "p"}]}
    # Task id: (status, finished, watcher, watched)
    cases = {
        "cgt-dead-watcher": ("running", None, f"{dead.pid}@{host}#1", now),
        "cgt-live-watcher": ("running", None, f"{os.getppid()}@{host}#1", now),
        "cgt-live-but-silent": ("running", None, f"{os.getppid()}@{host}#1", now - 600),
        "cgt-same-pid-earlier-process": (
            "queued",
            None,
            f"{os.getpid()}@{host}#earlier",
            now,
        ),
        "cgt-other-host-recent": ("running", None, "7@elsewhere#1", now),
        "cgt-done-today": ("succeeded", now - 3600, None, None),
        "cgt-done-two-days-ago": ("succeeded", now - 48 * 3600, None, None),
        "cgt-failed": ("failed", now, None, None),
    }
    for task_id, (status, finished, watcher, watched) in cases.items():
        record.created({"task_id": task_id, "status": "queued"}, body, tmp_path, owner)
        record._write(
            "UPDATE tasks SET status = ?, finished = ?, watcher = ?, watched = ? WHERE task_id = ?",
            status,
            finished,
            watcher,
            watched,
            task_id,
        )
    record.created(
        {"task_id": "cgt-other-key", "status": "queued"}, body, tmp_path, "another"
    )
    record.created({"task_id": "cgt-no-folder", "status": "queued"}, body, None, owner)
    assert sorted(
        task_id
        for task_id, _ in doubao_mcp.Record(tmp_path / "state", BASE).orphans(
            owner or ""
        )
    ) == [
        "cgt-dead-watcher",
        "cgt-done-today",
        "cgt-live-but-silent",
        "cgt-same-pid-earlier-process",
    ]
    assert (
        doubao_mcp.Record(tmp_path / "state", "https://other.test/api/v3").orphans(
            owner or ""
        )
        == []
    )


# --- Models as they are today: defaults that fall through, lifecycles, where to go ----------------------------
# Against the fake Ark on 127.0.0.1, which answers 404 for any model in its `unavailable` (retired, or not
# activated for this account). Its address is not a BytePlus host, so the China defaults apply.


async def test_over_stdio_a_newcomers_first_image_in_china_survives_a_retired_default(
    fake_ark: FakeArk,
) -> None:
    """The installed server, no model named, its first default gone: the first call works and says how."""
    fake_ark.unavailable = {S45: NOT_FOUND, PRO: "ModelNotOpen"}
    async with Client(stdio_server(fake_ark)) as client:
        first = await client.call_tool("generate_image", {"prompt": "a fox"})
        second = await client.call_tool("generate_image", {"prompt": "a hare"})
    assert (
        first.structured_content["model"] == second.structured_content["model"] == FLASH
    )
    assert first.structured_content["note"].startswith(
        f"{S45} is not available to this account (Ark says {NOT_FOUND}); {PRO} is not available to this account (Ark "
        f"says ModelNotOpen): used {FLASH}."
    )
    assert posted_models(fake_ark) == [S45, PRO, FLASH, FLASH]


# --- Nothing lost, nothing leaked: the record may fail but a call may not; bombs, escapes, loopback URLs -------


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "256k") -> Any:
    """A tmpfs of `size` at `folder`: a disk that fills up for real. Skipped where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()[:100]}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Take every free byte of `folder`'s disk."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as out:
        while True:
            out.write(bytes(4096))
            out.flush()
    return filler


def record_calls(fake: FakeArk, record: doubao_mcp.Record, **changes: Any) -> Any:
    config = Config(api_key=KEY, base_url=fake.url, **changes)
    return Client(
        make_server(config, client=ArkClient(fake.url, secrets=[KEY]), record=record)
    )


@pytest.mark.parametrize("trouble", ["full", "locked"])
async def test_a_record_that_cannot_be_written_never_fails_a_call_or_loses_a_task_id(
    fake_ark: FakeArk, tmp_path: Path, trouble: str
) -> None:
    """Item 1: the state folder full, or another process holding the write lock: the call goes on without the
    record, the task id comes back, queries and lists work, and the row is written once the record can be."""
    fake_ark.polls_to_finish = 10**6
    fake_ark.add_task("cgt-known", status="running")
    with contextlib.ExitStack() as stack:
        state = (
            stack.enter_context(small_disk(tmp_path / "state"))
            if trouble == "full"
            else tmp_path / "state"
        )
        # Retried by the calls below, not a timer
        record = doubao_mcp.Record(state, fake_ark.url, retry_every=3600)
        free = (
            fill(state).unlink if trouble == "full" else LockHolder(record.path).release
        )
        async with record_calls(fake_ark, record) as client:
            created = await client.call_tool(
                "generate_video", {"prompt": "a fox", "save_dir": str(tmp_path)}
            )
            queries = [
                await client.call_tool("query_video_task", {"task_id": "cgt-known"})
                for _ in range(6)
            ]
            listed = await client.call_tool("list_video_tasks", {})
            assert not created.is_error, error_text(created)
            assert created.structured_content["task_id"] == "cgt-fake-2"
            assert all(
                q.structured_content["status"] in ("queued", "running") for q in queries
            )
            assert not listed.is_error and len(listed.structured_content["tasks"]) == 2
            # What it could not write, kept for later
            assert record.queued
            free()
            # A read writes what the record missed, first
            await client.call_tool("list_video_tasks", {})
        assert rows(state)["cgt-fake-2"]["save_dir"] == str(tmp_path)


async def test_a_lock_held_at_start_up_is_reported_as_a_lock_and_start_up_goes_on(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Item 9."""
    state = tmp_path / "state"
    doubao_mcp.Record(state, fake_ark.url)
    holder = LockHolder(state / "tasks.sqlite3")
    try:
        started_up = start_with_stdin_closed(
            ARK_API_KEY=KEY, DOUBAO_STATE_DIR=str(state)
        )
    finally:
        holder.release()
    stderr = started_up.stderr.decode()
    assert started_up.returncode == 0 and started_up.stdout == b"", stderr
    assert (
        "is locked by another process: calls go on without it" in stderr
        and "writable folder" not in stderr
    )


@pytest.mark.parametrize("foreign", ["another program's database", "not a database"])
def test_a_foreign_record_is_moved_aside_at_the_default_place_and_refused_by_name_where_asked_for(
    tmp_path: Path, foreign: str
) -> None:
    """Item 3: start-up never crashes on a file that is not our record."""

    def plant(folder: Path) -> Path:
        folder.mkdir(parents=True)
        path = folder / "tasks.sqlite3"
        if foreign == "not a database":
            path.write_bytes(b"this is a text file, not SQLite\n" * 200)
        else:
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.execute("CREATE TABLE tasks (id INTEGER, note TEXT)")
        return path

    default = plant(tmp_path / "data" / "doubao-mcp")
    kept = default.read_bytes()
    moved = start_with_stdin_closed(
        ARK_API_KEY=KEY,
        DOUBAO_STATE_DIR="",
        XDG_DATA_HOME=str(tmp_path / "data"),
        HOME=str(tmp_path),
    )
    asked = plant(tmp_path / "asked")
    refused = start_with_stdin_closed(
        ARK_API_KEY=KEY, DOUBAO_STATE_DIR=str(asked.parent)
    )
    assert moved.returncode == 0 and b"Traceback" not in moved.stderr, (
        moved.stderr.decode()
    )
    aside = [
        p
        for p in default.parent.iterdir()
        if p.name.startswith("tasks.sqlite3.unreadable-")
    ]
    assert (
        len(aside) == 1
        and aside[0].read_bytes() == kept
        and "moved it to" in moved.stderr.decode()
    )
    # A new record of ours in its place
    assert rows(default.parent) == {}
    assert (
        refused.returncode == 1
        and f"the task record {asked} cannot be used" in refused.stderr.decode()
    )
    assert asked.exists() and b"Traceback" not in refused.stderr


async def test_a_background_save_that_failed_shows_in_query_and_list_results(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Item 7."""
    fake_ark.polls_to_finish = 1
    # Final: not retried
    fake_ark.faults[("GET", "/files/")] = answer(403, "<h1>expired</h1>", "text/html")
    async with started(fake_ark, tmp_path / "state") as (session, errors):
        task_id = (
            await session.call_tool(
                "generate_video", {"prompt": "a fox", "save_dir": str(tmp_path / "out")}
            )
        ).structured_content["task_id"]
        await anyio.to_thread.run_sync(errors.seen, f"Saving {task_id} failed")
        queried = (
            await session.call_tool("query_video_task", {"task_id": task_id})
        ).structured_content
        listed = (
            await session.call_tool("list_video_tasks", {"task_ids": [task_id]})
        ).structured_content
    assert queried["save_errors"] == [
        {
            "source": "saving in the background",
            "error": "the download answered HTTP 403",
        }
    ]
    assert (
        queried["next_step"].startswith("Saving it in the background failed")
        and "with save_dir" in queried["next_step"]
    )
    assert listed["tasks"][0]["save_errors"] == queried["save_errors"]


@pytest.mark.parametrize(
    "line, code", [(b"this is not json\n", -32700), (b'{"jsonrpc": "2.0"}\n', -32600)]
)
def test_over_stdio_a_line_that_is_not_json_rpc_gets_an_error_and_the_server_keeps_serving(
    line: bytes, code: int
) -> None:
    """Item 12: as over HTTP, at once."""
    process = subprocess.Popen(
        [str(SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**SCRIPT_ENV, "ARK_API_KEY": KEY},
    )
    assert process.stdin and process.stdout
    process.stdin.write(line)
    process.stdin.flush()
    first = json.loads(process.stdout.readline())
    process.stdin.write(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode() + b"\n"
    )
    process.stdin.flush()
    pong = json.loads(process.stdout.readline())
    process.stdin.close()
    assert process.wait(timeout=15) == 0
    assert (
        first["id"] is None
        and first["error"]["code"] == code
        and pong == {"jsonrpc": "2.0", "id": 1, "result": {}}
    )


async def test_over_http_one_list_call_waits_for_several_tasks_with_progress(
    fake_ark: FakeArk,
) -> None:
    """Issue 18 over streamable HTTP: the batch wait, its progress counting tasks done."""
    # Done at the second poll of each
    fake_ark.polls_to_finish = 2
    updates: list[str | None] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        updates.append(message)

    with HttpServer(fake_ark, ARK_API_KEY=KEY) as hosted:
        async with hosted.client() as client:
            ids = [
                (
                    await client.call_tool("generate_video", {"prompt": f"take {n}"})
                ).structured_content["task_id"]
                for n in range(3)
            ]
            listed = await client.call_tool(
                "list_video_tasks",
                {"task_ids": ids, "wait_seconds": 30},
                progress_callback=progress,
            )
    assert [t["status"] for t in listed.structured_content["tasks"]] == [
        "succeeded"
    ] * 3
    assert updates[0] == "0 of 3 done" and updates[-1] == "3 of 3 done"


# --- No task id lost, no task dropped: stops mid-save, echoes in the log ----------------------------------------


def stalled_download(fake: FakeArk) -> Hold:
    """Result files that start, then stall until the hold is released."""
    hold = Hold(then=answer(200, VIDEO_BYTES, "video/mp4"))
    fake.faults[("GET", "/files/")] = lambda handler: (
        handler.send_response(200),
        handler.send_header("Content-Type", "video/mp4"),
        handler.end_headers(),
        handler.wfile.write(VIDEO_BYTES[:64]),
        handler.wfile.flush(),
        hold(handler),
    )
    return hold


async def test_sigterm_over_http_during_a_batch_waits_save_still_answers_it(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Issue 23, item 5: each waiting call gets its last state, and no traceback."""
    for task_id in ("cgt-a", "cgt-b"):
        fake_ark.add_task(task_id, status="succeeded")
    hold = stalled_download(fake_ark)
    results: list[Any] = []
    try:
        with HttpServer(
            fake_ark, ARK_API_KEY=KEY, DOUBAO_ALLOWED_DIR=str(tmp_path)
        ) as hosted:
            async with hosted.client() as client, anyio.create_task_group() as group:
                await client.list_tools()

                async def waiting() -> None:
                    results.append(
                        await client.call_tool(
                            "list_video_tasks",
                            {
                                "task_ids": ["cgt-a", "cgt-b"],
                                "wait_seconds": 30,
                                "save_dir": str(tmp_path),
                            },
                        )
                    )

                group.start_soon(waiting)
                # Both downloads under way, and stalled
                await anyio.to_thread.run_sync(hold.arrived, 2)
                hosted.process.send_signal(signal.SIGTERM)
            hosted.process.wait(timeout=30)
    finally:
        hold.release()
    tasks = results[0].structured_content["tasks"]
    assert [t["status"] for t in tasks] == ["succeeded", "succeeded"]
    assert all(
        "This server is stopping, so the video was not saved" in t["next_step"]
        for t in tasks
    ), tasks
    assert hosted.process.returncode == 0 and "Traceback" not in hosted.stderr, (
        hosted.stderr
    )
    assert [p.name for p in tmp_path.iterdir()] == []


def test_sigterm_on_stdio_mid_download_leaves_no_part_file(tmp_path: Path) -> None:
    """Issue 23, item 6: SIGTERM, as a client sends when it stops its server, cleans up as Ctrl-C does."""
    with FakeArk() as fake:
        fake.add_task("cgt-done", status="succeeded")
        hold = stalled_download(fake)
        stderr = Stderr()
        process = subprocess.Popen(
            [str(SCRIPT), "--log-level", "DEBUG"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr.file,
            env={**SCRIPT_ENV, "ARK_API_KEY": KEY, "ARK_BASE_URL": fake.url},
        )
        assert process.stdin
        process.stdin.write(
            jsonrpc_lines(
                tool_call(
                    2,
                    "query_video_task",
                    {"task_id": "cgt-done", "save_dir": str(tmp_path)},
                )
            )
        )
        process.stdin.flush()
        # Its .part file is made, and the download stalls
        stderr.seen(f"Writing {tmp_path}/.cgt-done.")
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        finally:
            process.kill()
            hold.release()
    assert process.returncode == 0
    assert list(tmp_path.iterdir()) == []


async def test_no_form_of_a_key_reaches_the_servers_log(fake_ark: FakeArk) -> None:
    """Issue 23, item 8: the SDK's INFO line 'Tool ... failed' included, and a caller's own guess too."""
    forms = [
        "".join(f"%{b:02x}" for b in KEY.encode()),
        KEY[:30],
        KEY.upper(),
        base64.b64encode(f"Bearer {KEY}".encode()).decode(),
    ]
    fake_ark.faults[("POST", TASKS_ROUTE)] = ark_error(
        400, "InvalidParameter", "echo " + " ".join(forms)
    )
    fake_ark.unavailable[KEY] = NOT_FOUND
    with HttpServer(fake_ark, "--log-level", "INFO", ARK_API_KEY=KEY) as hosted:
        async with hosted.client() as client:
            echoed = await client.call_tool("generate_video", {"prompt": "a fox"})
            del fake_ark.faults[("POST", TASKS_ROUTE)]
            guessed = await client.call_tool(
                "generate_video", {"prompt": "a fox", "model": KEY}
            )
    assert echoed.is_error and not any(form in echoed.content[0].text for form in forms)
    # What the caller sent comes back as sent...
    assert guessed.is_error and KEY in guessed.content[0].text
    assert "Tool 'generate_video' failed" in hosted.stderr
    # ...but never into the operator's log
    assert not any(form in hosted.stderr for form in forms)


async def test_over_stdio_a_poisoned_record_never_costs_a_created_task_its_id(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Issue 23, item 1, as reported: a record as a start leaves it, poisoned, then a start and a video."""
    state = tmp_path / "state"
    doubao_mcp.Record(state, fake_ark.url)
    with contextlib.closing(sqlite3.connect(state / "tasks.sqlite3")) as db:
        for n in range(3):
            db.execute(
                "INSERT INTO tasks (task_id, base_url, owner, model, parameters, status, created, updated, "
                "finished) VALUES (?, ?, ?, 'doubao-seedance-2-0-260128', '{}', 'succeeded', 0, 0, 9e999)",
                (f"cgt-poison-{n}", fake_ark.url, doubao_mcp.key_fingerprint(KEY)),
            )
        db.commit()
    async with started(fake_ark, state) as (session, errors):
        created = await session.call_tool("generate_video", {"prompt": "fox"})
        waited = await session.call_tool(
            "query_video_task", {"task_id": "cgt-fake-1", "wait_seconds": 1}
        )
        await anyio.to_thread.run_sync(
            errors.seen, "3 rows whose times or parameters cannot be read"
        )
    assert (
        not created.is_error and created.structured_content["task_id"] == "cgt-fake-1"
    )
    assert not waited.is_error and waited.structured_content["task_id"] == "cgt-fake-1"


# --- Cost: the day's limit and the question, across processes and callers ---------------------------------------------


async def test_two_server_processes_share_one_daily_limit_and_a_restart_keeps_it(
    fake_ark: FakeArk, tmp_path: Path
) -> None:
    """Three clients, one limit: 8 CNY has room for one 720p 5 s Seedance 2.0 clip (5.0094 CNY), not two."""
    state = tmp_path / "state"
    call = {"prompt": "a fox", "model": "doubao-seedance-2-0-260128"}
    async with (
        started(fake_ark, state, DOUBAO_DAILY_LIMIT="8") as (first, _),
        started(fake_ark, state, DOUBAO_DAILY_LIMIT="8") as (second, _),
    ):
        made = await first.call_tool("generate_video", call)
        refused = await second.call_tool("generate_video", call)
    async with started(fake_ark, state, DOUBAO_DAILY_LIMIT="8") as (restarted, _):
        again = await restarted.call_tool("generate_video", call)
    assert made.structured_content["cost"]["estimate"] == 5.0094
    for result in (refused, again):
        assert result.is_error
        assert (
            "5.009 CNY of today's limit of 8 CNY (DOUBAO_DAILY_LIMIT) is spent or reserved"
            in (result.content[0].text)
        )
    assert [r["method"] for r in fake_ark.requests].count("POST") == 1


async def test_over_http_each_caller_key_has_the_operators_limit_to_itself(
    fake_ark: FakeArk,
) -> None:
    call = {"prompt": "a fox", "model": "doubao-seedance-2-0-260128"}
    with HttpServer(fake_ark, DOUBAO_DAILY_LIMIT="8") as server:
        async with server.client(**{"X-API-Key": "caller-one-" + "x" * 20}) as one:
            first = await one.call_tool("generate_video", call)
            over = await one.call_tool("generate_video", call)
        async with server.client(**{"X-API-Key": "caller-two-" + "y" * 20}) as two:
            other = await two.call_tool("generate_video", call)
    assert not first.is_error and not other.is_error
    assert "Not sent: this call would cost about 5.0094 CNY" in over.content[0].text
    assert [r["authorization"] for r in fake_ark.requests if r["method"] == "POST"] == [
        "Bearer caller-one-" + "x" * 20,
        "Bearer caller-two-" + "y" * 20,
    ]


async def test_over_http_a_question_goes_through_the_result_and_an_old_client_is_refused_by_name(
    fake_ark: FakeArk,
) -> None:
    asked: list[str] = []

    async def yes(context: Any, params: Any) -> Any:
        asked.append(params.message)
        return mcp_types.ElicitResult(action="accept", content={"spend": True})

    call = {"prompt": "a fox", "model": "doubao-seedance-2-0-260128"}
    with HttpServer(fake_ark, ARK_API_KEY=KEY, DOUBAO_CONFIRM_ABOVE="2") as server:
        async with server.client(elicitation_callback=yes) as modern:
            made = await modern.call_tool("generate_video", call)
        async with server.client(mode="legacy", elicitation_callback=yes) as legacy:
            refused = await legacy.call_tool("generate_video", call)
    assert made.structured_content["task_id"] and len(asked) == 1
    assert "this client cannot be asked to confirm it" in refused.content[0].text
    assert "DOUBAO_CONFIRM_ABOVE" in refused.content[0].text
    assert [r["method"] for r in fake_ark.requests].count("POST") == 1


# --- Uploads: a local video edited and extended, over stdio -----------------------------------------------------------


async def test_over_stdio_a_local_video_is_edited_and_extended_with_seedance_2_5(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "my clip.mp4"
    clip.write_bytes(mp4(8.0, size=64 * 2**10))
    params = stdio_server(fake_ark, **storage.env)
    edit = {
        "prompt": "@Video1, but at night",
        "model": "doubao-seedance-2-5-260628",
        "reference_videos": [str(clip)],
        "ratio": "adaptive",
        "extra": {"omni_reference_task_type": "edit"},
    }
    extend = {
        **edit,
        "prompt": "@Video1, and then the fox runs off",
        "extra": {"omni_reference_task_type": "extend"},
    }
    async with Client(params) as client:
        edited = await client.call_tool("generate_video", edit)
        extended = await client.call_tool("generate_video", extend)
    assert not edited.is_error and not extended.is_error, edited.content
    assert edited.structured_content["uploads"][0]["sent"]
    assert not extended.structured_content["uploads"][0]["sent"]
    assert fake_ark.fetched == [clip.read_bytes()] * 2
    posted = [r["body"] for r in fake_ark.requests if r["method"] == "POST"]
    assert [p["omni_reference_task_type"] for p in posted] == ["edit", "extend"]
    assert all(
        item["video_url"]["url"].startswith(storage.env["AWS_ENDPOINT_URL_S3"])
        for p in posted
        for item in p["content"]
        if item["type"] == "video_url"
    )


def test_prune_uploads_removes_the_servers_own_objects_counted_from_the_record(
    fake_ark: FakeArk, storage: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    record = doubao_mcp.Record(state, fake_ark.url)
    record.uploaded(UPLOAD_BUCKET, doubao_mcp.Uploaded("clips/old.mp4", 1, "", True))
    storage.put_object(Bucket=UPLOAD_BUCKET, Key="clips/old.mp4", Body=b"x")
    storage.put_object(Bucket=UPLOAD_BUCKET, Key="clips/not-ours.mp4", Body=b"y")
    run = start_with_stdin_closed(
        "--prune-uploads",
        "0",
        ARK_API_KEY=KEY,
        ARK_BASE_URL=fake_ark.url,
        DOUBAO_STATE_DIR=str(state),
        **storage.env,
    )
    assert run.returncode == 0, run.stderr
    assert "removed 1 of 1 uploads not used for 0 days" in run.stderr.decode()
    assert [
        o["Key"] for o in storage.list_objects_v2(Bucket=UPLOAD_BUCKET)["Contents"]
    ] == ["clips/not-ours.mp4"]
    assert STORAGE_SECRET.encode() not in run.stderr


async def test_the_catalog_answers_over_http_and_stdio_without_a_key(
    fake_ark: FakeArk,
) -> None:
    with HttpServer(fake_ark) as server:
        async with server.client() as client:
            over_http = await client.call_tool("list_models", {"kind": "image"})
    async with Client(stdio_server(fake_ark, ARK_API_KEY="")) as client:
        over_stdio = await client.call_tool("list_models", {})
    assert {m["kind"] for m in over_http.structured_content["models"]} == {"image"}
    families = {m["family"] for m in over_stdio.structured_content["models"]}
    assert {"seedance-2-0", "seedream-4-5"} <= families


async def test_over_http_takes_are_made_and_waited_for_together(
    fake_ark: FakeArk,
) -> None:
    fake_ark.polls_to_finish = 1
    with HttpServer(fake_ark, ARK_API_KEY=KEY) as server:
        async with server.client() as client:
            videos = await client.call_tool(
                "generate_video",
                {"prompt": "a fox", "takes": 2, "seed": 5, "wait_seconds": 20},
            )
            images = await client.call_tool(
                "generate_image", {"prompt": "a fox", "takes": 2}
            )
    assert [t["status"] for t in videos.structured_content["takes"]] == [
        "succeeded",
        "succeeded",
    ]
    posted = [r["body"] for r in fake_ark.requests if r["method"] == "POST"]
    assert [p.get("seed") for p in posted if "content" in p] == [5, 6]
    assert sorted(i["take"] for i in images.structured_content["images"]) == [0, 1]


async def test_over_stdio_takes_of_an_image_and_a_video_in_one_call_each(
    fake_ark: FakeArk,
) -> None:
    fake_ark.polls_to_finish = 1
    async with Client(stdio_server(fake_ark)) as client:
        videos = await client.call_tool(
            "generate_video", {"prompt": "a fox", "takes": 3, "wait_seconds": 20}
        )
        images = await client.call_tool(
            "generate_image", {"prompt": "a fox", "takes": 2, "max_images": 2}
        )
    assert [t["take"] for t in videos.structured_content["takes"]] == [0, 1, 2]
    assert videos.structured_content["next_step"].startswith("3 of 3 takes done.")
    assert videos.structured_content["usage"]["completion_tokens"] == 3 * 108_900
    assert sorted(i["take"] for i in images.structured_content["images"]) == [
        0,
        0,
        1,
        1,
    ]


async def test_over_stdio_a_verified_persons_photo_becomes_an_asset_and_a_video_from_it_starts(
    fake_ark: FakeArk,
) -> None:
    """Issue 28's "done when", in one conversation: verify the person, add their photo, start a video from it."""
    library = FakeAssets(processing_polls=0)
    try:
        async with Client(stdio_server(fake_ark, **library.env())) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            link = (
                await client.call_tool("verify_person", {"subject": "Mia"})
            ).structured_content
            # Mia opens the link on her phone and passes the check.
            library.passed.add("tok-1")
            verified = (
                await client.call_tool(
                    "verify_person", {"subject": "Mia", "wait_seconds": 30}
                )
            ).structured_content
            added = (
                await client.call_tool(
                    "add_asset", {"subject": "Mia", "media": ASSET_PHOTO}
                )
            ).structured_content
            video = await client.call_tool(
                "generate_video",
                {
                    "prompt": "Mia waves",
                    "model": DANCE_20,
                    "reference_images": [added["asset"]],
                },
            )
    finally:
        library.close()
    assert names[-4:] == ["add_asset", "list_assets", "remove_asset", "verify_person"]
    assert link["status"] == "open_link" and verified["status"] == "verified"
    assert (added["status"], added["group_id"]) == ("Active", verified["group_id"])
    assert video.structured_content["status"] == "queued"
    assert fake_ark.requests[-1]["body"]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": added["asset"]},
        "role": "reference_image",
    }
    assert library.rejected == 0


async def test_over_http_the_asset_tools_are_not_offered_and_their_keys_never_logged(
    fake_ark: FakeArk,
) -> None:
    library = FakeAssets()
    try:
        with HttpServer(
            fake_ark, "--log-level", "DEBUG", ARK_API_KEY=KEY, **library.env()
        ) as hosted:
            async with hosted.client() as client:
                names = [tool.name for tool in (await client.list_tools()).tools]
    finally:
        library.close()
    assert "add_asset" not in names and "list_models" in names
    assert "The asset tools are not offered over HTTP" in hosted.stderr
    assert ASSET_SECRET not in hosted.stderr and library.calls == []
