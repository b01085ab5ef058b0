#!/usr/bin/env python3
"""Writes the canned OpenRouter responses every client in the comparison reads, byte for byte
the same: a whole chat completion of 60 completion tokens, a 200-chunk stream (a keep-alive
comment, content chunks, a finish chunk, a usage chunk and [DONE]), and a 64 MiB stream for
the parsing comparison."""
import json
import sys

out = sys.argv[1]
MODEL = "openai/gpt-4o-mini"
GEN = "gen-1764115200-Ab3dEf5hIj7kLm9nOp1q"
CREATED = 1764115200
words = [f"w{i % 37}" for i in range(60)]

whole = {
    "id": GEN, "provider": "OpenAI", "model": MODEL, "object": "chat.completion",
    "created": CREATED, "system_fingerprint": "fp_5e7ab1c2d3",
    "choices": [{"logprobs": None, "finish_reason": "stop", "native_finish_reason": "stop",
                 "index": 0,
                 "message": {"role": "assistant", "content": " ".join(words) + ".",
                             "refusal": None, "reasoning": None}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 60, "total_tokens": 72,
              "cost": "@COST@", "is_byok": False,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "cost_details": {"upstream_inference_cost": None, "upstream_inference_prompt_cost": 0,
                               "upstream_inference_completions_cost": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0}},
}
with open(f"{out}/whole.json", "w") as f:
    # Costs as OpenRouter writes them (JavaScript's number form, no exponent at this size).
    f.write(json.dumps(whole, separators=(",", ":")).replace('"@COST@"', "0.0000378"))


# The catalog a gateway in front of this server loads: the one model, priced so that the canned
# bill (12 prompt and 60 completion tokens, $0.0000378) is what its prices say.
models = {"data": [{"id": MODEL, "name": "OpenAI: GPT-4o-mini", "created": CREATED,
                    "context_length": 128000,
                    "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "request": "0"},
                    "top_provider": {"context_length": 128000, "max_completion_tokens": 16384}}]}
with open(f"{out}/models.json", "w") as f:
    f.write(json.dumps(models, separators=(",", ":")))


def chunk(delta, finish=None, usage=None, choices=True):
    c = {"id": GEN, "provider": "OpenAI", "model": MODEL, "object": "chat.completion.chunk",
         "created": CREATED,
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                      "native_finish_reason": finish, "logprobs": None}] if choices else []}
    if usage:
        c["usage"] = usage
    return "data: " + json.dumps(c, separators=(",", ":")) + "\n\n"


def stream(n):
    parts = [": OPENROUTER PROCESSING\n\n"]
    for i in range(n):
        d = {"role": "assistant", "content": f" w{i % 37}"} if i == 0 else {"content": f" w{i % 37}"}
        parts.append(chunk(d))
    parts.append(chunk({"content": ""}, finish="stop"))
    parts.append(chunk({}, usage={"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n,
                                  "cost": "@COST@", "is_byok": False}, choices=False).replace('"@COST@"', "0.000126"))
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


with open(f"{out}/stream.sse", "w") as f:
    f.write(stream(200))

# 64 MiB of content chunks for the parsers, ending like a real stream.
body = []
size = 0
i = 0
while size < 64 * 1024 * 1024:
    c = chunk({"content": f" w{i % 37}"})
    body.append(c)
    size += len(c)
    i += 1
body.append("data: [DONE]\n\n")
with open(f"{out}/big.sse", "w") as f:
    f.write("".join(body))
