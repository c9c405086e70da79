"""Ollama's prompt rendering: the three execution modes, library-template idioms, truncation."""

from __future__ import annotations

import pytest

from backends.templates.gotemplate import ExecError, ParseError
from backends.templates.prompt import IMAGE_TOKENS, chat_prompt, tag_images, truncate_messages
from backends.templates.template import DEFAULT_TEMPLATE, Message, PromptTemplate, Values, collate
from registry.templates import named_template

USER = [{"role": "user", "content": "Hello, how are you?"}]
USER_ASSISTANT_USER = USER + [
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"},
]
SYSTEM_CHAT = [{"role": "system", "content": "You are a helpful assistant."}] + USER_ASSISTANT_USER

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "The city"}}}}}]
TOOL_CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}]},
    {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
]


def render(text: str, messages, **kw) -> str:
    return PromptTemplate.parse(text).execute(Values(messages=messages, **kw))


def named(name: str) -> str:
    t = named_template(name)
    assert t is not None
    return t.template


# named family templates (expected texts as Ollama's template/testdata has them) -------------

def test_gemma3_instruct_puts_system_in_first_user_turn():
    assert render(named("gemma3-instruct"), SYSTEM_CHAT) == (
        "<start_of_turn>user\nYou are a helpful assistant.\n\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n"
        "<start_of_turn>model\n\n")
    assert render(named("gemma3-instruct"), USER) == \
        "<start_of_turn>user\nHello, how are you?<end_of_turn>\n<start_of_turn>model\n\n"


def test_llama3_instruct():
    assert render(named("llama3-instruct"), SYSTEM_CHAT) == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nI'm doing great. How can I help you today?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nI'd like to show off how chat templating works!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_mistral_instruct_and_phi3_and_chatml():
    assert render(named("mistral-instruct"), SYSTEM_CHAT) == (
        "[INST] You are a helpful assistant.\n\nHello, how are you?[/INST] "
        "I'm doing great. How can I help you today?</s>[INST] "
        "I'd like to show off how chat templating works![/INST]")
    assert render(named("phi-3"), USER_ASSISTANT_USER) == (
        "<|user|>\nHello, how are you?<|end|>\n<|assistant|>\nI'm doing great. How can I help you today?<|end|>\n"
        "<|user|>\nI'd like to show off how chat templating works!<|end|>\n<|assistant|>\n")
    assert render(named("chatml"), USER) == \
        "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\n"


def test_gemma_instruct_system_accumulation_with_assign_and_continue():
    msgs = [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}] + USER
    # Consecutive system messages are collated into one before the template sees them.
    assert render(named("gemma-instruct"), msgs) == \
        "<start_of_turn>user\nA\n\nB\nHello, how are you?<end_of_turn>\n<start_of_turn>model\n"


# library idioms: tools, tool calls, think -------------------------------------------------

LLAMA31 = '''{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call.

{{ range $.Tools }}
{{- . }}
{{ end }}
Question: {{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}

{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}'''

TOOL_JSON = ('{"type":"function","function":{"name":"get_weather","description":"Get the weather",'
             '"parameters":{"type":"object","required":["city"],'
             '"properties":{"city":{"type":"string","description":"The city"}}}}}')


def test_llama31_tools_on_last_user_turn():
    assert render(LLAMA31, TOOL_CHAT[:2], tools=TOOLS) == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.\n\n"
        "You are a helpful assistant with tool calling capabilities.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "Given the following functions, please respond with a JSON for a function call.\n\n"
        f"{TOOL_JSON}\n\nQuestion: Weather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama31_tool_call_and_tool_result():
    assert render(LLAMA31, TOOL_CHAT, tools=TOOLS) == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.\n\n"
        "You are a helpful assistant with tool calling capabilities.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "get_weather", "parameters": {"city":"Paris","days":3}}<|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


QWEN = '''{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

<tools>
{{- range .Tools }}
{"type": "function", "function": {{ json .Function }}}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking }}<think>{{ .Thinking }}</think>
{{ end }}
{{- if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) }}<think>

</think>

{{ end }}
{{- end }}
{{- end }}'''


def test_qwen_tools_tool_calls_and_think_off():
    msgs = TOOL_CHAT[1:] + [
        {"role": "assistant", "content": "It is sunny.", "thinking": "easy"},
        {"role": "user", "content": "Thanks"},
    ]
    expected = (
        "<|im_start|>system\n\n# Tools\n\n<tools>\n"
        '{"type": "function", "function": {"name":"get_weather","description":"Get the weather",'
        '"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string",'
        '"description":"The city"}}}}}\n</tools><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city":"Paris","days":3}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>easy</think>\nIt is sunny.<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n"
        "<|im_start|>assistant\n")
    tmpl = PromptTemplate.parse(QWEN)
    assert tmpl.execute(Values.with_think(None, messages=msgs, tools=TOOLS)) == expected
    off = tmpl.execute(Values.with_think(False, messages=msgs, tools=TOOLS))
    assert off == expected + "<think>\n\n</think>\n\n"


