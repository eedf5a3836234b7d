"""Week 4.3's tool calls: the parser accepts exactly the documented format, hostile and malformed calls are refused
with a message that says what was wrong, tools run fenced, and the loop goes on after a refusal."""

import pytest

from llmcourse.tools import MAX_ARGUMENT, ToolCallError, parse_tool_call, run_tool, tool_loop


def test_calls_and_plain_answers_are_told_apart():
    assert parse_tool_call('{"tool": "calculator", "expression": "12 * 7"}') == {"tool": "calculator",
                                                                                  "expression": "12 * 7"}
    assert parse_tool_call('Let me compute. {"tool": "python", "code": "print(1)"} ok') == {"tool": "python",
                                                                                            "code": "print(1)"}
    assert parse_tool_call("The answer is 84.") is None


@pytest.mark.parametrize("reply, message", [
    ('{"tool": "calculator", "expression": "1+1"', "not closed"),
    ('{"tool": calculator}', "not valid JSON"),
    ('{"tool": "shell", "command": "rm -rf /"}', "unknown tool 'shell'"),
    ('{"tool": ["calculator"], "expression": "1"}', "unknown tool"),
    ('{"tool": "calculator"}', "needs 'expression'"),
    ('{"tool": "calculator", "expression": 5}', "needs 'expression', a non-empty string"),
    ('{"tool": "calculator", "expression": "1", "code": "x"}', "unexpected keys ['code']"),
    ('{"tool": "python", "code": "' + "x" * (MAX_ARGUMENT + 1) + '"}', f"more than {MAX_ARGUMENT}"),
])
def test_malformed_calls_are_refused_with_what_was_wrong(reply, message):
    with pytest.raises(ToolCallError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_tool_call(reply)


def test_tools_compute_and_refuse_what_is_not_theirs():
    assert run_tool({"tool": "calculator", "expression": "(3 + 4) * 12 - 2 ** 3"}) == "76"
    assert run_tool({"tool": "python", "code": "print(sum(range(10)))"}) == "45"
    with pytest.raises(ToolCallError, match="numbers and"):
        run_tool({"tool": "calculator", "expression": "__import__('os').getcwd()"})
    with pytest.raises(ToolCallError, match="numbers and"):
        run_tool({"tool": "calculator", "expression": "'a' * 3"})
    with pytest.raises(ToolCallError, match="not allowed in this sandbox"):
        run_tool({"tool": "python", "code": "open('stolen.txt', 'w').write('x')"})
    with pytest.raises(ToolCallError, match="timed out"):
        run_tool({"tool": "python", "code": "while True: pass"}, timeout=1)


def test_the_loop_refuses_a_bad_call_goes_on_and_returns_the_answer():
    replies = iter(['{"tool": "shell", "command": "ls"}', '{"tool": "calculator", "expression": "6 * 7"}',
                    "The answer is 42."])
    seen = []

    def chat(messages):
        seen.append(messages[-1]["content"])
        return next(replies)

    run = tool_loop(chat, [{"role": "user", "content": "What is 6 times 7?"}])
    assert run.answer == "The answer is 42." and run.calls == 1
    assert run.refused == ["unknown tool 'shell': the tools are calculator, python"]
    assert seen == ["What is 6 times 7?", "Error: unknown tool 'shell': the tools are calculator, python",
                    "Result: 42"]


def test_the_loop_stops_calling_after_max_calls():
    def chat(messages):
        return '{"tool": "calculator", "expression": "1 + 1"}'

    run = tool_loop(chat, [{"role": "user", "content": "loop forever"}], max_calls=2)
    assert run.calls == 2 and run.refused == ["no more tool calls (2 used): answer now"]
    assert run.answer == '{"tool": "calculator", "expression": "1 + 1"}'
