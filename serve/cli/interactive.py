"""The `>>>` chat loop of `corral run` (cmd/interactive.go), on plain input() and readline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from registry.errors import APIError
from registry.modelfile import format_params, go_v
from serve.cli.client import Client, StatusError
from serve.cli.chat import RunOptions, _err, _out, chat, extract_file_data, extract_file_names, infer_think, is_multimodal, load_model
from serve.cli.show import show_info

PROMPT, ALT_PROMPT = ">>> ", "... "

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""

USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking

"""

USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit corral (/bye)

"""

USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template

"""

USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters

"""


class History:
    """readline line editing and ~/.ollama/history, when readline exists and stdin is a terminal."""

    def __init__(self) -> None:
        self.enabled = os.environ.get("OLLAMA_NOHISTORY", "").strip().lower() in ("", "0", "false")
        self.path = Path.home() / ".ollama" / "history"
        self.readline: Any = None
        try:
            if not sys.stdin.isatty():
                return
        except (AttributeError, OSError, ValueError):
            return
        try:
            import readline
        except ImportError:
            return
        self.readline = readline
        if self.enabled and self.path.is_file():
            try:
                readline.read_history_file(str(self.path))
            except OSError:
                pass

    def save(self) -> None:
        if self.readline is None or not self.enabled:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.readline.write_history_file(str(self.path))
        except OSError:
            pass


class Session:
    """One interactive session: the options, the multi-line buffer, and the commands."""

    def __init__(self, client: Client, opts: RunOptions) -> None:
        self.client = client
        self.opts = opts
        self.history = History()
        self.buffer = ""
        self.multiline: str | None = None  # "prompt" or "system" while inside `\"\"\"`

    # -- main loop ------------------------------------------------------------------------

    def loop(self) -> int:
        try:
            while True:
                try:
                    line = input(ALT_PROMPT if self.multiline or self.buffer else PROMPT)
                except EOFError:
                    _out("\n")
                    return 0
                except KeyboardInterrupt:
                    if not self.buffer:
                        _out("\nUse Ctrl + d or /bye to exit.\n")
                    else:
                        _out("\n")
                    self.buffer, self.multiline = "", None
                    continue
                if self.handle(line) == "exit":
                    return 0
        finally:
            self.history.save()

    def handle(self, line: str) -> str | None:
        """One input line; returns "exit" to leave the loop."""
        if self.multiline:
            ended = line.endswith('"""')
            self.buffer += line[:-3] if ended else line + "\n"
            if not ended:
                return None
            if self.multiline == "system":
                self.set_system(self.buffer)
                self.buffer, self.multiline = "", None
                return None
            self.multiline = None
        elif line.startswith('"""'):
            text = line[3:]
            if text.endswith('"""') and len(text) >= 3:
                self.buffer += text[:-3]
            else:
                self.buffer += text + "\n"
                self.multiline = "prompt"
                return None
        elif line.startswith("/") and not self._starts_with_file(line):
            return self.command(line)
        else:
            self.buffer += line
        if self.buffer:
            self.send(self.buffer)
            self.buffer = ""
        return None

    def _starts_with_file(self, line: str) -> bool:
        first = line.split()[0]
        return self.opts.multimodal and any(f.startswith(first) for f in extract_file_names(line))

    def send(self, text: str) -> None:
        message: dict[str, Any] = {"role": "user", "content": text}
        if self.opts.multimodal:
            message["content"], images = extract_file_data(text)
            if images:
                message["images"] = images
        self.opts.messages.append(message)
        try:
            reply = chat(self.client, self.opts)
        except StatusError as exc:
            if "does not support thinking" in str(exc) or "invalid think value" in str(exc):
                _out(f"error: {exc}\n")
                return
            raise
        if reply is not None:
            self.opts.messages.append(reply)

    # -- commands -------------------------------------------------------------------------

    def command(self, line: str) -> str | None:
        args = line.split()
        name = args[0]
        if name.startswith("/exit") or name.startswith("/bye"):
            return "exit"
        handlers = {
            "/list": self.cmd_list,
            "/load": self.cmd_load,
            "/save": self.cmd_save,
            "/clear": self.cmd_clear,
            "/set": self.cmd_set,
            "/show": self.cmd_show,
            "/help": self.cmd_help,
            "/?": self.cmd_help,
        }
        for prefix, handler in handlers.items():
            if name.startswith(prefix):
                handler(args, line)
                return None
        _out(f"Unknown command '{name}'. Type /? for help\n")
        return None

    def cmd_help(self, args: list[str], line: str) -> None:
        topic = args[1] if len(args) > 1 else ""
        if topic in ("set", "/set"):
            _err(USAGE_SET)
        elif topic in ("show", "/show"):
            _err(USAGE_SHOW)
        elif topic in ("shortcut", "shortcuts"):
            _err(USAGE_SHORTCUTS)
        elif not topic:
            _err(USAGE)
            if self.opts.multimodal:
                _err("Use /path/to/file to include .jpg, .png, .webp images, or .wav audio files.\n")
            _err("\n")

    def cmd_list(self, args: list[str], line: str) -> None:
        from serve.cli.listing import cmd_list

        class _Args:
            prefix = args[1] if len(args) > 1 else ""

        cmd_list(_Args(), self.client)  # type: ignore[arg-type]

    def cmd_clear(self, args: list[str], line: str) -> None:
        self.opts.messages = []
        if self.opts.system:
            self.opts.messages.append({"role": "system", "content": self.opts.system})
        _out("Cleared session context\n")

    def cmd_load(self, args: list[str], line: str) -> None:
        if len(args) != 2:
            _out("Usage:\n  /load <modelname>\n")
            return
        saved = (self.opts.model, self.opts.messages, self.opts.loaded_messages, self.opts.think, self.opts.parent_model)
        self.opts.model = args[1]
        self.opts.messages = []
        self.opts.loaded_messages = []
        _out(f"Loading model '{self.opts.model}'\n")
        try:
            info = self.client.request("POST", "/api/show", {"model": self.opts.model}) or {}
            self.opts.parent_model = (info.get("details") or {}).get("parent_model") or ""
            self.opts.loaded_messages = list(info.get("messages") or [])
            self.opts.think = infer_think(info, self.opts)
            self.opts.multimodal = is_multimodal(info)
            load_model(self.client, self.opts)
        except StatusError as exc:
            if "not found" in str(exc):
                _out(f"Couldn't find model '{self.opts.model}'\n")
            elif "does not support thinking" in str(exc):
                _out(f"error: {exc}\n")
                return
            else:
                raise
            (self.opts.model, self.opts.messages, self.opts.loaded_messages, self.opts.think, self.opts.parent_model) = saved

    def cmd_save(self, args: list[str], line: str) -> None:
        if len(args) != 2:
            _out("Usage:\n  /save <modelname>\n")
            return
        req: dict[str, Any] = {"model": args[1], "from": self.opts.parent_model or self.opts.model, "stream": False}
        if self.opts.system:
            req["system"] = self.opts.system
        if self.opts.options:
            req["parameters"] = dict(self.opts.options)
        messages = list(self.opts.loaded_messages) + list(self.opts.messages)
        if messages:
            req["messages"] = messages
        try:
            self.client.request("POST", "/api/create", req)
        except StatusError as exc:
            if "invalid model name" in str(exc):
                _out(f"error: The model name '{args[1]}' is invalid\n")
                return
            raise
        _out(f"Created new model '{args[1]}'\n")

    def set_system(self, text: str) -> None:
        self.opts.system = text
        message = {"role": "system", "content": text}
        if self.opts.messages and self.opts.messages[-1].get("role") == "system":
            self.opts.messages[-1] = message
        else:
            self.opts.messages.append(message)
        _out("Set system message.\n")

    def cmd_set(self, args: list[str], line: str) -> None:
        if len(args) < 2:
            _err(USAGE_SET)
            return
        what = args[1]
        opts = self.opts
        if what in ("history", "nohistory"):
            self.history.enabled = what == "history"
        elif what in ("wordwrap", "nowordwrap"):
            opts.word_wrap = what == "wordwrap"
            _out(f"Set '{what}' mode.\n")
        elif what in ("verbose", "quiet"):
            opts.verbose = what == "verbose"
            _out(f"Set '{what}' mode.\n")
        elif what == "think":
            level = args[2] if len(args) > 2 else ""
            opts.think = level or True
            opts.think_explicit = True
            self._warn_no_thinking()
            _out(f"Set 'think' mode to '{level}'.\n" if level else "Set 'think' mode.\n")
        elif what == "nothink":
            opts.think = False
            opts.think_explicit = True
            self._warn_no_thinking()
            _out("Set 'nothink' mode.\n")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                _out("Invalid or missing format. For 'json' mode use '/set format json'\n")
            else:
                opts.format = args[2]
                _out(f"Set format to '{args[2]}' mode.\n")
        elif what == "noformat":
            opts.format = ""
            _out("Disabled format.\n")
        elif what == "parameter":
            self._set_parameter(args)
        elif what == "system":
            self._set_system_command(args)
        else:
            _out(f"Unknown command '/set {what}'. Type /? for help\n")

    def _set_parameter(self, args: list[str]) -> None:
        if len(args) < 4:
            _err(USAGE_PARAMETERS)
            return
        key, values = args[2], args[3:]
        try:
            typed = format_params({key: values})
        except APIError as exc:
            _out(f"Couldn't set parameter: {json.dumps(str(exc), ensure_ascii=False)}\n")
            return
        _out(f"Set parameter '{key}' to '{', '.join(values)}'\n")
        self.opts.options[key] = typed[key]

    def _set_system_command(self, args: list[str]) -> None:
        if len(args) < 3:
            _err(USAGE_SET)
            return
        text = " ".join(args[2:])
        if text.startswith('"""'):
            text = text[3:]
            if text.endswith('"""'):
                text = text[:-3]
            else:
                self.buffer = text + "\n" if text else ""
                self.multiline = "system"
                return
        self.set_system(text)

    def _warn_no_thinking(self) -> None:
        try:
            info = self.client.request("POST", "/api/show", {"model": self.opts.model}) or {}
        except StatusError:
            return
        if "thinking" not in (info.get("capabilities") or []):
            _err(f'warning: model "{self.opts.model}" does not support thinking output\n')

    def cmd_show(self, args: list[str], line: str) -> None:
        if len(args) < 2:
            _err(USAGE_SHOW)
            return
        req: dict[str, Any] = {"model": self.opts.model}
        if self.opts.system:
            req["system"] = self.opts.system
        if self.opts.options:
            req["options"] = dict(self.opts.options)
        try:
            resp = self.client.request("POST", "/api/show", req) or {}
        except StatusError:
            _out("error: couldn't get model\n")
            raise
        what = args[1]
        if what == "info":
            _err(show_info(resp))
        elif what == "license":
            _out((resp.get("license") or "No license was specified for this model.") + "\n")
        elif what == "modelfile":
            _out((resp.get("modelfile") or "") + "\n")
        elif what == "parameters":
            self._show_parameters(resp)
        elif what == "system":
            system = self.opts.system or resp.get("system") or ""
            _out(f"{system}\n\n" if system else "No system message was specified for this model.\n")
        elif what == "template":
            _out((resp.get("template") or "No prompt template was specified for this model.") + "\n")
        else:
            _out(f"Unknown command '/show {what}'. Type /? for help\n")

    def _show_parameters(self, resp: dict[str, Any]) -> None:
        _out("Model defined parameters:\n")
        if not resp.get("parameters"):
            _out("  No additional parameters were specified for this model.\n")
        else:
            for line in resp["parameters"].split("\n"):
                _out(f"  {line}\n")
        _out("\n")
        if self.opts.options:
            _out("User defined parameters:\n")
            for key, value in self.opts.options.items():
                _out(f"  {key:<30} {go_v(value)}\n")
            _out("\n")


def interactive_loop(client: Client, opts: RunOptions) -> int:
    return Session(client, opts).loop()