def test_think_values():
    t = PromptTemplate.parse("{{ range .Messages }}{{ end }}{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}")
    assert t.execute(Values.with_think(None, messages=USER)) == "false  false"
    assert t.execute(Values.with_think(True, messages=USER)) == "true medium true"
    assert t.execute(Values.with_think("high", messages=USER)) == "true high true"


MISTRAL_TOOLS = '''{{- range $index, $_ := .Messages }}
{{- if eq .Role "system" }}[SYSTEM_PROMPT]{{ .Content }}[/SYSTEM_PROMPT]
{{- else if eq .Role "user" }}
{{- if and (le (len (slice $.Messages $index)) 2) $.Tools }}[AVAILABLE_TOOLS]{{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST]{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }}{{ .Content }}
{{- if not (eq (len (slice $.Messages $index)) 1) }}</s>
{{- end }}
{{- else if .ToolCalls }}[TOOL_CALLS][
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- end }}]</s>
{{- end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS]{"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}'''


def test_mistral_available_tools_before_the_second_to_last_user_turn():
    out = render(MISTRAL_TOOLS, TOOL_CHAT[1:], tools=TOOLS)
    assert out == ("[INST]Weather in Paris?[/INST]"
                   '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city":"Paris","days":3}}]</s>'
                   '[TOOL_RESULTS]{"content": sunny}[/TOOL_RESULTS]')
    out = render(MISTRAL_TOOLS, [{"role": "user", "content": "hi <b>"}], tools=TOOLS)
    assert out == f"[AVAILABLE_TOOLS][{TOOL_JSON}][/AVAILABLE_TOOLS][INST]hi <b>[/INST]"


def test_tools_print_null_without_tools_and_json_escapes_html():
    assert render("{{ range .Messages }}{{ end }}{{ .Tools }}|{{ if .Tools }}x{{ end }}", USER) == "null|"
    tools = [{"type": "function", "function": {"name": "f", "description": "a<b & c>d",
                                                "parameters": {"type": "object"}}}]
    assert render("{{ range .Messages }}{{ end }}{{ json .Tools }}", USER, tools=tools) == \
        ('[{"type":"function","function":{"name":"f","description":"a\\u003cb \\u0026 c\\u003ed",'
         '"parameters":{"type":"object","properties":null}}}]')


def test_tool_property_access_and_ranging():
    t = ("{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Function.Name }}("
         "{{ range $name, $p := .Function.Parameters.Properties }}{{ $name }}: {{ $p.Type }} {{ toTypeScriptType $p }}"
         "{{ end }}) {{ .Function.Parameters.Properties }} {{ .Function.Parameters.Required }}{{ end }}")
    assert render(t, USER, tools=TOOLS) == \
        'get_weather(city: string string) {"city":{"type":"string","description":"The city"}} [city]'


def test_function_struct_prints_go_struct_form():
    # templateToolFunction has no String method, so Go's fmt prints its fields.
    t = "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Function }}{{ end }}"
    assert render(t, USER, tools=TOOLS) == \
        '{get_weather Get the weather {object <nil> <nil> [city] {"city":{"type":"string","description":"The city"}}}}'


def test_tool_call_arguments_ranging_and_index():
    msgs = [{"role": "assistant", "tool_calls": [{"id": "c1", "function": {
        "index": 2, "name": "f", "arguments": {"b": [1, 2], "a": {"y": 1, "x": "<"}}}}]}]
    t = ("{{ range .Messages }}{{ range .ToolCalls }}{{ .ID }} {{ .Function.Index }} "
         "{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{ end }} {{ .Function.Arguments }}{{ end }}{{ end }}")
    assert render(t, msgs) == 'c1 2 a=map[x:< y:1];b=[1 2]; {"a":{"x":"\\u003c","y":1},"b":[1,2]}'


# collation, suffix, legacy ------------------------------------------------------------------

def test_collate_merges_same_roles_except_tool():
    system, msgs = collate([Message.of(m) for m in [
        {"role": "system", "content": "s1"}, {"role": "system", "content": "s2"},
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "tool", "content": "t1"}, {"role": "tool", "content": "t2"}]])
    assert system == "s1\n\ns2"
    assert [(m.role, m.content) for m in msgs] == \
        [("system", "s1\n\ns2"), ("user", "a\n\nb"), ("tool", "t1"), ("tool", "t2")]


