"""Glue between pipecat's OpenAILLMService and llama.cpp's server for tool calls the model chooses itself.

pipecat streams every chat completion. llama-cpp-python's server cannot stream a tool call the model
chooses (`tool_choice` "auto" under its chatml-function-calling format raises "Automatic streaming tool
choice is not supported"), and a forced choice streams the function's name in every chunk, which
pipecat 1.14 concatenates into an unknown tool. Non-streamed, the automatic choice works: the model
first writes either `functions.<name>:` or `message:` under a grammar, then the arguments under the
tool's JSON schema. This proxy (ours; pipecat and llama.cpp unmodified) sits at 127.0.0.1 in front of
two llama.cpp servers running the same GGUF:

- `chooser`: `--chat_format chatml-function-calling`; a request that offers tools (tool_choice absent or
  "auto") whose last message is not a tool result goes there NON-streamed. If the model called a tool,
  the proxy answers pipecat with a correct SSE stream: the call's id and name once, the arguments as
  deltas, finish_reason "tool_calls".
- `talker`: the GGUF's own chat template. Everything else goes there streamed, without the tools, and its
  SSE is passed through: a request without tools, one whose model chose `message:` (llama-cpp-python
  0.3's chatml-function-calling then constrains the message to its tool grammar, so the text is written
  here instead, from the same messages), and the reply after a tool result (chatml-function-calling's
  template drops tool messages; the GGUF's template shows them, so the model can say the result).

Messages with role "developer" (pipecat's async-tool notes) are sent as "system" (llama.cpp's server
does not know "developer"). Every request and the choice made are kept in `log` (for the report). It
binds 127.0.0.1 only; `serve()` is a context manager yielding the proxy's /v1 URL.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHOOSE_TIMEOUT_S = 120.0


def _messages(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        m = dict(m)
        if m.get("role") == "developer":
            m["role"] = "system"
        if m.get("role") == "assistant" and m.get("tool_calls") and m.get("content") is None:
            m["content"] = ""
        out.append(m)
    return out


def sse_tool_call(call: dict, model: str, created: int, pieces: int = 4) -> list[bytes]:
    """One tool call as an OpenAI chat.completion.chunk stream: id, type and name once, the arguments in
    `pieces` deltas, then finish_reason "tool_calls" and [DONE]."""
    cid = f"chatcmpl-proxy-{created}"
    args = call["function"].get("arguments") or ""
    step = max(1, -(-len(args) // pieces))

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": call.get("id") or f"call_{created}", "type": "function",
         "function": {"name": call["function"]["name"], "arguments": ""}}]})]
    out += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + step]}}]})
            for i in range(0, len(args), step)]
    out += [chunk({}, "tool_calls"), b"data: [DONE]\n\n"]
    return out


class ToolProxy:
    """See the module docstring. `chooser` / `talker`: the two servers' /v1 URLs."""

    def __init__(self, chooser: str, talker: str) -> None:
        self.chooser, self.talker = chooser.rstrip("/"), talker.rstrip("/")
        self.log: list[dict] = []
        self._lock = threading.Lock()

    def note(self, **what) -> None:
        with self._lock:
            self.log.append({"t": round(time.monotonic(), 3), **what})

    def route(self, body: dict) -> str:
        """"choose" (ask the chooser, non-streamed) or "talk" (the talker, streamed, no tools)."""
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        last = (body.get("messages") or [{}])[-1]
        if tools and choice in (None, "auto") and last.get("role") != "tool":
            return "choose"
        return "talk"

    def choose(self, body: dict) -> dict:
        req = {**body, "stream": False, "messages": _messages(body["messages"]), "tool_choice": "auto"}
        req.pop("stream_options", None)
        data = json.dumps(req).encode()
        r = urllib.request.Request(f"{self.chooser}/chat/completions", data=data,
                                   headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(r, timeout=CHOOSE_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    def talk_request(self, body: dict) -> bytes:
        req = {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")}
        req["messages"] = _messages(body["messages"])
        req["stream"] = True
        return json.dumps(req).encode()


def _handler(proxy: ToolProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the proxy keeps its own log
            pass

        def _pass_get(self) -> None:
            try:
                with urllib.request.urlopen(f"{proxy.talker}{self.path[len('/v1'):]}", timeout=10) as r:
                    data = r.read()
                self.send_response(r.status)
            except urllib.error.HTTPError as exc:
                data = exc.read()
                self.send_response(exc.code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._pass_get()

        def _sse_start(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        def _error(self, code: int, message: str) -> None:
            """An error reply, unless the client has hung up meanwhile (pipecat gave up on a slow choice)."""
            try:
                self.send_error(code, message)
            except (BrokenPipeError, ConnectionResetError):
                proxy.note(route="error", error=f"client gone before the {code} reply: {message}")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not self.path.endswith("/chat/completions") or not body.get("stream"):
                self.send_error(404, "the proxy serves streamed /v1/chat/completions only")
                return
            route = proxy.route(body)
            t0 = time.monotonic()
            if route == "choose":
                try:
                    answer = proxy.choose(body)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    proxy.note(route="choose", error=repr(exc))
                    self._error(502, f"chooser: {exc}")
                    return
                msg = answer["choices"][0]["message"]
                calls = msg.get("tool_calls") or []
                proxy.note(route="choose", chose=[c["function"]["name"] for c in calls] or "message",
                           arguments=[c["function"].get("arguments") for c in calls],
                           seconds=round(time.monotonic() - t0, 2), last_user=_last_user(body))
                if calls:
                    try:
                        self._sse_start()
                        for piece in sse_tool_call(calls[0], answer.get("model", ""), int(time.time())):
                            self.wfile.write(piece)
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):  # pipecat cancelled the request meanwhile
                        proxy.note(route="choose", dropped="the client was gone when the tool call was ready")
                    return
            else:
                proxy.note(route="talk", last_role=(body.get("messages") or [{}])[-1].get("role"),
                           last_user=_last_user(body))
            r = urllib.request.Request(f"{proxy.talker}/chat/completions", data=proxy.talk_request(body),
                                       headers={"Content-Type": "application/json"})
            try:
                resp = urllib.request.urlopen(r, timeout=CHOOSE_TIMEOUT_S)
            except (urllib.error.URLError, OSError) as exc:
                proxy.note(route="talk", error=repr(exc))
                self._error(502, f"talker: {exc}")
                return
            self._sse_start()
            with resp:
                while line := resp.readline():
                    try:
                        self.wfile.write(line)
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):  # pipecat cancelled the reply (barge-in)
                        return

    return Handler


def _last_user(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"][:120]
    return ""


@contextmanager
def serve(chooser: str, talker: str):
    """The proxy on 127.0.0.1 (a free port) -> (its /v1 URL, the ToolProxy with its log)."""
    proxy = ToolProxy(chooser, talker)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fdbench-tool-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
