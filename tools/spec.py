"""`@tool`: a plain function or coroutine becomes a `Tool` — name, description and a pydantic
argument model from its signature, type hints and docstring — exported as an OpenAI function-tool
JSON Schema. Options (timeout, retries, concurrency, result size, permissions, isolation, secrets,
argument limits) are explicit.

Isolation (`ToolOptions.isolation`): "thread" (the default) runs the call in a worker thread of a
bounded pool — a coroutine on that thread's own event loop — so blocking code cannot stall the
caller's loop; "inline" runs a coroutine on the caller's loop (for tools bound to that loop: timers
that outlive the call, MCP sessions). See tools/isolation.py.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import sys
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from tools.arguments import ArgumentLimits
from tools.errors import ToolDefinitionError
from tools.outcome import ToolContext

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ISOLATIONS = ("thread", "inline")


@dataclass(frozen=True)
class ToolOptions:
    """How a tool runs. Every field is explicit and per tool."""

    timeout_s: float = 5.0  # wall time from start of execution; the call is cancelled after it
    idempotent: bool = False  # only idempotent tools may be retried
    retries: int = 0  # extra attempts after an unexpected failure or timeout (idempotent only)
    max_concurrency: int = 4  # calls of this tool running at once (others wait their turn)
    max_result_chars: int = 4000  # longer results are cut and end with a marker
    permissions: frozenset[str] = frozenset()  # the caller's ToolContext must hold all of these
    isolation: str = "thread"  # "thread" | "inline" (see the module docstring)
    secrets: tuple[str, ...] = ()  # names injected at call time (ToolContext.secret); never in the schema
    argument_limits: ArgumentLimits = ArgumentLimits()  # size/depth bounds on the model's arguments

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ToolDefinitionError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if self.retries < 0:
            raise ToolDefinitionError(f"retries must be >= 0, got {self.retries!r}")
        if self.retries and not self.idempotent:
            raise ToolDefinitionError("only idempotent tools may be retried: set idempotent=True or retries=0")
        if self.max_concurrency < 1:
            raise ToolDefinitionError(f"max_concurrency must be >= 1, got {self.max_concurrency!r}")
        if self.max_result_chars < 64:
            raise ToolDefinitionError(f"max_result_chars must be >= 64, got {self.max_result_chars!r}")
        if self.isolation not in ISOLATIONS:
            raise ToolDefinitionError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}")
        if isinstance(self.secrets, str):
            raise ToolDefinitionError(f"secrets must be a sequence of names, got the string {self.secrets!r}")
        object.__setattr__(self, "secrets", tuple(dict.fromkeys(self.secrets)))
        bad = [n for n in self.secrets if not isinstance(n, str) or not _SECRET_NAME_RE.match(n)]
        if bad:
            raise ToolDefinitionError(f"secret names must match {_SECRET_NAME_RE.pattern}, got {bad!r}")


class Tool:
    """A registered-ready tool: still callable like the function it wraps.

    `run(args, context)` is what the executor calls: it receives validated keyword arguments
    (plain Python values from the args model) and returns the raw result (or an awaitable).
    """

    def __init__(
        self,
        name: str,
        description: str,
        args_model: type[BaseModel] | None,
        run: Callable[[dict[str, Any], ToolContext], Any],
        options: ToolOptions,
        *,
        is_async: bool,
        parameters_schema: dict[str, Any] | None = None,
        fn: Callable[..., Any] | None = None,
        validator: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ToolDefinitionError(f"tool name {name!r} must match {_NAME_RE.pattern}")
        if options.isolation == "inline" and not is_async:
            raise ToolDefinitionError(f"tool {name!r}: isolation='inline' needs a coroutine function")
        if args_model is None and (validator is None or parameters_schema is None):
            raise ToolDefinitionError(f"tool {name!r}: without an args model, give a validator and a schema")
        self.name = name
        self.description = description
        self.args_model = args_model
        self.run = run
        self.options = options
        self.is_async = is_async
        self.fn = fn
        self.validator = validator
        self._parameters = parameters_schema
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        if fn is not None:
            functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (Ray ships registries to actors): the per-loop gates are rebuilt, not copied."""
        state = dict(self.__dict__)
        state.pop("_semaphores", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._semaphores = weakref.WeakKeyDictionary()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly (no validation, no limits): handy in unit tests."""
        if self.fn is None:
            raise TypeError(f"tool {self.name!r} wraps no local function; use Registry.call")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, timeout_s={self.options.timeout_s}, async={self.is_async})"

    def semaphore(self) -> asyncio.Semaphore:
        """The per-tool concurrency gate for the running event loop (one per loop)."""
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.options.max_concurrency)
        return sem

    def parameters(self) -> dict[str, Any]:
        """JSON Schema of the arguments object (refs inlined, titles dropped)."""
        if self._parameters is None:
            assert self.args_model is not None
            self._parameters = clean_schema(self.args_model.model_json_schema())
        return self._parameters

    def parameter_names(self) -> list[str]:
        if self.args_model is not None:
            return list(self.args_model.model_fields)
        return list(self.parameters().get("properties", {}))

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for `run` from the model's raw object.

        Raises pydantic.ValidationError (args model) or tools.errors.InvalidArguments (validator).
        """
        if self.validator is not None:
            return self.validator(raw)
        assert self.args_model is not None
        model = self.args_model.model_validate(raw)
        return {name: getattr(model, name) for name in type(model).model_fields}

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool entry: {"type": "function", "function": {...}}."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters()},
        }


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 5.0,
    idempotent: bool = False,
    retries: int = 0,
    max_concurrency: int = 4,
    max_result_chars: int = 4000,
    permissions: typing.Iterable[str] = (),
    isolation: str = "thread",
    secrets: typing.Iterable[str] = (),
    argument_limits: ArgumentLimits | None = None,
) -> Any:
    """Make a `Tool` from a function or coroutine function; use bare (`@tool`) or with options.

    Parameters become the arguments (type hints → pydantic fields; defaults kept; a parameter
    annotated `ToolContext` is injected, not exposed). The docstring's first paragraph is the
    description; `Args:` (Google) or `:param x:` lines describe the fields. `secrets` names the
    secrets the tool reads with `context.secret(name)` (a ToolContext parameter is then required).
    """
    if isinstance(secrets, str):
        raise ToolDefinitionError(f"secrets must be a sequence of names, e.g. ({secrets!r},)")
    options = ToolOptions(
        timeout_s=float(timeout_s),
        idempotent=idempotent,
        retries=retries,
        max_concurrency=max_concurrency,
        max_result_chars=max_result_chars,
        permissions=frozenset(permissions),
        isolation=isolation,
        secrets=tuple(secrets),
        argument_limits=argument_limits or ArgumentLimits(),
    )
    localns = _caller_locals()

    def wrap(f: Callable[..., Any]) -> Tool:
        return make_tool(f, options, name=name, description=description, localns=localns)

    return wrap(fn) if fn is not None else wrap


