"""One loaded model's engine: a daemon thread running scheduler steps, fed from asyncio.

`add_request` may be called from any thread. Requests and aborts reach the engine thread
through a command queue; outputs go back through each request's `RequestStream`, which hands
them to the caller's asyncio loop (or to a plain blocking queue when the caller has no running
loop). A step's outputs travel together: one `call_soon_threadsafe` per step per event loop,
whatever the number of streams, since each call wakes the loop through its self-pipe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from backends.detokenizer import IncrementalDetokenizer
from backends.loader import LoadedModel
from backends.lora import LoRAManager, LoRAWeights
from backends.model_runner import ModelRunner, SeqChunk, kv_block_bytes, kv_dtype, sliding_window_layers
from backends.sampler import Logprobs
from backends.sampling_params import SamplingParams
from backends.structured import GrammarCache
from registry.errors import APIError
from scheduler.block_manager import BlockManager, window_pool_size
from scheduler.faults import INJECTOR
from scheduler.scheduler import ScheduledBatch, Scheduler, SchedulerConfig
from scheduler.sequence import Sequence
from scheduler.stats import NO_STATS, RequestStats, StatsListener

log = logging.getLogger(__name__)

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
PROMPT_TOO_LONG = (
    "the prompt is longer than the context length currently available to the model; shorten "
    "the prompt, adjust the context length in settings, or use a model with a longer context length"
)


@dataclass
class EngineConfig:
    block_size: int = 16
    num_kv_blocks: int | None = None  # overrides kv_memory_bytes
    kv_memory_bytes: int = 1 << 30
    max_num_seqs: int | None = None  # None: as many as the KV pool holds at num_ctx, >= 16
    max_num_batched_tokens: int = 512
    num_ctx: int = 4096
    max_queue: int = 512
    enable_prefix_caching: bool = True
    context_shift: bool = True
    num_keep: int = 4
    name: str | None = None  # the model's name: logs and faults aimed at one model
    max_loras: int = 0  # LoRA adapters resident at once (0: this engine serves no adapters)
    lora_path: str = "auto"  # how deltas are batched: auto | gather | group (backends.lora)


@dataclass
class RequestOutput:
    request_id: str
    text: str = ""  # new text since the previous output
    token_ids: list[int] = field(default_factory=list)  # new tokens since the previous output
    finished: bool = False
    done_reason: str | None = None  # "stop" | "length" when finished
    prompt_eval_count: int = 0
    eval_count: int = 0
    prompt_eval_duration: int = 0  # ns
    eval_duration: int = 0  # ns
    error: BaseException | None = None
    logprobs: list[Logprobs] = field(default_factory=list)  # for token_ids, when asked for


@dataclass
class EngineHealth:
    """What liveness needs: is the thread there, and is its current step taking too long."""

    alive: bool
    error: str | None = None  # why the thread died
    step_seconds: float = 0.0  # how long the step now running has taken; 0 between steps


@dataclass
class EngineStats:
    running: int
    waiting: int
    free_blocks: int
    total_blocks: int
    prefix_cache_hit_tokens: int
    prefix_cache_query_tokens: int
    num_preemptions: int
    running_loras: list[str] = field(default_factory=list)  # adapter names, as vLLM's metric
    waiting_loras: list[str] = field(default_factory=list)
    max_loras: int = 0


_END = object()

Outbox = dict  # asyncio loop -> [(queue, output)], one step's outputs for that loop


def _deliver(items: list) -> None:
    """On the event loop: one step's outputs into their streams' queues, in order."""
    for q, item in items:
        q.put_nowait(item)


def _send(outbox: Outbox) -> None:
    for loop, items in outbox.items():
        try:
            loop.call_soon_threadsafe(_deliver, items)
        except RuntimeError:  # the loop is closed; nobody is listening any more
            pass


class RequestStream:
    """One request's outputs: async-iterable from the loop that created it, else iterable."""

    def __init__(self, engine: "LLMEngine", request_id: str,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.request_id = request_id
        self._engine = engine
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
        self._loop = loop
        self._aqueue: asyncio.Queue | None = asyncio.Queue() if self._loop else None
        self._squeue: queue.SimpleQueue | None = None if self._loop else queue.SimpleQueue()
        self.finished = False

    def put(self, item: RequestOutput | BaseException, outbox: Outbox | None = None) -> None:
        """Called from the engine thread; with `outbox`, the item waits for the step's send."""
        if self._loop is None:
            self._squeue.put(item)
        elif outbox is not None:
            outbox.setdefault(self._loop, []).append((self._aqueue, item))
        else:
            _send({self._loop: [(self._aqueue, item)]})

    def _unwrap(self, item):
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        if item.finished:
            self.finished = True
        return item

    def __aiter__(self):
        return self

    async def __anext__(self) -> RequestOutput:
        if self._aqueue is None:
            raise TypeError("this stream was created outside an event loop; iterate it synchronously")
        if self.finished:
            raise StopAsyncIteration
        try:
            return self._unwrap(await self._aqueue.get())
        except asyncio.CancelledError:
            self.abort()
            raise

    def __iter__(self):
        return self

    def __next__(self) -> RequestOutput:
        if self._squeue is None:
            raise TypeError("this stream belongs to an event loop; iterate it with async for")
        if self.finished:
            raise StopIteration
        return self._unwrap(self._squeue.get())

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            self._engine.abort(self.request_id)

    async def aclose(self) -> None:
        self.abort()

    def __del__(self) -> None:
        # A stream dropped before its end must not keep generating into the void.
        try:
            self.abort()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def close(self) -> None:
        self.abort()


class LLMEngine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None, start: bool = True,
                 listener: StatsListener = NO_STATS):
        self.loaded = loaded
        self.listener = listener
        self.config = cfg = config or EngineConfig()
        self.num_ctx = max(4, min(cfg.num_ctx, loaded.max_context))
        num_blocks = cfg.num_kv_blocks or max(
            1, cfg.kv_memory_bytes // kv_block_bytes(loaded.config, cfg.block_size, kv_dtype(loaded))
        )
        # A lone sequence must always fit, or preemption could never make room for it.
        self.num_ctx = min(self.num_ctx, num_blocks * cfg.block_size)
        max_seqs = cfg.max_num_seqs or max(16, num_blocks * cfg.block_size // self.num_ctx)
        self.loras = (LoRAManager(loaded.model, cfg.max_loras, cfg.lora_path)
                      if cfg.max_loras > 0 else None)
        # Sliding-window layers get their own pool, sized for what windows can reach, unless
        # that is no smaller than the full pool (then 0: one group).
        window, _ = sliding_window_layers(loaded.config)
        num_window_blocks = (window_pool_size(window, cfg.block_size, max_seqs, cfg.max_num_batched_tokens)
                             if window is not None and window < self.num_ctx else 0)
        if num_window_blocks >= num_blocks:
            num_window_blocks = 0
        self.runner = ModelRunner(loaded, num_blocks, cfg.block_size, self.loras, num_window_blocks)
        self.block_manager = BlockManager(num_blocks, cfg.block_size, cfg.enable_prefix_caching,
                                          window, num_window_blocks)
        self.scheduler = Scheduler(
            SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=cfg.max_num_batched_tokens),
            self.block_manager,
        )
        self.eos_token_ids = set(loaded.eos_token_ids)
        self.grammars = GrammarCache(loaded.tokenizer, self.runner.vocab_size, sorted(self.eos_token_ids))
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._requests: dict[str, Sequence] = {}
        self._lock = threading.Lock()
        self._num_pending = 0  # added, not yet running or finished
        self._ids = itertools.count()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._step_started = 0.0  # monotonic start of the step running now; 0 between steps
        self.died: str | None = None  # why the engine thread died, once it has
        if start:
            self.start()

    # ---- caller side (any thread) -------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="corral-engine", daemon=True)
            self._thread.start()

    def add_request(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        num_keep: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        lora: str | None = None,
    ) -> RequestStream:
        """Queue a request; its outputs arrive on the returned stream.

        `lora` is the key of a resident adapter (`add_lora`) whose deltas apply to it.

        The stream is async-iterable on `loop` (default: the running loop, if any), else
        iterable with blocking reads. Raises APIError 503 when `max_queue` requests are
        already waiting, 400 for a prompt over num_ctx when context shift is off.
        """
        if not prompt_token_ids:
            raise APIError(400, "prompt is empty")
        if self.died is not None:
            raise APIError(500, f"the engine of {self.config.name} died: {self.died}")
        if self._stopped.is_set():
            raise APIError(500, "model unloaded")
        with self._lock:
            if self._num_pending >= self.config.max_queue:
                self.listener.queue_rejected(self.config.name or "")
                raise APIError(503, QUEUE_FULL)
            self._num_pending += 1
        request_id = request_id or f"req-{next(self._ids)}"
        stream = RequestStream(self, request_id, loop)
        try:
            seq = self._new_sequence(list(prompt_token_ids), params, request_id, num_keep)
            if lora is not None:
                self._bind_lora(seq, lora)
        except BaseException:
            with self._lock:
                self._num_pending -= 1
            raise
        seq.stream = stream
        self._commands.put(("add", seq))
        return stream

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def add_lora(self, weights: LoRAWeights) -> int:
        """Make an adapter resident (between steps); its slot. ValueError if it cannot be."""
        if self.loras is None:
            raise ValueError("this engine was started without LoRA slots")
        return self._on_engine_thread(lambda: self.loras.add(weights))

    def remove_lora(self, key: str) -> None:
        if self.loras is not None:
            self._on_engine_thread(lambda: self.loras.remove(key))

    def _on_engine_thread(self, fn):
        """Run `fn` between two steps, where no forward reads the layers it changes."""
        if self._thread is None or self._stopped.is_set():
            return fn()
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put(("call", (fn, done)))
        return done.result()

    def stats(self) -> EngineStats:
        bm = self.block_manager
        running, waiting = self._lora_names(self.scheduler.running), self._lora_names(self.scheduler.waiting)
        return EngineStats(
            running_loras=running, waiting_loras=waiting,
            max_loras=self.loras.max_loras if self.loras else 0,
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting) + self._commands.qsize(),
            free_blocks=bm.num_free_blocks,
            total_blocks=bm.num_blocks,
            prefix_cache_hit_tokens=bm.prefix_hit_tokens,
            prefix_cache_query_tokens=bm.prefix_query_tokens,
            num_preemptions=self.scheduler.num_preemptions,
        )

    def health(self) -> EngineHealth:
        started = self._step_started
        alive = self._thread is not None and self._thread.is_alive() and self.died is None
        return EngineHealth(alive=alive, error=self.died,
                            step_seconds=time.monotonic() - started if started else 0.0)

    def fail_requests(self, error: APIError) -> None:
        """End every request now with `error` (a drain that ran out of time)."""
        self._commands.put(("fail", error))

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self._commands.put(("wake", None))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _lora_names(self, seqs) -> list[str]:
        """Adapter names among `seqs`, read from another thread than the engine's."""
        if self.loras is None or not self.loras.keys:
            return []
        for _ in range(3):
            try:
                keys = {seq.lora_key for seq in tuple(seqs) if seq.lora_key is not None}
                break
            except RuntimeError:  # the engine thread changed the deque meanwhile
                continue
        else:
            return []
        names = []
        for key in keys:
            try:
                names.append(self.loras.name_of(key))
            except KeyError:  # removed meanwhile
                pass
        return sorted(names)

    def _bind_lora(self, seq: Sequence, key: str) -> None:
        slot = self.loras.slot_of(key) if self.loras is not None else None
        if slot is None:
            raise APIError(500, "the model's adapter is not loaded")
        seq.lora_key, seq.lora_slot = key, slot
        # KV computed under an adapter differs from the base's: prefixes are cached per adapter.
        seq.cache_salt = f"lora:{key}".encode()

    # ---- engine thread ------------------------------------------------------------------

    def _new_sequence(self, prompt: list[int], params: SamplingParams, request_id: str,
                      num_keep: int | None) -> Sequence:
        keep = self.config.num_keep if num_keep is None else num_keep
        keep = max(0, min(keep, self.num_ctx // 2))
        if len(prompt) >= self.num_ctx:
            if not self.config.context_shift:
                raise APIError(400, PROMPT_TOO_LONG)
            prompt = self._shift(prompt, keep, len(prompt) - self.num_ctx // 2)
        seq = Sequence(prompt_token_ids=prompt, params=params, request_id=request_id,
                       num_ctx=self.num_ctx, num_keep=keep)
        if params.format is not None:
            seq.constraint = self.grammars.constraint(params.format)
        seq.detokenizer = IncrementalDetokenizer(self.loaded.tokenizer, list(params.stop), prompt_token_ids=prompt)
        return seq

    @staticmethod
    def _shift(tokens: list[int], keep: int, discard: int) -> list[int]:
        discard = max(1, min(discard, len(tokens) - keep - 1))
        return tokens[:keep] + tokens[keep + discard:]

    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - the thread dies; say why, end its requests
            self.died = f"{type(exc).__name__}: {exc}"
            log.critical("the engine thread of %s died", self.config.name, exc_info=exc)
            self._fail_all(APIError(500, f"the engine of {self.config.name} died: {exc}"))
            return
        self._fail_all(APIError(500, "model unloaded"))

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._drain_commands(block=not self.scheduler.has_work())
            if self._stopped.is_set():
                break
            if self.scheduler.has_work():
                self._step_started = time.monotonic()
                try:
                    self.step()
                except Exception as exc:  # noqa: BLE001 - fail the requests, keep the engine
                    log.exception("engine step failed")
                    self._fail_all(exc)
                finally:
                    self._step_started = 0.0

    def _drain_commands(self, block: bool) -> None:
        try:
            cmd, arg = self._commands.get(timeout=0.5) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            if cmd == "add":
                self._requests[arg.request_id] = arg
                self.scheduler.add(arg)
            elif cmd == "call":
                fn, done = arg
                try:
                    done.set_result(fn())
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    done.set_exception(exc)
            elif cmd == "abort":
                seq = self._requests.get(arg)
                if seq is not None:
                    self._finish(seq, "abort")
                    seq.stream.put(RequestOutput(request_id=seq.request_id, finished=True))
            elif cmd == "fail":
                self._fail_all(arg)
            try:
                cmd, arg = self._commands.get_nowait()
            except queue.Empty:
                return

    def step(self) -> None:
        """Take new commands, schedule, run one forward, and process its tokens."""
        timer = self.runner.timer
        with timer.section("schedule"):
            self._drain_commands(block=False)
            INJECTOR.check(self.config.name)
            batch = self.scheduler.schedule()
            if batch.is_empty:
                return
            chunks = self._chunks(batch)
        sampled, logprobs = self.runner.execute_with_logprobs(chunks)
        with timer.section("emit"):
            outbox: Outbox = {}
            try:
                self._update(batch, sampled, logprobs, outbox)
            finally:
                _send(outbox)

    def _chunks(self, batch: ScheduledBatch) -> list[SeqChunk]:
        now = time.perf_counter_ns()
        chunks = []
        for seq, n in batch.entries:
            if seq.first_scheduled_ns == 0:
                seq.first_scheduled_ns = now
            start = seq.num_computed_tokens
            chunks.append(SeqChunk(
                token_ids=seq.token_ids[start:start + n],
                start_pos=start,
                block_table=seq.block_table,
                window_block_table=seq.window_block_table,
                sample=start + n == seq.num_tokens,
                params=seq.params,
                generator=seq.generator,
                token_history=seq.token_ids,
                constraint=seq.constraint,
                lora_slot=seq.lora_slot,
            ))
        return chunks

    def _update(self, batch: ScheduledBatch, sampled: list[int | None],
                logprobs: list[Logprobs | None], outbox: Outbox) -> None:
        now = time.perf_counter_ns()
        for (seq, n), token, lp in zip(batch.entries, sampled, logprobs):
            seq.num_computed_tokens += n
            self.block_manager.cache_full_blocks(seq)
            if token is None:
                continue
            if seq.first_token_ns == 0:
                seq.first_token_ns = now
                with self._lock:
                    self._num_pending -= 1
            else:
                seq.inter_token_ns.append(now - seq.last_token_ns)
            seq.last_token_ns = now
            self._on_token(seq, token, now, lp, outbox)

    def _on_token(self, seq: Sequence, token: int, now: int, lp: Logprobs | None,
                  outbox: Outbox) -> None:
        lps = [lp] if lp is not None else []
        eos = token in self.eos_token_ids
        if eos and not seq.params.ignore_eos:
            seq.output_token_ids.append(token)
            self._emit(seq, seq.detokenizer.flush(), token, lps, now, "stop", outbox)
            return
        seq.append_token(token)
        text = "" if eos else seq.detokenizer.add(token)  # an ignored EOS counts, but is no text
        params = seq.params
        if seq.detokenizer.stopped:
            self._emit(seq, text, token, lps, now, "stop", outbox)
        elif 0 <= params.num_predict <= seq.num_output_tokens or (
            params.num_predict < 0 and seq.num_output_tokens >= 10 * self.num_ctx
        ):
            self._emit(seq, text + seq.detokenizer.flush(), token, lps, now, "length", outbox)
        elif seq.num_tokens > self.num_ctx:
            if self.config.context_shift:
                seq.token_ids = self._shift(seq.token_ids, seq.num_keep,
                                            (seq.num_tokens - seq.num_keep) // 2)
                self.scheduler.recompute(seq)
                self._emit(seq, text, token, lps, now, None, outbox)
            else:
                self._emit(seq, text + seq.detokenizer.flush(), token, lps, now, "length", outbox)
        else:
            self._emit(seq, text, token, lps, now, None, outbox)

    def _emit(self, seq: Sequence, text: str, token: int, logprobs: list[Logprobs], now: int,
              reason: str | None, outbox: Outbox) -> None:
        out = RequestOutput(request_id=seq.request_id, text=text, token_ids=[token], logprobs=logprobs)
        if reason is not None:
            out.finished, out.done_reason = True, reason
            out.prompt_eval_count = seq.num_prompt_tokens
            out.eval_count = seq.num_output_tokens
            out.prompt_eval_duration = seq.first_token_ns - seq.first_scheduled_ns
            out.eval_duration = now - seq.first_token_ns
            self._finish(seq, reason)
        seq.stream.put(out, outbox)

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq.is_finished:
            return
        if seq.first_token_ns == 0:
            with self._lock:
                self._num_pending -= 1
        self.scheduler.finish(seq, reason)
        self._requests.pop(seq.request_id, None)
        try:
            self.listener.request_finished(self._request_stats(seq, reason))
        except Exception:  # noqa: BLE001 - metrics never take a request down
            log.exception("stats listener failed")

    def _request_stats(self, seq: Sequence, reason: str) -> RequestStats:
        end = time.perf_counter_ns()
        return RequestStats(
            model=self.config.name or "",
            finished_reason=reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_generation_tokens=seq.num_output_tokens,
            num_prefix_query_tokens=seq.num_prefix_query_tokens,
            num_prefix_hit_tokens=seq.num_cached_prompt_tokens,
            num_preemptions=seq.num_preemptions,
            queue_time=(seq.first_scheduled_ns - seq.arrival_ns) / 1e9 if seq.first_scheduled_ns else 0.0,
            time_to_first_token=(seq.first_token_ns - seq.arrival_ns) / 1e9 if seq.first_token_ns else None,
            e2e_latency=(end - seq.arrival_ns) / 1e9,
            inter_token_latencies=[ns / 1e9 for ns in seq.inter_token_ns],
        )

    def _fail_all(self, exc: BaseException) -> None:
        for seq in list(self._requests.values()):
            self._finish(seq, "error")
            seq.stream.put(exc)
        while True:
            try:
                cmd, arg = self._commands.get_nowait()
            except queue.Empty:
                break
            if cmd == "add":
                with self._lock:
                    self._num_pending -= 1
                arg.stream.put(exc)
            elif cmd == "call":
                arg[1].set_exception(exc)

    # ---- synchronous helper (tests, offline use) ------------------------------------------

    def generate(self, prompt_token_ids: list[int], params: SamplingParams) -> list[int]:
        """Blocking: all output tokens of one request."""
        tokens: list[int] = []
        for out in self.add_request(prompt_token_ids, params):
            tokens.extend(out.token_ids)
        return tokens

