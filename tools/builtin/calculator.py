"""`calculator`: arithmetic evaluated by walking the AST — never `eval`.

Numbers, + - * / // % **, parentheses, a few math functions and constants; anything else
(names, attributes, subscripts, calls to other functions) is refused with a clear error, and
sizes are bounded (expression length, node count, exponent and integer size).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from tools.errors import ToolError
from tools.spec import tool

MAX_EXPRESSION_CHARS = 500
MAX_NODES = 200
MAX_INT_BITS = 4096  # results past ~1e1233 are refused
MAX_EXPONENT = 10_000

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max,
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "floor": math.floor, "ceil": math.ceil, "factorial": math.factorial,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
_ALLOWED_HELP = "numbers, + - * / // % ** (or ^), parentheses, " + ", ".join(sorted(_FUNCTIONS)) + ", pi, e, tau"


class CalculatorError(ToolError):
    """The expression is not plain arithmetic, or is too large to evaluate."""


def evaluate(expression: str) -> int | float:
    """Value of an arithmetic expression; CalculatorError (message safe for the model) otherwise."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    # "^" is power the way people (and small models) write it; Python's XOR is never arithmetic here.
    expression = expression.replace("^", "**")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not a valid arithmetic expression ({exc.msg})") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression has more than {MAX_NODES} parts")
    try:
        return _eval(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("result is too large") from None
    except (ValueError, TypeError) as exc:  # math domain errors, factorial of a float, ...
        raise CalculatorError(f"invalid operation: {exc}") from None


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"only numbers are allowed, not {type(node.value).__name__} {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed; allowed: {_ALLOWED_HELP}")
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(op(left, right))
    if isinstance(node, ast.UnaryOp):
        op1 = _UNARY.get(type(node.op))
        if op1 is None:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed; allowed: {_ALLOWED_HELP}")
        return op1(_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalculatorError(f"name '{node.id}' is not allowed; allowed: {_ALLOWED_HELP}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            _eval(node.func)  # refuses attribute access etc. with its own message
            raise CalculatorError(f"only the listed functions can be called; allowed: {_ALLOWED_HELP}")
        fname = node.func.id
        if fname not in _FUNCTIONS:
            raise CalculatorError(f"function '{fname}' is not allowed; allowed: {_ALLOWED_HELP}")
        if node.keywords:
            raise CalculatorError(f"keyword arguments are not allowed in {fname}()")
        args = [_eval(a) for a in node.args]
        if fname == "factorial" and args and isinstance(args[0], int) and args[0] > 500:
            raise CalculatorError("factorial argument is too large (max 500)")
        return _bounded(_FUNCTIONS[fname](*args))
    if isinstance(node, ast.Attribute):
        raise CalculatorError(f"attribute access ('.{node.attr}') is not allowed; allowed: {_ALLOWED_HELP}")
    raise CalculatorError(f"{type(node).__name__} is not allowed; allowed: {_ALLOWED_HELP}")


def _check_power(base: Any, exponent: Any) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent} is too large (max {MAX_EXPONENT})")
    ints = isinstance(base, int) and isinstance(exponent, int)
    if ints and exponent > 0 and abs(base) > 1 and base.bit_length() * exponent > MAX_INT_BITS:
        raise CalculatorError(f"result of {base}**{exponent} is too large")


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError("result is too large")
    if isinstance(value, complex):
        raise CalculatorError("result is not a real number")
    return value


def format_number(value: int | float) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return format(value, ".15g")
    return str(value)


@tool(timeout_s=2.0, idempotent=True, max_concurrency=8, max_result_chars=2000)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the number.

    Args:
        expression: Arithmetic only, e.g. "(2 + 3) * 4 ** 2 / sqrt(16)". Supports + - * / // % **,
            parentheses, abs round min max sqrt exp log log10 log2 sin cos tan asin acos atan floor
            ceil factorial, and the constants pi, e, tau.
    """
    return format_number(evaluate(expression))
