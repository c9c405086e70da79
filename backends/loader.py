"""Loading models into memory: causal LMs from GGUF or safetensors, encoders for embeddings.

GGUF weights sit in memory either as float ("float") or packed ("packed", LoadOptions.weights).
Float goes through transformers' GGUF support (dequantizing every tensor), which is slow, so the
result is converted once into a safetensors directory keyed by the blob digest under
`<cache_dir>/converted/<digest>/` and later loads read that directly. Packed reads the quantized
blocks themselves (backends/quant) and caches the packed tensors under
`<cache_dir>/packed/<digest>/` the same way, plus torch's CPU layout of the int4 weights per CPU
capability (`int4pack_file`), made at the first load there. Safetensors models arrive
as a mapping {file name in the model -> blob path}; they get a directory of symlinks under
`<cache_dir>/linked/<key>/` so `from_pretrained` can read them in place.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError

from registry.errors import APIError

log = logging.getLogger(__name__)

# Tokens that end a turn in common chat templates; generation stops on them like on EOS.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>")


@dataclass
class LoadOptions:
    cache_dir: Path
    device: str = "cpu"
    dtype: torch.dtype | None = None  # None: float32 on CPU, bfloat16 (or float16) on CUDA
    # Ollama quantization name recorded at create (Q4_K_M, Q4_0 -> 4-bit NF4; Q8_0 -> 8-bit).
    quantize: str = ""
    # A model split over devices: accelerate's max_memory ({"0": bytes, "1": bytes, "cpu": ...}).
    max_memory: dict[str, int] | None = None
    # GGUF weights in memory: "float" (dequantized) or "packed" (backends/quant).
    weights: str = "float"
    # A first packed load packs in a child process (the server's: see _pack_in_child).
    pack_in_child: bool = False


def quantization_config(quantize: str, compute_dtype: torch.dtype) -> Any:
    """bitsandbytes settings for an Ollama quantization name: 8-bit for Q8_*, else 4-bit NF4."""
    from transformers import BitsAndBytesConfig

    if quantize.upper().startswith("Q8"):
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=compute_dtype)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    config: Any
    device: torch.device
    dtype: torch.dtype
    max_context: int
    eos_token_ids: list[int] = field(default_factory=list)
    kind: Literal["causal", "encoder"] = "causal"
    # The KV cache's dtype; None: the model's dtype. Packed (quantized) models compute in bf16
    # and keep a half-precision cache, as llama.cpp does; float models keep their own dtype so
    # the engine stays token-exact against `generate`.
    kv_cache_dtype: torch.dtype | None = None
    # How the weights sit in memory: "float" (dense) or "packed" (GGUF blocks repacked into
    # torch's int4/int8 formats, backends/quant). Shown in logs and the bench.
    weights: str = "float"


def import_model_code() -> None:
    """Import what every load needs: transformers' model machinery, 5-6 s of imports on these
    machines, paid by the first load of the process's life unless done ahead of it."""
    import accelerate  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers.modeling_utils  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM  # noqa: F401


def default_dtype(device: torch.device | str) -> torch.dtype:
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _atomic_dir(final: Path, fill) -> Path:
    """Run `fill(tmp_dir)` and rename the result to `final`; a concurrent winner is kept."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)
    try:
        try:
            fill(tmp)
        except Exception as exc:
            if not isinstance(exc, OSError) and "No space left on device" in str(exc):
                # safetensors' Rust writer reports a full disk as its own error type; as an
                # ENOSPC OSError it is answered 507 like every other full disk.
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from exc
            raise
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_gguf(gguf_path: Path) -> tuple[Any, Any]:
    """Model (dequantized, float32) and tokenizer straight from a GGUF file: the slow path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backends.quant.one_reader import lend_reader

    src, name = str(gguf_path.parent), gguf_path.name
    with lend_reader(gguf_path):  # one metadata parse for the model and the tokenizer
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    return model, tokenizer


