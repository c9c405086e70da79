"""The Go text/template engine: syntax, semantics and functions as Go and Ollama have them."""

from __future__ import annotations

import datetime as dt

import pytest

from backends.templates.gotemplate import ExecError, ParseError, Template, template_vars
from backends.templates.gotemplate.gofmt import OrderedMap, go_json, sprintf
from backends.templates.template_data import TemplateArgs, ToolProperty


def render(text: str, data=None, **kw) -> str:
    return Template.parse(text, **kw).execute({} if data is None else data)


# syntax ------------------------------------------------------------------------------------

def test_trim_markers_eat_all_adjacent_whitespace():
    assert render("a  \n\t{{- .X -}}  \n b", {"X": 1}) == "a1b"
    assert render("a {{- .X }} b", {"X": 1}) == "a1 b"
    assert render("a {{ .X -}} b", {"X": 1}) == "a 1b"


def test_minus_without_space_is_a_number_not_a_trim_marker():
    assert render("a {{-3}} b") == "a -3 b"


def test_comments_with_and_without_trim():
    assert render("a {{/* note */}} b") == "a  b"
    assert render("a {{- /* note */ -}} b") == "ab"


def test_fields_chains_and_map_keys():
    data = {"A": {"B": {"C": "deep"}}, "M": {"key": 7}}
    assert render("{{ .A.B.C }} {{ .M.key }} {{ $.A.B.C }}", data) == "deep 7 deep"
    assert render("{{ (index .A \"B\").C }}", data) == "deep"


def test_missing_key_prints_no_value_and_is_false():
    # missingkey=zero on map[string]any yields a nil interface, which Go prints as <no value>.
    assert render("[{{ .Nope }}]") == "[<no value>]"
    assert render("{{ if .Nope }}yes{{ else }}no{{ end }}") == "no"
    assert render("{{ .M.nope }}", {"M": {}}) == "<no value>"


def test_field_of_nil_interface_is_an_error_under_missingkey_zero():
    with pytest.raises(ExecError, match=r"nil pointer evaluating interface \{\}\.B"):
        render("{{ .A.B }}")


def test_unknown_struct_field_is_an_error():
    with pytest.raises(ExecError, match="can't evaluate field Nope"):
        render("{{ .X.Nope }}", {"X": ToolProperty()})


def test_variables_declare_assign_and_scope():
    out = render('{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ $y := 1 }}{{ end }}{{ $x }}')
    assert out == "b"
    with pytest.raises(ParseError, match='undefined variable "\\$y"'):
        render("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")


def test_range_slice_with_index_and_else():
    assert render("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}", {"L": ["a", "b"]}) == "0=a;1=b;"
    assert render("{{ range .L }}{{ . }}{{ else }}empty{{ end }}", {"L": []}) == "empty"
    assert render("{{ range .Missing }}x{{ else }}none{{ end }}") == "none"


def test_range_map_visits_sorted_keys():
    assert render("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", {"M": {"b": 2, "a": 1}}) == "a1b2"


def test_range_over_int():
    assert render("{{ range 3 }}{{ . }}{{ end }}") == "012"


def test_break_and_continue():
    t = "{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}"
    assert render(t, {"L": [1, 2, 3, 4, 5]}) == "13"


def test_if_else_if_chain_and_with():
    t = '{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}C{{ end }}'
    assert [render(t, {"R": r}) for r in "abc"] == ["A", "B", "C"]
    assert render("{{ with .X }}[{{ . }}]{{ else }}none{{ end }}", {"X": "v"}) == "[v]"
    assert render("{{ with .X }}[{{ . }}]{{ else }}none{{ end }}", {"X": ""}) == "none"
    assert render("{{ with .X }}x{{ else with .Y }}{{ . }}{{ end }}", {"X": 0, "Y": "y"}) == "y"


def test_go_truthiness():
    t = "{{ if . }}T{{ else }}F{{ end }}"
    assert [Template.parse(t).execute(v) for v in [0, 1, 0.0, "", "x", [], [0], {}, {"a": 1}, None, False]] == \
        ["F", "T", "F", "F", "T", "F", "T", "F", "T", "F", "F"]


def test_define_template_and_block():
    t = '{{ define "item" }}<{{ . }}>{{ end }}{{ range .L }}{{ template "item" . }}{{ end }}'
    assert render(t, {"L": [1, 2]}) == "<1><2>"
    assert render('{{ block "b" .X }}[{{ . }}]{{ end }}!', {"X": "x"}) == "[x]!"


