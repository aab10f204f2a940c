"""The page `interplay serve` serves, in a real browser: headless Chromium (Debian's `chromium`) driven
by Playwright, its fake media flags feeding an espeak-ng WAV as the microphone ("What is the weather
in Rome?"). Everything behind the page is real: the served CLI as a user runs it (Ray, the ears, the
shipped interaction model, one background actor on the local engine with the demo's weather tool),
the WebSocket bridge and the page's AudioWorklet, jitter buffer and timeline.

One conversation per module (starting serve costs ~20 s); each test reads one property of it off
the page's counters (`window.interplay`) and its timeline DOM. The screenshot of the timeline after
the spoken request is saved beside the test's files and copied to runs/browser/screenshot.png.
Without Chromium (or Playwright) the module skips with one line saying what is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import stop_serve

CHROMIUM = os.environ.get("INTERPLAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (make test does it as root)",
                allow_module_level=True)
playwright = pytest.importorskip("playwright.async_api", reason="Playwright missing: install the dev extra")

CLI = [sys.executable, "-m", "interplay.cli", "--log-level", "warning"]
REQUEST = "What is the weather in Rome?"  # Rome: a city the demo's weather tool knows
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]
SCREENSHOT_COPY = Path(__file__).resolve().parent.parent / "runs" / "browser" / "screenshot.png"


def microphone_wav(path: Path) -> Path:
    """The spoken request as Chromium's fake microphone plays it: 16 kHz mono PCM16, in a quiet room that
    goes on after it (a live microphone is never digitally silent; the interaction model never heard that)."""
    from interaction_actor.ears.speech import padded, room_tone, say

    audio = padded(say(REQUEST, "en-us"), lead_s=0.8, tail_s=40.0, floor=room_tone(1.0, seed=0))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2").tobytes())
    return path


def start_serve(folder: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """`interplay serve` with the demo's tools and prompt and a page on a free port; its printed endpoints."""
    from interplay.demo import VOICE_PROMPT

    (folder / "interplay.toml").write_text(
        f"web_port = 0\n[background]\nactors = 1\nsystem_prompt = {json.dumps(VOICE_PROMPT)}\n"
        '[delegation]\nallowed_tools = ["weather"]\n[tools]\nregistry = "interplay.demo_tools:demo_registry"\n')
    env = {**os.environ, "RAY_worker_niceness": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*CLI, "--config", str(folder / "interplay.toml"), "serve", "--seconds", "240",
                             "--drain-s", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    printed: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while "page" not in printed and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        what, _, rest = line.partition(": ")
        printed[what] = rest.split(" ")[0].strip()
    return proc, printed


def live_sessions(metrics_url: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text)}
    return families["interplay_loop_live_sessions"].samples[0].value


async def converse(url: str, metrics_url: str, wav: Path, shot: Path) -> dict:
    """Open the page, press Start, let the fake microphone speak; wait until the result surfaced and
    the assistant's voice played after it (40 s at most); screenshot; close the tab; wait for the
    server's session count to drop back (10 s at most)."""
    from playwright.async_api import async_playwright

    state = "({...window.interplay, timeline: document.getElementById('timeline').innerText})"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=[*FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"])
        # (Playwright gives the browser a fresh, temporary user-data-dir of its own)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 760})
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(url)
            await page.click("#start")
            t0 = time.monotonic()
            seen = {}
            while time.monotonic() - t0 < 40:
                await asyncio.sleep(0.5)
                seen = await page.evaluate(state)
                after = [s for s in seen["surfaced"] if s["update"] == "final"]
                if after and seen["audioChunksPlayed"] > after[0]["audioReceivedBefore"]:
                    await asyncio.sleep(1.0)  # a little more of the answer, for the screenshot
                    seen = await page.evaluate(state)
                    break
            await page.screenshot(path=str(shot))
            seen["live_sessions_before_close"] = live_sessions(metrics_url)
            await page.close()
            t1 = time.monotonic()
            while time.monotonic() - t1 < 10 and live_sessions(metrics_url) > 0:
                await asyncio.sleep(0.25)
            seen["live_sessions_after_close"] = live_sessions(metrics_url)
            seen["session_gone_s"] = time.monotonic() - t1
            seen["page_errors"] = problems
            return seen
        finally:
            await browser.close()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    proc, printed = start_serve(folder)
    try:
        assert "page" in printed, f"serve printed no page URL: {printed}"
        wav = microphone_wav(folder / "mic.wav")
        shot = folder / "screenshot.png"
        seen = asyncio.run(converse(printed["page"], printed["metrics"], wav, shot))
    finally:
        stop_serve(proc)
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    (SCREENSHOT_COPY.parent / "page.json").write_text(json.dumps(seen, indent=1))  # what the tests read
    return seen, shot


def test_the_page_streams_the_microphone_in_real_time_without_dropping_a_frame(spoken):
    seen, _ = spoken
    assert seen["micFramesSent"] >= 100 and seen["micFramesDropped"] == 0 and not seen["page_errors"]
    assert seen["bridgeErrors"] == []


def test_the_page_shows_what_the_user_said(spoken):
    seen, _ = spoken
    assert any("weather" in t.lower() and "rome" in t.lower() for t in seen["transcripts"]), seen["transcripts"]
    assert "weather" in seen["timeline"].lower()


def test_the_page_shows_the_spoken_request_delegated_with_its_tool_call(spoken):
    seen, _ = spoken
    assert seen["delegations"] and "weather" in seen["delegations"][0]["task"].lower()
    assert "weather" in seen["toolCalls"]
    assert "tool call: weather" in seen["timeline"] and "tool result: Rome sun, 19 C" in seen["timeline"]


def test_the_page_shows_the_result_surfacing_and_plays_every_chunk_of_the_assistants_voice(spoken):
    """The page's side: the result shows as surfaced for voicing, and the assistant's audio chunks are
    played as they come, none dropped. Whether the model then says the result is the model's side: with the
    synth-8 checkpoint it said "Rome sun, 19 C" in one run here and nothing after it in a clean-clone run
    (the result surfaced one turn later); `interplay eval` and the demo's answer_voiced_fraction measure that."""
    seen, shot = spoken
    finals = [s for s in seen["surfaced"] if s["update"] == "final"]
    # the final is the background model's (SmolLM2-135M) wording of "Rome sun, 19 C": it carries the tool's
    # data, though once in a clean-clone run it kept only "sun" of it
    assert finals and ("sun" in finals[0]["text"] or "19" in finals[0]["text"]) and finals[0]["voiced"]
    assert "surfaced (final, when_idle, voiced)" in seen["timeline"]
    counts = {k: seen[k] for k in ("audioChunksReceived", "audioChunksPlayed", "audioChunksDropped", "lastTurn")}
    assert seen["audioChunksReceived"] > 0 and seen["audioChunksDropped"] == 0, counts
    # read while the session runs: the newest chunk or two may still sit in the jitter buffer
    assert seen["audioChunksReceived"] - 3 <= seen["audioChunksPlayed"] <= seen["audioChunksReceived"], counts
    assert shot.stat().st_size > 10_000


def test_closing_the_tab_ends_its_session_on_the_server(spoken):
    seen, _ = spoken
    assert seen["live_sessions_before_close"] == 1
    assert seen["live_sessions_after_close"] == 0 and seen["session_gone_s"] < 10
