"""Chat token counts the way OpenAI bills them, after OpenAI's cookbook ("How to count tokens with tiktoken").

Prompt tokens (`count_prompt`):

    3                                  the reply is primed with <|start|>assistant<|message|>
  + Σ messages ( 3                     per message: <|start|>{role}<|message|>…<|end|>
               + tokens(v) for every string value of the message (role, content, name, tool_call_id, …)
               + 1 if the message has a `name` )
  + tools, when the request offered any:
      Σ functions ( FUNC_INIT + tokens("{name}:{description}")          description without a final "."
                  + PROP_INIT if it has properties
                  + Σ properties ( PROP_KEY + tokens("{key}:{type}:{description}")
                                 + ENUM_INIT + Σ enum ( ENUM_ITEM + tokens(item) ) if it has an enum ) )
    + FUNC_END
      with (FUNC_INIT, PROP_INIT, PROP_KEY, ENUM_INIT, ENUM_ITEM, FUNC_END) = (7, 3, 3, -3, 3, 12) for o200k_base
      models and (10, 3, 3, -3, 3, 12) for cl100k_base ones.

The message part reproduces OpenAI's figures exactly (the cookbook's example: 129 tokens on gpt-4 / gpt-3.5-turbo,
124 on gpt-4o / gpt-4o-mini); so does the tools part for flat schemas (105 / 101 for its weather example).
Known approximations, stated where they apply:
- Tool schemas: nested objects, arrays' item schemas, `required` and `strict` are not counted (OpenAI renders them
  but has not published how); the cookbook's own formula has the same limit.
- Tool calls made by the assistant (`tool_calls`, `function_call`, Anthropic `tool_use` blocks): counted as
  tokens(name) + tokens(arguments) + 3 each, an approximation OpenAI does not document.
- Content parts: text parts are counted; images, audio and files are not (they are billed by size, not text).
- Completion tokens (`count_completion`) are the reply's visible text and tool calls; hidden reasoning tokens of
  o-series / gpt-5 models cannot be seen in a log and are not included.
- Models that are not OpenAI's are counted with o200k_base (tokens.py): an estimate, not their tokenizer.
Not responsible for loading encodings (tokens.py) or for where a vendor keeps its messages (usage.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from shipper.enrich.tokens import O200K, Counter, encoding_for_model

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
TOKENS_PER_TOOL_CALL = 3  # approximation: not in OpenAI's cookbook
# (func_init, prop_init, prop_key, enum_init, enum_item, func_end), from the cookbook's num_tokens_for_tools.
TOOL_CONSTANTS = {O200K: (7, 3, 3, -3, 3, 12)}
TOOL_CONSTANTS_DEFAULT = (10, 3, 3, -3, 3, 12)


def count_prompt(counter: Counter, messages: Iterable[Any], model: str | None, tools: Any = None) -> int:
    """Prompt tokens of a chat request: its messages plus the tool schemas it offered."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + _message_tokens(counter, message, model)
    if isinstance(tools, list) and tools:
        total += count_tools(counter, tools, model)
    return total


def count_completion(counter: Counter, output: Any, model: str | None) -> int:
    """Completion tokens of a reply: its text and its tool calls, without the per-message framing."""
    if isinstance(output, str):
        return counter.text(output, model)
    if isinstance(output, Mapping):
        total = _content_tokens(counter, output.get("content"), model)
        total += _calls_tokens(counter, output.get("tool_calls"), model)
        function_call = output.get("function_call")
        if isinstance(function_call, Mapping):
            total += _call_tokens(counter, function_call, model)
        return total
    if isinstance(output, list):
        return sum(count_completion(counter, item, model) for item in output)
    return 0 if output is None else counter.text(_as_text(output), model)


def _message_tokens(counter: Counter, message: Any, model: str | None) -> int:
    if not isinstance(message, Mapping):
        return counter.text(_as_text(message), model)
    total = 0
    for key, value in message.items():
        if isinstance(value, str):
            total += counter.text(value, model)
            if key == "name":
                total += TOKENS_PER_NAME
        elif key == "content":
            total += _content_tokens(counter, value, model)
        elif key == "tool_calls":
            total += _calls_tokens(counter, value, model)
        elif key == "function_call" and isinstance(value, Mapping):
            total += _call_tokens(counter, value, model)
    return total


def _content_tokens(counter: Counter, content: Any, model: str | None) -> int:
    if isinstance(content, str):
        return counter.text(content, model)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += counter.text(part, model)
        elif isinstance(part, Mapping):
            total += _part_tokens(counter, part, model)
    return total


def _part_tokens(counter: Counter, part: Mapping[str, Any], model: str | None) -> int:
    text = part.get("text")
    if isinstance(text, str):
        return counter.text(text, model)
    if part.get("type") == "tool_use":  # Anthropic: the assistant's call, arguments as a JSON object
        return _call_tokens(counter, {"name": part.get("name"), "arguments": part.get("input")}, model)
    if "content" in part:  # Anthropic tool_result: a string or a list of parts
        return _content_tokens(counter, part.get("content"), model)
    return 0  # image, audio, file: billed by size, not by text


def _calls_tokens(counter: Counter, calls: Any, model: str | None) -> int:
    if not isinstance(calls, list):
        return 0
    total = 0
    for call in calls:
        if isinstance(call, Mapping):
            function = call.get("function")
            total += _call_tokens(counter, function if isinstance(function, Mapping) else call, model)
    return total


def _call_tokens(counter: Counter, call: Mapping[str, Any], model: str | None) -> int:
    name = call.get("name")
    arguments = call.get("arguments")
    total = TOKENS_PER_TOOL_CALL + (counter.text(name, model) if isinstance(name, str) else 0)
    if arguments is not None:
        total += counter.text(arguments if isinstance(arguments, str) else _as_text(arguments), model)
    return total


def count_tools(counter: Counter, tools: list[Any], model: str | None) -> int:
    """The cookbook's `num_tokens_for_tools` part (without the messages), for OpenAI, Anthropic or plain schemas."""
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = TOOL_CONSTANTS.get(
        encoding_for_model(model), TOOL_CONSTANTS_DEFAULT
    )
    total = 0
    for tool in tools:
        function = _function_of(tool)
        if function is None:
            continue
        description = _strip_period(function.get("description"))
        total += func_init + counter.text(f"{function.get('name', '')}:{description}", model)
        properties = _properties_of(function)
        if properties:
            total += prop_init
            for key, spec in properties.items():
                spec = spec if isinstance(spec, Mapping) else {}
                total += prop_key
                enum = spec.get("enum")
                if isinstance(enum, list):
                    total += enum_init
                    for item in enum:
                        total += enum_item + counter.text(str(item), model)
                line = f"{key}:{spec.get('type', '')}:{_strip_period(spec.get('description'))}"
                total += counter.text(line, model)
    return total + func_end if total else 0


def _function_of(tool: Any) -> Mapping[str, Any] | None:
    """OpenAI `{"type": "function", "function": {...}}`, or a bare `{name, description, parameters|input_schema}`."""
    if not isinstance(tool, Mapping):
        return None
    function = tool.get("function")
    if isinstance(function, Mapping):
        return function
    return tool if isinstance(tool.get("name"), str) else None


def _properties_of(function: Mapping[str, Any]) -> Mapping[str, Any]:
    schema = function.get("parameters")
    if not isinstance(schema, Mapping):
        schema = function.get("input_schema")  # Anthropic
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    return properties if isinstance(properties, Mapping) else {}


def _strip_period(value: Any) -> str:
    text = "" if value is None else str(value)
    return text[:-1] if text.endswith(".") else text


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