def test_template_invocation_sees_no_outer_variables():
    with pytest.raises(ParseError, match="undefined variable"):
        render('{{ $x := 1 }}{{ define "t" }}{{ $x }}{{ end }}')


def test_pipelines_and_parentheses():
    assert render('{{ "abc" | len }}') == "3"
    assert render('{{ "x" | printf "%s-%s" "y" }}') == "y-x"
    assert render("{{ len (slice .L 1) }}", {"L": [1, 2, 3]}) == "2"


def test_literals():
    assert render(r'{{ "a\tb\n\u00e9\x41" }}') == "a\tb\né" + "A"
    assert render("{{ `raw\\n` }}") == "raw\\n"
    assert render("{{ 'a' }} {{ 0x10 }} {{ 1.5 }} {{ 1e3 }} {{ true }} {{ -2 }}") == "97 16 1.5 1000 true -2"


def test_nil_is_not_a_command():
    with pytest.raises(ExecError, match="nil is not a command"):
        render("{{ nil }}")


# functions ---------------------------------------------------------------------------------

def test_and_or_return_operands_and_short_circuit():
    assert render('{{ and 1 "x" }}|{{ and 0 "x" }}|{{ or "" "y" }}|{{ or 0 "" }}') == 'x|0|y|'
    # The second operand would fail if evaluated.
    assert render("{{ and false (index .L 9) }}", {"L": []}) == "false"
    assert render("{{ if and .A (not .B) }}ok{{ end }}", {"A": 1, "B": 0}) == "ok"


def test_comparisons():
    assert render('{{ eq .R "a" "b" "c" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1 2 }}',
                  {"R": "c"}) == "true true true true true false"
    assert render('{{ eq .Missing "x" }}') == "false"
    with pytest.raises(ExecError, match="error calling eq: incompatible types for comparison"):
        render('{{ eq 1 "1" }}')
    with pytest.raises(ExecError, match="incompatible types"):
        render("{{ eq 1 1.0 }}")


def test_len_index_slice():
    data = {"L": [10, 20, 30], "S": "héllo", "M": {"k": "v"}}
    assert render("{{ len .L }} {{ len .S }} {{ len .M }}", data) == "3 6 1"
    assert render("{{ index .L 1 }} {{ index .M \"k\" }} {{ index .M \"zz\" }}", data) == "20 v <no value>"
    assert render("{{ slice .L 1 2 }} {{ slice .L 2 }} {{ slice \"abcdef\" 1 3 }}", data) == "[20] [30] bc"
    with pytest.raises(ExecError, match="error calling index: index out of range: 5"):
        render("{{ index .L 5 }}", data)


def test_last_message_idiom():
    t = "{{ range $i, $_ := .L }}{{ $last := eq (len (slice $.L $i)) 1 }}{{ . }}{{ if $last }}!{{ end }}{{ end }}"
    assert render(t, {"L": ["a", "b", "c"]}) == "abc!"


def test_print_family():
    assert render('{{ print "a" 1 2 "b" }}') == "a1 2b"
    assert render('{{ println "a" 1 }}') == "a 1\n"
    assert render('{{ printf "%s|%d|%q|%v|%t|%f|%.2f|%5d|%-3s|%x|%%" "s" 42 "q\\n" .L true 1.5 3.14159 7 "ab" 255 }}',
                  {"L": [1, "x"]}) == 's|42|"q\\n"|[1 x]|true|1.500000|3.14|    7|ab |ff|%'
    assert render('{{ printf "%d" "x" }} {{ printf "%s" }}') == "%!d(string=x) %!s(MISSING)"


def test_value_printing_like_fmt():
    data = {"F": 1e6, "G": 2.0, "H": 0.5, "L": [1, [2]], "M": {"b": 1, "a": True}, "N": None}
    assert render("{{ .F }} {{ .G }} {{ .H }} {{ .L }} {{ .M }} {{ .N }}", data) == \
        "1e+06 2 0.5 [1 [2]] map[a:true b:1] <no value>"


def test_html_js_urlquery():
    assert render("{{ html .S }}", {"S": "<a href=\"x\">&'"}) == "&lt;a href=&#34;x&#34;&gt;&amp;&#39;"
    assert render("{{ js .S }}", {"S": "it's <b>\n"}) == "it\\'s \\u003Cb\\u003E\\u000A"
    assert render("{{ urlquery .S }}", {"S": "a b&c/é"}) == "a+b%26c%2F%C3%A9"


