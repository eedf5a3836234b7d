"""Letting a model call tools: a JSON call format, a strict parser, tools run in week 4.2's fenced process, a loop.

Introduced in week 4 (`week04/03_retrieval_and_tools.ipynb`, where the learner writes the parser too). The model asks
for a tool by replying with one JSON object, for example

    {"tool": "calculator", "expression": "12 * 7 + 3"}
    {"tool": "python", "code": "print(sum(range(10)))"}

`parse_tool_call` returns the call, None for a plain answer, or raises `ToolCallError` with a message that says what
was wrong and what to send; `tool_loop` sends that message back to the model as the tool's reply and goes on, so a
malformed or hostile call is refused without ending the conversation. Both tools run in `tasks.run_python`'s separate
process (a timeout, a memory cap, no network, no file writes, no child processes); the calculator also accepts only
arithmetic, checked on the syntax tree before anything runs.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import CourseError

__all__ = ["TOOLS", "ToolCallError", "ToolRun", "parse_tool_call", "run_tool", "tool_loop"]

TOOLS = {"calculator": "expression", "python": "code"}  # tool -> its one argument (a string)
MAX_ARGUMENT = 2000  # characters an argument may have
_ARITHMETIC = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div,
               ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd)


class ToolCallError(CourseError, ValueError):
    """A reply that tried to call a tool and got it wrong; the message is what the model is told."""


def parse_tool_call(text: str) -> dict | None:
    """The tool call in a model's reply, or None when the reply holds no JSON object (a final answer).

    The call is the first `{...}` of the reply. It must be a JSON object with exactly two keys: "tool", one of TOOLS,
    and that tool's argument, a non-empty string of at most MAX_ARGUMENT characters. Anything else raises
    ToolCallError saying what was wrong.
    """
    start = text.find("{")
    if start < 0:
        return None
    end = text.rfind("}")
    if end < start:
        raise ToolCallError('the tool call is not closed: reply with one JSON object, {"tool": ..., ...}')
    try:
        call = json.loads(text[start:end + 1])
    except json.JSONDecodeError as exc:
        raise ToolCallError(f"the tool call is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(call, dict):
        raise ToolCallError("the tool call must be one JSON object")
    tool = call.get("tool")
    if not isinstance(tool, str) or tool not in TOOLS:
        raise ToolCallError(f"unknown tool {tool!r}: the tools are {', '.join(TOOLS)}")
    argument = TOOLS[tool]
    extra = sorted(set(call) - {"tool", argument})
    if extra:
        raise ToolCallError(f"unexpected keys {extra}: {tool} takes only {argument!r}")
    value = call.get(argument)
    if not isinstance(value, str) or not value.strip():
        raise ToolCallError(f"{tool} needs {argument!r}, a non-empty string")
    if len(value) > MAX_ARGUMENT:
        raise ToolCallError(f"{argument!r} has {len(value)} characters, more than {MAX_ARGUMENT}")
    return {"tool": tool, argument: value}


def _check_arithmetic(expression: str) -> None:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolCallError(f"the calculator could not read {expression!r} ({exc.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ARITHMETIC) or (isinstance(node, ast.Constant)
                                                 and not isinstance(node.value, (int, float))):
            raise ToolCallError(f"the calculator takes numbers and + - * / // % ** ( ) only, not "
                                f"{type(node).__name__} in {expression!r}")


def run_tool(call: dict, timeout: float = 5.0) -> str:
    """Run a parsed call in the fenced process; its printed output, or raise ToolCallError with why it failed."""
    from .tasks import run_python

    if call["tool"] == "calculator":
        _check_arithmetic(call["expression"])
        code = f"print({call['expression']})"
    else:
        code = call["code"]
    result = run_python(code, timeout=timeout, memory_mb=256, max_output=500)
    if not result.ok:
        raise ToolCallError(f"the {call['tool']} tool failed: {result.error}")
    return result.stdout.strip()


@dataclass
class ToolRun:
    """One conversation of `tool_loop`: the final answer, the messages, and the calls made and refused."""

    answer: str
    messages: list[dict] = field(default_factory=list)
    calls: int = 0
    refused: list[str] = field(default_factory=list)


def tool_loop(chat: Callable[[list[dict]], str], messages: list[dict], max_calls: int = 3,
              parse: Callable[[str], dict | None] = parse_tool_call, timeout: float = 5.0) -> ToolRun:
    """Let `chat(messages) -> reply` call tools until it answers without one (or `max_calls` are used).

    Each call's output goes back as a user message "Result: ..."; a refused or failed call goes back as
    "Error: ..." and the loop goes on.
    """
    messages = list(messages)
    run = ToolRun(answer="", messages=messages)
    for _ in range(max_calls + 1):
        reply = chat(messages)
        messages.append({"role": "assistant", "content": reply})
        try:
            call = parse(reply)
            if call is None:
                run.answer = reply
                return run
            if run.calls >= max_calls:
                raise ToolCallError(f"no more tool calls ({max_calls} used): answer now")
            run.calls += 1
            output = run_tool(call, timeout=timeout)
            messages.append({"role": "user", "content": f"Result: {output}"})
        except ToolCallError as exc:
            run.refused.append(str(exc))
            messages.append({"role": "user", "content": f"Error: {exc}"})
    run.answer = messages[-2]["content"] if len(messages) > 1 else ""
    return run