def test_suffix_mode():
    t = PromptTemplate.parse("{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n"
                             "{{- else }}{{ .Prompt }}\n{{- end }}")
    assert t.execute(Values(prompt="def add(", suffix="return x")) == "<PRE> def add( <SUF>return x <MID>"
    assert t.execute(Values(messages=[{"role": "user", "content": "hello"}])) == "hello"


LEGACY_CHATML = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                 "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
                 "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")


def test_legacy_template_runs_once_per_turn_and_cuts_after_response():
    out = render(LEGACY_CHATML, SYSTEM_CHAT)
    assert out == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello, how are you?<|im_end|>\n"
        "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
        "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_legacy_without_response_gets_it_appended():
    t = PromptTemplate.parse("[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] ")
    assert "response" not in t.vars
    assert t.execute(Values(messages=SYSTEM_CHAT)) == (
        "[INST] You are a helpful assistant.\n\nHello, how are you?[/INST] "
        "I'm doing great. How can I help you today?"
        "[INST] I'd like to show off how chat templating works![/INST] ")


def test_default_template_concatenates_turns():
    t = PromptTemplate.parse(DEFAULT_TEMPLATE)
    assert t.execute(Values(messages=SYSTEM_CHAT)) == (
        "Hello, how are you?I'm doing great. How can I help you today?"
        "I'd like to show off how chat templating works!")


def test_legacy_system_after_prompt_starts_a_new_turn():
    t = PromptTemplate.parse("{{ .System }}|{{ .Prompt }}|{{ .Response }};")
    msgs = [{"role": "user", "content": "u1"}, {"role": "system", "content": "s2"},
            {"role": "user", "content": "u2"}]
    assert t.execute(Values(messages=msgs)) == "|u1|;s2|u2|"


def test_messages_mode_missing_prompt_prints_no_value():
    assert render("{{ range .Messages }}{{ end }}{{ .Prompt }}", USER) == "<no value>"


def test_template_parse_errors_and_template_without_pipe():
    with pytest.raises(ParseError, match="unclosed action"):
        PromptTemplate.parse("{{ .Prompt ")
    with pytest.raises(ParseError, match="undefined template specified"):
        PromptTemplate.parse('{{define "x"}}{{template "x"}}{{end}}{{template "x"}}')


def test_struct_field_typo_is_an_execution_error():
    with pytest.raises(ExecError, match="can't evaluate field Contents"):
        render("{{ range .Messages }}{{ .Contents }}{{ end }}", USER)


# images and truncation ----------------------------------------------------------------------

def test_images_are_tagged_in_order():
    msgs = [Message.of({"role": "user", "content": "look [img] here", "images": [b"a"]}),
            Message.of({"role": "user", "content": "and", "images": [b"b", b"c"]})]
    tagged, images = tag_images(msgs)
    assert [m.content for m in tagged] == ["look [img-0] here", "[img-1][img-2]and"]
    assert images == [b"a", b"b", b"c"]
    assert msgs[0].content == "look [img] here"


def words(text: str) -> int:
    return len(text.split())


CHATML = named_template("chatml").template if named_template("chatml") else ""


def test_truncation_keeps_system_and_last_message():
    msgs = [{"role": "system", "content": "sys"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "w " * 10} for i in range(6)]
    t = PromptTemplate.parse(CHATML)
    full = chat_prompt(msgs, t, count_tokens=words, num_ctx=10_000)
    assert full.first_message == 0 and "m0" in full.prompt
    cut = chat_prompt(msgs, t, count_tokens=words, num_ctx=30)
    assert cut.first_message > 1
    assert "sys" in cut.prompt and "m5" in cut.prompt and "m0" not in cut.prompt
    assert words(cut.prompt) <= 30
    tiny = chat_prompt(msgs, t, count_tokens=words, num_ctx=1)
    assert tiny.first_message == len(msgs) - 1
    assert tiny.prompt.startswith("<|im_start|>system\nsys<|im_end|>") and "m5" in tiny.prompt and "m4" not in tiny.prompt


def test_truncation_disabled_and_image_cost():
    msgs = [Message.of({"role": "user", "content": "a", "images": [b"x"]}),
            Message.of({"role": "assistant", "content": "b"}),
            Message.of({"role": "user", "content": "c"})]
    render_fn = lambda ms: " ".join(m.content for m in ms)  # noqa: E731
    assert truncate_messages(msgs, render_fn, words, num_ctx=10)[1] == 0
    assert truncate_messages(msgs, render_fn, words, num_ctx=10, image_tokens=IMAGE_TOKENS)[1] == 1
    out = chat_prompt(msgs, render_fn, count_tokens=words, num_ctx=1, truncate=False)
    assert out.first_message == 0 and out.prompt == "[img-0]a b c" and out.images == [b"x"]