def test_call_invokes_a_function_value():
    assert render("{{ call .F 2 3 }}", {"F": lambda a, b: a * b}) == "6"


def test_json_is_go_marshal_with_html_escaping():
    data = {"V": {"b": "<tag> & more", "a": [1, 2.5, None, True], "c": {"z": 1, "y": 2}}}
    assert render("{{ json .V }}", data) == \
        '{"a":[1,2.5,null,true],"b":"\\u003ctag\\u003e \\u0026 more","c":{"y":2,"z":1}}'
    assert go_json(OrderedMap(z=1, a="\n\t\x01\u2028é")) == '{"z":1,"a":"\\n\\t\\u0001\\u2028é"}'
    assert go_json([1e21, 1e-7, 1e20, 100.0]) == "[1e+21,1e-7,100000000000000000000,100]"


def test_stringer_values_print_as_json():
    args = TemplateArgs({"city": "Tokyo", "n": 2.0})
    assert render("{{ .A }}|{{ range $k, $v := .A }}{{ $k }}={{ $v }};{{ end }}", {"A": args}) == \
        '{"city":"Tokyo","n":2}|city=Tokyo;n=2;'


def test_current_and_yesterday_date():
    today = dt.date.today()
    out = render('{{ currentDate }} {{ currentDate "%Y" }} {{ yesterdayDate }}')
    assert out.split() in (
        [today.isoformat(), today.isoformat(), (today - dt.timedelta(days=1)).isoformat()],
        # the date may roll over mid-test
        [(today + dt.timedelta(days=1)).isoformat()] * 2 + [today.isoformat()],
    )


def test_to_typescript_type():
    prop = ToolProperty.from_json({"type": ["string", "integer"]})
    data = {"P": prop, "Q": ToolProperty.from_json({"anyOf": [{"type": "array"}, {"type": "object"}]})}
    assert render("{{ toTypeScriptType .P }}|{{ toTypeScriptType .Q }}|{{ toTypeScriptType 3 }}|{{ .P.ToTypeScriptType }}",
                  data) == "string | number|any[] | Record<string, any>|any|string | number"


def test_no_extra_functions_beyond_what_ollama_registers():
    for name in ("toJson", "contains", "hasPrefix", "trim", "split"):
        with pytest.raises(ParseError, match=f'function "{name}" not defined'):
            Template.parse("{{ %s .X }}" % name)


def test_sprintf_extra_arguments():
    assert sprintf("%s", "a", 1) == "a%!(EXTRA int=1)"


# errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("{{ .Prompt ", "template: :1: unclosed action"),
    ("{{ if .X }}a", "template: :1: unexpected EOF"),
    ("a\n{{ end }}", "template: :2: unexpected {{end}}"),
    ("{{ else }}", "template: :1: unexpected {{else}}"),
    ("{{ }}", "template: :1: missing value for command"),
    ("{{ $x }}", 'template: :1: undefined variable "$x"'),
    ("{{ toJson . }}", 'template: :1: function "toJson" not defined'),
    ('{{ "abc }}', "template: :1: unterminated quoted string"),
    ("{{/* x }}", "template: :1: unclosed comment"),
    ("{{ break }}", "template: :1: {{break}} outside {{range}}"),
    ("{{ . | 3 }}", "template: :1: non executable command in pipeline stage 2"),
    ("{{ range .X }}{{ else }}{{ else }}{{ end }}", "template: :1: expected end; found {{else}}"),
    ('{{ template "x" }}{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}',
     'template: :1: template: multiple definition of template "x"'),
])
def test_parse_errors_read_like_go(text, message):
    with pytest.raises(ParseError) as exc:
        Template.parse(text)
    assert str(exc.value) == message


def test_undefined_template_fails_at_execution():
    with pytest.raises(ExecError, match='template "nope" not defined'):
        render('{{ template "nope" }}')


# template_vars -----------------------------------------------------------------------------

def test_template_vars_is_lowercased_identifiers():
    assert template_vars("{{ .Prompt }}") == {"prompt"}
    assert template_vars("{{ range .Messages }}{{ .Role }}{{ end }}{{ if $.Tools }}{{ end }}") == \
        {"messages", "role", "$", "tools"}
    assert template_vars('{{ define "x" }}{{ .Suffix }}{{ end }}{{ with .System }}{{ . }}{{ end }}') == \
        {"suffix", "system"}
    assert "thinking" in template_vars("{{ range .Messages }}{{ if (and .Thinking 1) }}{{ end }}{{ end }}")
