"""A fake OpenAI-compatible upstream with deterministic answers, run as its own process:

    gateway fake-upstream --port 9100

Behaviour is steered by options, merged in this order (later wins):
  1. the model name after '@':         "fake-base@latency=20,tps=200"
  2. the header  x-fake-options:       "status=500"
  3. the body field fake_options:       {"status": 429, "retry_after": 2}   (the gateway passes it through)

Options
  latency=MS           wait before answering (before the first chunk, for streams)
  tps=N                tokens per second while streaming (default: as fast as possible)
  words=N              length of the answer in words (default 12)
  status=CODE          answer with this HTTP error status and an OpenAI error body
  retry_after=S        Retry-After seconds sent with status=429 (default 1)
  hang=1               never answer (until the client goes away)
  disconnect_after=N   streams: drop the connection after N chunks; non-streams: drop it at once
  malformed=1          answer 200 with a body that is not JSON (streams: a malformed event)
  usage=omit           report no usage (streams: no usage chunk even when asked)
  cached=N             report N of the prompt tokens as cached (prompt_tokens_details.cached_tokens)
  finish=REASON        the finish_reason to report (default stop)
  say_user=1           answer with the last user message, word for word
  judge=1              act as a grounding verifier: read "CLAIM n: text" lines and the DOCUMENTS block of
                       the last user message and answer {"verdicts": [...]}, a claim supported when its
                       text (letters and digits only, any case) appears in the documents word for word
  tool=1               answer with a tool call (also the default when tools are given and
                       tool_choice is not "none")
  fail_times=N,key=K   fail (status, default 500) only the first N requests carrying key K

GET /_fake/stats reports requests, completed answers and cancellations (client went away before
the answer was complete); GET /_fake/requests the last bodies received; POST /_fake/reset clears both.
POST /v1/messages speaks enough of Anthropic's Messages API to test the litellm adapter offline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import struct
from collections import Counter, deque
from typing import Any

import orjson
from aiohttp import web

VOCAB = ("the gateway routes each request to a model that answers quickly and cheaply with grounded facts "
         "from documents while metering every token so finance can trust the cost of base fine-tuned and "
         "distilled tiers").split()
CREATED = 1_700_000_000


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.completed = 0
        self.cancelled = 0
        self.by_model: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)
        self.fail_counts: Counter[str] = Counter()

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "completed": self.completed, "cancelled": self.cancelled,
                "by_model": dict(self.by_model)}


def parse_options(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        key, sep, value = part.partition("=")
        if key.strip():
            out[key.strip()] = value.strip() if sep else "1"
    return out


def options_for(request: web.Request, body: dict[str, Any]) -> dict[str, str]:
    model = str(body.get("model", ""))
    opts = parse_options(model.partition("@")[2])
    opts.update(parse_options(request.headers.get("x-fake-options")))
    extra = body.get("fake_options")
    if isinstance(extra, str):
        opts.update(parse_options(extra))
    elif isinstance(extra, dict):
        opts.update({str(k): str(v) for k, v in extra.items()})
    return opts


def words_for(seed: str, n: int) -> list[str]:
    out: list[str] = []
    counter = 0
    while len(out) < n:
        digest = hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        out.extend(VOCAB[b % len(VOCAB)] for b in digest)
        counter += 1
    return out[:n]


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        parts = []
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
        return "\n".join(parts)
    prompt = body.get("prompt", body.get("input", ""))
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(count_tokens(str(m.get("content") or "")) + 3 for m in body["messages"] if isinstance(m, dict)) + 3
    return count_tokens(prompt_text(body))


def usage_body(prompt: int, completion: int, opts: dict[str, str]) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if "cached" in opts:
        usage["prompt_tokens_details"] = {"cached_tokens": min(prompt, int(opts["cached"]))}
    return usage


def error_body(status: int, message: str) -> bytes:
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "server_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": f"fake_{status}"}})


def counts_cancellation(handler):
    """A handler cancelled before it finished means the client went away: count it."""

    async def wrapper(self: "FakeUpstream", request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise

    return wrapper


class FakeUpstream:
    def __init__(self) -> None:
        self.stats = Stats()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/messages", self.anthropic_messages)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/_fake/stats", lambda r: web.json_response(self.stats.to_dict()))
        app.router.add_get("/_fake/requests", lambda r: web.json_response(list(self.stats.recent)))
        app.router.add_post("/_fake/reset", self.reset)
        app.router.add_get("/health", lambda r: web.json_response({"status": "ok"}))
        return app

    async def reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response({"reset": True})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "fake", "object": "model", "created": CREATED, "owned_by": "fake"}]})

    # -- common steps --------------------------------------------------------------------------

    async def _begin(self, request: web.Request) -> tuple[dict[str, Any], dict[str, str], web.StreamResponse | None]:
        """Read and count the request; the misbehaviour its options ask for, if any, is the early answer."""
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.stats.requests += 1
        self.stats.by_model[str(body.get("model"))] += 1
        self.stats.recent.append({"path": request.path, "body": body,
                                  "authorization": request.headers.get("authorization"),
                                  "api_key": request.headers.get("x-api-key") or request.headers.get("api-key"),
                                  "x_request_id": request.headers.get("x-request-id")})
        opts = options_for(request, body)
        return body, opts, await self._misbehave(request, opts, bool(body.get("stream")))

    async def _misbehave(self, request: web.Request, opts: dict[str, str], stream: bool) -> web.StreamResponse | None:
        latency = float(opts.get("latency", 0)) / 1000.0
        if latency:
            await asyncio.sleep(latency)
        if opts.get("hang"):
            await asyncio.sleep(3600)
        if "fail_times" in opts:
            key = opts.get("key", "default")
            self.stats.fail_counts[key] += 1
            if self.stats.fail_counts[key] > int(opts["fail_times"]):
                return None
            opts.setdefault("status", "500")
        status = int(opts.get("status", 200))
        if status != 200:
            headers = {}
            if status == 429:
                headers["retry-after"] = opts.get("retry_after", "1")
            return web.Response(status=status, body=error_body(status, f"fake upstream error {status}"),
                                content_type="application/json", headers=headers)
        if opts.get("disconnect_after") is not None and not stream:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError()
        if opts.get("malformed") and not stream:
            return web.Response(status=200, body=b'{"id": "broken", "choices": [', content_type="application/json")
        return None

    def _done(self) -> None:
        self.stats.completed += 1

    # -- chat ----------------------------------------------------------------------------------

    @counts_cancellation
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, opts, early = await self._begin(request)
        if early is not None:
            return early
        stream = bool(body.get("stream"))
        model = str(body.get("model"))
        seed_text = f"{model}|{prompt_text(body)}|{body.get('seed')}"
        n_words = int(opts.get("words", 12))
        n = int(body.get("n") or 1)
        tools = body.get("tools") or []
        tool_choice = body.get("tool_choice")
        use_tool = bool(opts.get("tool")) or (bool(tools) and tool_choice != "none")
        answers = [self._answer_text(body, f"{seed_text}|{i}", n_words, opts) for i in range(n)]
        if stream:
            return await self._chat_stream(request, body, opts, answers, use_tool, tools, tool_choice)
        choices = []
        completion_tokens = 0
        for i, text in enumerate(answers):
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            finish = "stop"
            if use_tool:
                call = self._tool_call(tools, tool_choice, seed_text, i)
                message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
                finish = "tool_calls"
                completion_tokens += count_tokens(call["function"]["arguments"]) + 3
            else:
                text, finish = self._apply_stop(text, body.get("stop"), opts)
                finish = opts.get("finish", finish)
                message["content"] = text
                completion_tokens += count_tokens(text)
            choices.append({"index": i, "message": message, "finish_reason": finish,
                            "logprobs": self._logprobs(message.get("content")) if body.get("logprobs") else None})
        out: dict[str, Any] = {
            "id": "chatcmpl-fake-" + hashlib.sha256(seed_text.encode()).hexdigest()[:16],
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": f"fp_fake_{body.get('seed', 0)}",
            "choices": choices,
        }
        if opts.get("usage") != "omit":
            p = prompt_tokens(body)
            out["usage"] = usage_body(p, completion_tokens, opts)
        self._done()
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    def _answer_text(self, body: dict[str, Any], seed: str, n_words: int, opts: dict[str, str] | None = None) -> str:
        if opts and opts.get("judge"):
            return _judge(body)
        if opts and opts.get("say_user"):
            said = _last_user(body)
            if said is not None:
                return said
        words = words_for(seed, n_words)
        fmt = body.get("response_format") or {}
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            return orjson.dumps({"answer": " ".join(words)}).decode()
        words[0] = words[0].capitalize()
        return " ".join(words) + "."

    def _apply_stop(self, text: str, stop: Any, opts: dict[str, str]) -> tuple[str, str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        for s in stops:
            if s and s in text:
                return text[: text.index(s)], "stop"
        return text, "stop"

    def _tool_call(self, tools: list[dict[str, Any]], tool_choice: Any, seed: str, i: int) -> dict[str, Any]:
        name = "lookup"
        if isinstance(tool_choice, dict):
            name = tool_choice.get("function", {}).get("name", name)
        elif tools:
            name = tools[0].get("function", {}).get("name", name)
        args = orjson.dumps({"query": " ".join(words_for(seed, 3))}).decode()
        call_id = "call_" + hashlib.sha256(f"{seed}|{i}".encode()).hexdigest()[:20]
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}

    def _logprobs(self, content: str | None) -> dict[str, Any]:
        tokens = (content or "").split(" ")
        return {"content": [{"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": []}
                            for t in tokens], "refusal": None}

    async def _chat_stream(self, request: web.Request, body: dict[str, Any], opts: dict[str, str],
                           answers: list[str], use_tool: bool, tools: list[Any], tool_choice: Any) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        model = str(body.get("model"))
        cid = "chatcmpl-fake-" + hashlib.sha256(prompt_text(body).encode()).hexdigest()[:16]
        tps = float(opts.get("tps", 0))
        delay = 1.0 / tps if tps > 0 else 0.0
        disconnect_after = int(opts["disconnect_after"]) if "disconnect_after" in opts else None
        want_usage = bool((body.get("stream_options") or {}).get("include_usage")) and opts.get("usage") != "omit"
        base = {"id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                "system_fingerprint": f"fp_fake_{body.get('seed', 0)}"}
        if want_usage:
            base["usage"] = None
        sent = 0
        completion_tokens = 0

        async def event(payload: bytes) -> None:
            nonlocal sent
            if disconnect_after is not None and sent >= disconnect_after:
                assert request.transport is not None
                request.transport.close()
                raise asyncio.CancelledError()
            await resp.write(b"data: " + payload + b"\n\n")
            sent += 1
            if delay:
                await asyncio.sleep(delay)

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
            return orjson.dumps({**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                      "finish_reason": finish}]})

        for i, text in enumerate(answers):
            await event(chunk(i, {"role": "assistant", "content": ""}))
            if use_tool:
                call = self._tool_call(tools, tool_choice, f"{model}|{prompt_text(body)}|{body.get('seed')}|{i}", i)
                await event(chunk(i, {"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                                      "function": {"name": call["function"]["name"], "arguments": ""}}]}))
                args = call["function"]["arguments"]
                for j in range(0, len(args), 8):
                    await event(chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": args[j:j + 8]}}]}))
                completion_tokens += count_tokens(args) + 3
                await event(chunk(i, {}, "tool_calls"))
                continue
            text, _ = self._apply_stop(text, body.get("stop"), opts)
            for k, word in enumerate(text.split(" ")):
                if opts.get("malformed") and k == 2:
                    await resp.write(b"data: {not json\n\n")
                await event(chunk(i, {"content": word if k == 0 else " " + word}))
            completion_tokens += count_tokens(text)
            await event(chunk(i, {}, opts.get("finish", "stop")))
        if want_usage:
            p = prompt_tokens(body)
            await event(orjson.dumps({**base, "choices": [], "usage": usage_body(p, completion_tokens, opts)}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self._done()
        return resp

    # -- legacy completions --------------------------------------------------------------------

    @counts_cancellation
    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, opts, early = await self._begin(request)
        if early is not None:
            return early
        stream = bool(body.get("stream"))
        model = str(body.get("model"))
        text = " " + " ".join(words_for(f"{model}|{prompt_text(body)}", int(opts.get("words", 12))))
        text, _ = self._apply_stop(text, body.get("stop"), opts)
        p, c = count_tokens(prompt_text(body)), count_tokens(text)
        base = {"id": "cmpl-fake", "object": "text_completion", "created": CREATED, "model": model}
        usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        if not stream:
            out = {**base, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]}
            if opts.get("usage") != "omit":
                out["usage"] = usage
            self._done()
            return web.Response(body=orjson.dumps(out), content_type="application/json")
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for word in text.split(" ")[1:]:
            piece = {**base, "choices": [{"index": 0, "text": " " + word, "logprobs": None, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(piece) + b"\n\n")
        last = {**base, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]}
        await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage") and opts.get("usage") != "omit":
            await resp.write(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        self._done()
        return resp

    # -- embeddings ----------------------------------------------------------------------------

    @counts_cancellation
    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, opts, early = await self._begin(request)
        if early is not None:
            return early
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = int(body.get("dimensions") or opts.get("dims", 8))
        data = []
        tokens = 0
        for i, item in enumerate(items):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += count_tokens(text) if isinstance(item, str) else len(item)
            digest = hashlib.sha256(text.encode()).digest()
            vector = [round((digest[k % 32] - 128) / 128.0, 6) for k in range(dims)]
            emb: Any = vector
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        out = {"object": "list", "data": data, "model": body.get("model"),
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        self._done()
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    # -- Anthropic Messages (enough for litellm's anthropic provider) ---------------------------

    @counts_cancellation
    async def anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        body, opts, early = await self._begin(request)
        if early is not None:
            return early
        model = str(body.get("model"))
        text = " ".join(words_for(f"{model}|{prompt_text(body)}", int(opts.get("words", 12))))
        p, c = prompt_tokens(body), count_tokens(text)
        if not body.get("stream"):
            self._done()
            return web.json_response({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": p, "output_tokens": c}})
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n")

        await send("message_start", {"message": {"id": "msg_fake", "type": "message", "role": "assistant",
                                                  "model": model, "content": [], "stop_reason": None,
                                                  "usage": {"input_tokens": p, "output_tokens": 0}}})
        await send("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for k, word in enumerate(text.split(" ")):
            await send("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                     "text": word if k == 0 else " " + word}})
        await send("content_block_stop", {"index": 0})
        await send("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": c}})
        await send("message_stop", {})
        self._done()
        return resp


def main(host: str = "127.0.0.1", port: int = 9100) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    fake = FakeUpstream()
    web.run_app(fake.app(), host=host, port=port, access_log=None, print=None, handler_cancellation=True,
                shutdown_timeout=1)


def _last_user(body: dict[str, Any]) -> str | None:
    users = [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)
             and m.get("role") == "user" and isinstance(m.get("content"), str)]
    return users[-1] if users else None


def _judge(body: dict[str, Any]) -> str:
    """A deterministic stand-in for a verifier model: verbatim support only."""
    prompt = _last_user(body) or ""
    documents = re.split(r"\n\n(?:QUESTION|CLAIMS):", prompt)[0]

    def plain(text: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", text.lower()))

    verdicts = []
    for m in re.finditer(r"^CLAIM (\d+): (.*)$", prompt, re.M):
        supported = plain(m.group(2)) in plain(documents)
        verdicts.append({"claim": int(m.group(1)), "supported": supported, "score": 0.95 if supported else 0.05})
    return orjson.dumps({"verdicts": verdicts}).decode()
