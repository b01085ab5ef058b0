-- wrk: the same POST the SDKs send.
wrk.method = "POST"
wrk.body = '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say something short."}],"max_tokens":256}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-or-v1-bench"