def compact_tokenizer(directory: Path) -> None:
    """Rewrite a saved tokenizer.json so that loading it is faster: BPE merges as "a b" strings
    (tokenizers reads them 20% faster than [a, b] pairs: 0.5 s of gemma3's 2.4 s) and no
    indentation. Only where no merge part holds a space, which the string form can't carry."""
    file = Path(directory) / "tokenizer.json"
    data = json.loads(file.read_text(encoding="utf-8"))
    merges = data.get("model", {}).get("merges")
    if merges and all(isinstance(m, list) and len(m) == 2 and " " not in m[0] + m[1]
                      for m in merges):
        data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    file.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def write_tokenizer(tokenizer: Any, out_dir: Path) -> None:
    """A cache entry's tokenizer, as `load_tokenizer`'s fast path reads it."""
    tokenizer.save_pretrained(out_dir)
    compact_tokenizer(out_dir)


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file into a safetensors model directory (weights, config, tokenizer)."""
    model, tokenizer = read_gguf(gguf_path)
    # The weights are plain tensors now; a GGUF quantization entry would send the next load
    # back through the GGUF path.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out_dir, safe_serialization=True)
    write_tokenizer(tokenizer, out_dir)


def verify_blob(path: Path, digest: str) -> None:
    """A blob whose bytes don't hash to its name was corrupted at rest: say so, rather than
    fail somewhere inside the GGUF reader. Digests that aren't a full sha256 aren't checked."""
    want = digest.replace("-", ":", 1).lower()
    if re.fullmatch(r"[0-9a-f]{64}", want):  # the store's callers pass the bare hex
        want = "sha256:" + want
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", want):
        return
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    got = "sha256:" + sha.hexdigest()
    if got != want:
        raise APIError(500, f"model blob {want} is corrupted (its content hashes to {got}); "
                            "pull or create the model again")


def _entry_dir(kind: str, digest: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / kind / digest.replace(":", "-")


def _has_files(directory: Path, names: tuple[str, ...]) -> bool:
    return all((directory / name).is_file() for name in names)


def _derived_dir(kind: str, gguf_path: Path, digest: str, cache_dir: Path, ready: tuple[str, ...],
                 fill: Any, rebuild: bool) -> Path:
    """`<cache_dir>/<kind>/<digest>/`, derived from a GGUF blob by `fill(tmp_dir)` the first time
    (after checking the blob's digest), or again when `rebuild`: the cached one failed to load.
    It counts as present once every file in `ready` is there."""
    final = _entry_dir(kind, digest, cache_dir)
    if not rebuild and _has_files(final, ready):
        return final
    # _atomic_dir renames an entry in whole, so one that is there but not ready was written
    # in an older form: it goes, as one that failed to load does.
    shutil.rmtree(final, ignore_errors=True)
    verify_blob(Path(gguf_path), digest)
    log.info("building the %s form of %s in %s", kind, gguf_path, final)
    return _atomic_dir(final, fill)


def converted_dir(gguf_path: Path, digest: str, cache_dir: Path, rebuild: bool = False) -> Path:
    """The safetensors directory for a GGUF blob (dequantized by transformers)."""
    return _derived_dir("converted", gguf_path, digest, cache_dir, ("config.json",),
                        lambda tmp: convert_gguf(Path(gguf_path), tmp), rebuild)


def linked_dir(files: Mapping[str, Path], cache_dir: Path) -> Path:
    """A directory of symlinks {name -> blob}, keyed by a digest of the mapping."""
    items = sorted((name, str(Path(path).resolve())) for name, path in files.items())
    key = hashlib.sha256(repr(items).encode()).hexdigest()[:32]
    final = Path(cache_dir) / "linked" / key
    if final.is_dir():
        return final

    def fill(tmp: Path) -> None:
        for name, target in items:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"invalid model file name {name!r}")
            link = tmp / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)

    return _atomic_dir(final, fill)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []

    def add(value: Any) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(getattr(model.config, "eos_token_id", None))
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        add(gen.eos_token_id)
    add(getattr(tokenizer, "eos_token_id", None))
    # One lookup per token, not get_vocab(): that builds a dict of the whole vocabulary
    # (0.6 s of a warm load for gemma3's 262k tokens).
    unk = getattr(tokenizer, "unk_token_id", None)
    for tok in END_OF_TURN_TOKENS:
        found = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(found, int) and found != unk:
            add(found)
    return ids


def _max_context(config: Any) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _finish(model: Any, tokenizer: Any, device: torch.device, dtype: torch.dtype,
            kind: Literal["causal", "encoder"], **extra: Any) -> LoadedModel:
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        config=model.config,
        device=device,
        dtype=dtype,
        max_context=_max_context(model.config),
        eos_token_ids=_eos_ids(model, tokenizer) if kind == "causal" else [],
        kind=kind,
        **extra,
    )


def load_pretrained_dir(model_dir: Path, opts: LoadOptions,
                        kind: Literal["causal", "encoder"] = "causal") -> LoadedModel:
    from transformers import AutoModel, AutoModelForCausalLM

    device = torch.device(opts.device)
    dtype = opts.dtype or default_dtype(device)
    auto = AutoModelForCausalLM if kind == "causal" else AutoModel
    kwargs: dict[str, Any] = {"dtype": dtype}
    if opts.quantize:
        kwargs["quantization_config"] = quantization_config(opts.quantize, dtype)
        kwargs["device_map"] = {"": str(device)}
    if opts.max_memory:
        kwargs["device_map"] = "auto"
        kwargs["max_memory"] = {int(k) if k.isdigit() else k: v for k, v in opts.max_memory.items()}
    model = auto.from_pretrained(str(model_dir), **kwargs)
    if "device_map" not in kwargs:
        model = model.to(device)
    return _finish(model, load_tokenizer(model_dir, opts.cache_dir), device, dtype, kind)


# The module specs; the name changes with the packed form, so an entry an older version wrote
# is not ready and is packed again (v2: 5- to 8-bit codes as int4x2, siblings fused).
PACKED_SPECS = "packed-v2.json"
PACKED_FILES = (PACKED_SPECS, "weights.safetensors", "config.json")


def write_packed(gguf_path: Path, out_dir: Path) -> None:
    """The packed form of a GGUF file: its tensors (packed and float) in one safetensors file,
    the module specs, config, generation config and tokenizer; the specs last."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, GenerationConfig

    from backends.quant.gguf_model import read_packed
    from backends.quant.one_reader import lend_reader

    with lend_reader(gguf_path):  # one metadata parse for the packing and the tokenizer
        config, specs, tensors = read_packed(gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config.save_pretrained(out_dir)
    GenerationConfig.from_model_config(config).save_pretrained(out_dir)
    write_tokenizer(tokenizer, out_dir)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "weights.safetensors"))
    (out_dir / PACKED_SPECS).write_text(json.dumps(specs, indent=1, sort_keys=True))


