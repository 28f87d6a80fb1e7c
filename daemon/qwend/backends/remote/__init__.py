"""Engine: the remote backend: an OpenAI-compatible engine (vLLM, SGLang, llama.cpp) behind HTTP.

limits.py     the profile's rules (https off this machine, one key source), read by the config
apikey.py     the API key: from a variable or a 0600 file, never printed
client.py     the HTTP client: TLS, timeouts, streamed /v1/completions, error mapping, probes
tokenizer.py  exact token counts: a local tokenizer.json, or the engine's tokenize endpoint
backend.py    the Backend: one reader thread per upstream request, health probes

Chosen only by a profile with ``backend = "remote"``; never a fallback.
"""
