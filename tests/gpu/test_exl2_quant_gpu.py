"""A real model in EXL2: SmolLM2-135M quantized by the project's packer, served by exllamav2.

tests/fixtures/exl2_quantize.py writes the quant (mixed 6/5/4/3/2-bit groups
around 4 bpw, act-order) and the same weights decoded back to fp16 by the
independent numpy dequantizer. exllamav2 loads the EXL2 folder through its
EXL2 path (QMatrix, the fused attention and MLP); qwend's transformers
backend loads the decoded one. Same effective weights, so they must agree as
closely as the fp16 model does (test_exllamav2_gpu.py): the log-probs of the
20 likeliest first tokens within LOGPROB_TOLERANCE, and greedy answers equal
up to the reference's first near-tie.

On a GPU this checks the real EXL2 kernels against the packer's reading of
the format; on the emulated extension it checks exllamav2's EXL2 loading and
forward code and qwend's backend, with the format read by the same
assumption as the packer (docs/gpu.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from qwend.backends.base import Prompt, Sampling
from qwend.backends.exllamav2.backend import ExLlamaV2Backend
from qwend.backends.transformers import TransformersBackend
from tests.fixtures import exl2_quantize
from tests.fixtures.exllamav2_cpu import is_emulating
from tests.fixtures.fake_backend import SMOLLM2_DIR
from tests.gpu.conftest import gpu_profile

GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=0)
LOGPROB_TOLERANCE = 0.05  # as for the fp16 model: fp16 compute against fp32, same weights
TOP_TOKENS = 20
MATCH_TOKENS = 32
NEAR_TIE = 0.1  # logits; within it greedy may pick either token (see test_daemon_gpu.py)
MIN_MATCHED = 16  # tokens that must be compared per prompt, so the check is not empty
PROMPTS = (  # no near-tie in the reference's first 32 greedy tokens (smallest gap 0.10, 0.49)
    "<|im_start|>user\nWrite a Python function that adds two numbers.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "def mean(values):\n    ",
)


MARKUP_RE = re.compile(r"(<\|im_start\|>|<\|im_end\|>)")


def as_prompt(text: str) -> Prompt:
    """``text`` with its ChatML markup as template markers, as a renderer builds it
    (request text is plain text: typed markup is never a control token)."""
    return Prompt.join(
        Prompt.marker(piece) if MARKUP_RE.fullmatch(piece) else piece
        for piece in MARKUP_RE.split(text)
    )


@pytest.fixture(scope="module")
def quant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """(EXL2 folder, its fp16 decoding, bits per weight)."""
    if not (SMOLLM2_DIR / "model.safetensors").is_file():
        pytest.skip(f"run `qwend pull smollm2-135m` first (looked in {SMOLLM2_DIR})")
    root = tmp_path_factory.mktemp("smollm2-exl2")
    bpw = exl2_quantize.quantize(SMOLLM2_DIR, root / "exl2")
    exl2_quantize.dequantized(root / "exl2", SMOLLM2_DIR, root / "fp16")
    return root / "exl2", root / "fp16", bpw


@pytest.fixture(scope="module")
def exl2_backend(quant: tuple[Path, Path, float]) -> Iterator[ExLlamaV2Backend]:
    backend = ExLlamaV2Backend(quant[0], gpu_profile(), profile_name="smollm2-exl2")
    backend.load()
    yield backend
    backend.unload()


@pytest.fixture(scope="module")
def reference(quant: tuple[Path, Path, float]) -> TransformersBackend:
    backend = TransformersBackend(quant[1], context_length=2048, threads=0, pull_hint="")
    backend.load()
    return backend


def test_the_quant_is_mixed_width_act_order_at_about_4_bpw(
    quant: tuple[Path, Path, float],
) -> None:
    exl2, _, bpw = quant
    with safe_open(str(exl2 / "model.safetensors"), "pt") as f:
        groups = f.get_tensor("model.layers.0.mlp.down_proj.q_groups")
        invperm = f.get_tensor("model.layers.0.mlp.down_proj.q_invperm")
        assert "model.layers.0.self_attn.q_proj.weight" not in f.keys()  # noqa: SIM118
    assert set(groups[0::2].tolist()) == {6, 5, 4, 3, 2}
    assert not torch.equal(invperm, torch.arange(len(invperm), dtype=invperm.dtype))
    assert 4.0 <= bpw <= 4.5, bpw


@pytest.mark.parametrize("prompt", PROMPTS)
def test_first_token_logprobs_match_the_decoded_weights(
    exl2_backend: ExLlamaV2Backend, reference: TransformersBackend, prompt: str
) -> None:
    ids = reference.encode(as_prompt(prompt))
    assert exl2_backend.encode(as_prompt(prompt)) == ids
    assert exl2_backend._loaded is not None
    with torch.inference_mode():
        logits = exl2_backend._loaded.model.forward(torch.tensor([ids]))[0, -1].float().cpu()
        expected = reference._model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    logprobs, expected_logprobs = torch.log_softmax(logits, -1), torch.log_softmax(expected, -1)
    top = torch.topk(expected_logprobs, TOP_TOKENS).indices
    gap = (logprobs[top] - expected_logprobs[top]).abs().max().item()
    print(f"EXL2 against its decoded weights: max |log p| gap over the top {TOP_TOKENS}: {gap:.4f}")
    assert int(logits.argmax()) == int(expected.argmax())
    assert gap < LOGPROB_TOLERANCE


def greedy_with_margins(backend: TransformersBackend, ids: list[int]) -> tuple[list[int], int]:
    """The reference's greedy tokens and how many come before its first near-tie."""
    tokens = list(backend.generate(ids, GREEDY, MATCH_TOKENS))
    with torch.inference_mode():
        logits = backend._model(input_ids=torch.tensor([ids + tokens])).logits[0]
    top2 = logits[len(ids) - 1 : len(ids) - 1 + len(tokens)].float().topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()
    return tokens, next((i for i, m in enumerate(margins) if m < NEAR_TIE), len(tokens))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_answers_match_up_to_the_first_near_tie(
    exl2_backend: ExLlamaV2Backend, reference: TransformersBackend, prompt: str
) -> None:
    ids = reference.encode(as_prompt(prompt))
    expected, untied = greedy_with_margins(reference, ids)
    steps = exl2_backend.generate(ids, GREEDY, MATCH_TOKENS)
    try:
        got = list(steps)
    finally:
        steps.close()
    print(f"compared {untied} of {len(expected)} greedy tokens (up to the first near-tie)")
    assert untied >= MIN_MATCHED
    assert got[:untied] == expected[:untied]


def test_the_exl2_path_ran_on_the_emulated_kernels(exl2_backend: ExLlamaV2Backend) -> None:
    """Emulated only: the forward passes above went through the EXL2 matrix ops."""
    if not is_emulating():
        pytest.skip("runs on the real CUDA extension here (nothing emulated to count)")
    from tests.fixtures.exllamav2_ext_ref import CALLS

    for op in ("make_q_matrix", "q_attn_forward_1", "q_mlp_forward_", "sample_basic"):
        assert CALLS[op] > 0, op
    assert not [name for name in CALLS if name.startswith("missing:")]