def packed_dir(gguf_path: Path, digest: str, cache_dir: Path, rebuild: bool = False) -> Path:
    """The packed cache entry for a GGUF blob (backends/quant)."""
    return _derived_dir("packed", gguf_path, digest, cache_dir, PACKED_FILES,
                        lambda tmp: write_packed(Path(gguf_path), tmp), rebuild)


def int4pack_file(directory: Path) -> Path:
    """Where a packed entry keeps its int4 weights in the layout torch's CPU kernel reads. The
    layout depends on the CPU capability torch runs at and on torch's version, and making it
    is most of a warm load (1.8 s of gemma3:270m's), so it is made once per pair and kept."""
    capability = torch.backends.cpu.get_cpu_capability()
    return directory / f"int4pack-{capability}-torch{torch.__version__}.safetensors"


def _read_packed_tensors(directory: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The entry's tensors, with each int4 weight's cached CPU pack in place of its portable
    nibbles where there is one; and whether there was."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    runtime, packs = int4pack_file(directory), {}
    if runtime.is_file():
        try:
            packs = load_file(str(runtime))
        except (OSError, SafetensorError) as err:  # derived from the nibbles: made again
            log.warning("int4 packs %s do not load (%s); packing again", runtime, err)
            runtime.unlink(missing_ok=True)
    weights = directory / "weights.safetensors"
    with safe_open(str(weights), "pt") as f:
        keys = [k for k in f.keys() if not (k.endswith(".nibbles")
                                            and f"{k.removesuffix('.nibbles')}.int4pack" in packs)]
        tensors = {k: f.get_tensor(k) for k in keys if not k.endswith(".qweight")}
    return {**tensors, **_read_unmapped(weights, [k for k in keys if k.endswith(".qweight")]),
            **packs}, bool(packs)


def _read_unmapped(file: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file read into fresh memory (torch's, 64-byte aligned) rather
    than mapped. torch's AVX-512 int8 kernel needs its weight aligned, and safetensors maps
    tensors 8 bytes off; copying them out of the mapping would keep both copies resident."""
    with open(file, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        out = {}
        for name in names:
            meta = header[name]
            if meta["dtype"] != "I8":
                raise ValueError(f"{file}: {name} is {meta['dtype']}, not int8")
            tensor = torch.empty(meta["shape"], dtype=torch.int8)
            start, end = meta["data_offsets"]
            f.seek(8 + size + start)
            if f.readinto(memoryview(tensor.numpy()).cast("B")) != end - start:
                raise ValueError(f"{file}: {name} is truncated")
            out[name] = tensor
    return out


def _write_int4packs(model: Any, directory: Path) -> None:
    from safetensors.torch import save_file

    packs = {f"{name}.int4pack": m.w["int4pack"] for name, m in model.named_modules()
             if "int4pack" in getattr(m, "w", {})}
    final = int4pack_file(directory)
    tmp = final.with_suffix(f".{os.getpid()}.tmp")
    try:
        save_file(packs, str(tmp))
        os.replace(tmp, final)
    except (OSError, SafetensorError) as err:  # a read-only or full cache: pack at each load
        log.warning("could not keep the int4 packs in %s: %s", final, err)
        tmp.unlink(missing_ok=True)


def load_packed_dir(directory: Path, opts: LoadOptions) -> LoadedModel:
    from transformers import AutoConfig, GenerationConfig

    from backends.quant.gguf_model import assemble
    from backends.quant.kernels import KernelTable

    specs = json.loads((directory / PACKED_SPECS).read_text())
    config = AutoConfig.from_pretrained(str(directory))
    table = KernelTable(Path(opts.cache_dir) / "packed" / "kernels.json")
    tensors, prepacked = _read_packed_tensors(directory)
    model = assemble(config, specs, tensors, table)
    table.save()
    if not prepacked:
        _write_int4packs(model, directory)
    model.generation_config = GenerationConfig.from_pretrained(str(directory))
    tokenizer = load_tokenizer(directory, opts.cache_dir)
    return _finish(model, tokenizer, torch.device("cpu"), torch.float32, "causal",
                   kv_cache_dtype=torch.bfloat16, weights="packed")


def load_tokenizer(directory: Path, cache_dir: Path) -> Any:
    """The tokenizer of a model directory. One this loader wrote (a converted or packed entry
    under `cache_dir`: tokenizer.json plus a plain tokenizer_config.json) is built straight from
    tokenizer.json by `tokenizers`: AutoTokenizer would rebuild a model-specific class from the
    same file parsed again in Python, twice the time of a warm load for the same tokenizer."""
    import transformers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(directory)
    written_here = (directory.parent.name in ("converted", "packed")
                    and directory.parent.parent == Path(cache_dir))
    file, config_file = directory / "tokenizer.json", directory / "tokenizer_config.json"
    if not (written_here and file.is_file() and config_file.is_file()):
        return AutoTokenizer.from_pretrained(str(directory))
    kwargs = json.loads(config_file.read_text())
    cls = getattr(transformers, str(kwargs.pop("tokenizer_class", "")), None)
    for key in ("backend", "is_local", "local_files_only", "auto_map"):
        kwargs.pop(key, None)
    if cls is not None:  # a class attribute the generic class lacks (gemma pads left)
        kwargs.setdefault("padding_side", cls.padding_side)
    return PreTrainedTokenizerFast(tokenizer_file=str(file), name_or_path=str(directory), **kwargs)


def _cached_load(build: Any, load: Any, what: str) -> LoadedModel:
    """Load from a cache entry (`build(rebuild)` gives its directory). An entry that doesn't
    load (truncated, flipped bytes, half-deleted) is derived data: rebuilt once."""
    directory = build(False)
    try:
        return load(directory)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        log.warning("%s cache %s does not load (%s: %s); building it again",
                    what, directory, type(err).__name__, err)
    return load(build(True))


def _packed_entry_ready(digest: str, cache_dir: Path) -> bool:
    entry = _entry_dir("packed", digest, cache_dir)
    return _has_files(entry, PACKED_FILES) and int4pack_file(entry).is_file()


def _load_packed(gguf_path: Path, digest: str, opts: LoadOptions) -> LoadedModel:
    return _cached_load(lambda rebuild: packed_dir(gguf_path, digest, opts.cache_dir, rebuild),
                        lambda d: load_packed_dir(d, opts), "packed")


def prepare_packed(gguf_path: str, digest: str, cache_dir: str, threads: str) -> None:
    """What a first packed load writes: the entry, this CPU's int4 packs, the kernel choices
    (measured with `threads` torch threads: the kernel table keys its choices by the count)."""
    from backends.threads import use_torch_threads

    use_torch_threads(int(threads))
    _load_packed(Path(gguf_path), digest, LoadOptions(cache_dir=Path(cache_dir), weights="packed"))


def _pack_in_child(gguf_path: Path, digest: str, cache_dir: Path) -> None:
    """A first packed load, run in a child process so the server's own load finds the entry
    ready. Done in the server, packing left gemma3:270m's server 224 MiB larger than a warm
    load did, for good: heap glibc does not give back, and the portable nibbles' pages of the
    entry's mapping, touched once to pack them. A child that fails for any reason (a full
    disk, a bad blob) leaves the work, and its error, to the load that follows here."""
    import subprocess
    import sys

    code = "import sys; from backends.loader import prepare_packed; prepare_packed(*sys.argv[1:])"
    root = Path(__file__).resolve().parents[1]  # `-c` imports from the working directory
    done = subprocess.run([sys.executable, "-c", code, str(gguf_path), digest, str(cache_dir),
                           str(torch.get_num_threads())], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        log.warning("packing %s in a child process failed (exit %s): %s; packing here",
                    gguf_path, done.returncode, done.stderr.strip()[-500:])


def load_gguf(gguf_path: Path, digest: str, opts: LoadOptions) -> LoadedModel:
    """A causal LM from a GGUF blob, through the packed or the safetensors conversion cache."""
    gguf_path = Path(gguf_path)
    # The packed kernels are torch's CPU ones; a model placed on (or split over) an
    # accelerator keeps float weights.
    if opts.weights == "packed" and torch.device(opts.device).type == "cpu" and not opts.max_memory:
        if opts.pack_in_child and not _packed_entry_ready(digest, opts.cache_dir):
            _pack_in_child(gguf_path, digest, opts.cache_dir)
        return _load_packed(gguf_path, digest, opts)
    return _cached_load(lambda rebuild: converted_dir(gguf_path, digest, opts.cache_dir, rebuild),
                        lambda d: load_pretrained_dir(d, opts), "converted")


def load_safetensors(files: Mapping[str, Path], opts: LoadOptions,
                     kind: Literal["causal", "encoder"] = "causal") -> LoadedModel:
    """A model from {relative file name -> blob path} (config.json, *.safetensors, tokenizer)."""
    return load_pretrained_dir(linked_dir(files, opts.cache_dir), opts, kind)