def _caller_locals() -> dict[str, Any]:
    frame = sys._getframe(2)
    return dict(frame.f_locals) if frame is not None else {}


def make_tool(
    fn: Callable[..., Any],
    options: ToolOptions | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    localns: dict[str, Any] | None = None,
) -> Tool:
    """The function form of `@tool` (also used for plain functions handed to a Registry)."""
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise ToolDefinitionError(f"a tool must be a function or coroutine function, got {fn!r}")
    options = options or ToolOptions()
    tool_name = name or getattr(fn, "__name__", "")
    doc = inspect.getdoc(fn) or ""
    summary, param_docs = parse_docstring(doc)
    desc = (description or summary or tool_name).strip()
    try:
        hints = typing.get_type_hints(fn, globalns=getattr(fn, "__globals__", None), localns=localns,
                                      include_extras=True)
    except Exception as exc:  # unresolved forward reference etc.
        raise ToolDefinitionError(f"tool {tool_name!r}: cannot resolve type hints: {exc}") from exc
    sig = inspect.signature(fn)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name!r}: *args/**kwargs are not supported ({pname})")
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"tool {tool_name!r}: positional-only parameter {pname!r} not supported")
        ann = hints.get(pname, Any)
        if ann is ToolContext or (isinstance(ann, type) and issubclass(ann, ToolContext)):
            context_param = pname
            continue
        default = ... if param.default is param.empty else param.default
        pdesc = param_docs.get(pname)
        fields[pname] = (ann, Field(default, description=pdesc) if pdesc else default)
    model_name = "".join(p.capitalize() for p in re.split(r"[_-]+", tool_name) if p) + "Args"
    try:
        args_model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
        args_model.model_json_schema()
    except Exception as exc:
        raise ToolDefinitionError(f"tool {tool_name!r}: parameters cannot form a JSON Schema: {exc}") from exc
    is_async = inspect.iscoroutinefunction(fn)
    if options.secrets and context_param is None:
        raise ToolDefinitionError(f"tool {tool_name!r} declares secrets {list(options.secrets)} but has no "
                                  "ToolContext parameter to read them from")
    if options.isolation == "inline" and not is_async:
        raise ToolDefinitionError(f"tool {tool_name!r}: isolation='inline' needs a coroutine function (a sync "
                                  "function inline would block the caller's event loop)")

    def run(args: dict[str, Any], context: ToolContext) -> Any:
        if context_param is not None:
            args = {**args, context_param: context}
        return fn(**args)

    return Tool(tool_name, desc, args_model, run, options, is_async=is_async, fn=fn)


# ----------------------------------------------------------------------------- docstrings

_SECTION_RE = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?|Notes?)\s*:?\s*$")
_GOOGLE_ARG_RE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_REST_RE = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google, reST or NumPy-ish docstring."""
    lines = doc.splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    base_indent = 0
    for raw in lines:
        line = raw.rstrip()
        stripped = line.strip()
        m_rest = _REST_RE.match(stripped)
        if m_rest:
            section, current = "rest", m_rest.group(1)
            params[current] = m_rest.group(2).strip()
            continue
        if stripped.startswith(":"):  # :returns:, :raises: ...
            section, current = "other", None
            continue
        m_sec = _SECTION_RE.match(stripped)
        if m_sec and (not line.startswith(" ") or section is None):
            word = m_sec.group(1).lower()
            section = "args" if word in ("args", "arguments", "parameters", "params") else "other"
            current = None
            base_indent = -1
            continue
        if stripped.startswith("---") and section is not None:
            continue
        if section is None:
            summary.append(stripped)
            continue
        if section == "args" and stripped:
            indent = len(line) - len(line.lstrip())
            m = _GOOGLE_ARG_RE.match(stripped)
            if m and (base_indent < 0 or indent <= base_indent):
                base_indent = indent
                current = m.group(1).lstrip("*")
                params[current] = m.group(2).strip()
            elif current is not None:
                params[current] = (params[current] + " " + stripped).strip()
        elif section == "rest" and stripped and current is not None:
            params[current] = (params[current] + " " + stripped).strip()
    paras = "\n".join(summary).strip().split("\n\n")
    description = " ".join(paras[0].split()) if paras and paras[0] else ""
    return description, {k: " ".join(v.split()) for k, v in params.items() if v}


# ----------------------------------------------------------------------------- schema cleanup


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline `$defs` references (kept only for recursive types) and drop pydantic `title`s."""
    defs: dict[str, Any] = schema.get("$defs", {})
    recursive: set[str] = set()

    def walk(node: Any, stack: tuple[str, ...], in_properties: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        if in_properties:  # keys are property names, never schema keywords
            return {k: walk(v, stack) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            key = ref.split("/")[-1]
            if key in stack or key not in defs:
                recursive.add(key)
                return {k: walk(v, stack) for k, v in node.items() if k != "title"}
            merged = {**defs[key], **{k: v for k, v in node.items() if k != "$ref"}}
            return walk(merged, (*stack, key))
        out = {}
        for k, v in node.items():
            if k in ("title", "$defs"):
                continue
            out[k] = walk(v, stack, in_properties=k in ("properties", "patternProperties"))
        return out

    result = walk(schema, ())
    if recursive:
        result["$defs"] = {k: walk(defs[k], (k,)) for k in sorted(recursive) if k in defs}
    result.setdefault("type", "object")
    result.setdefault("properties", {})
    return result

