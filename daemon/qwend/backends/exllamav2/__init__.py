"""Engine: the exllamav2 GPU backend (EXL2 or fp16 models resident on an NVIDIA GPU).

backend.py     the Backend: load, tokenize, generate through the dynamic generator
jobmux.py      many engine streams over one batched generator
attention.py   the flash-attn stand-in in torch, and 0.3.2's causal-prefill patch
cuda.py        CUDA, driver, toolkit and extension probing (also for `qwend doctor`)
limits.py      exllamav2's limits on a profile, checked when the config loads

Nothing here imports torch or exllamav2 at module level.
"""
