"""SFT fast path (the recipe's `fast_path: true`): tokenized chat examples -> packed rows, trained with the same loss.

    PackedCollator      B examples -> one unpadded row [1, T], positions restarting per example, cu_seq_lens;
                        optionally the examples' shared system turn once per row (share_prefix)
    varlen_attention    attention "sft_varlen": causal within each example (flash varlen on CUDA, sdpa mask on CPU)
    FastSFTTrainer      LM head (optionally Liger's fused linear cross-entropy) on answer positions only, stock
                        normalisation, no host sync per step; optionally the cross-entropy compiled and the
                        gradient clipping folded into the fused AdamW step; NEFTune (neftune_noise_alpha) scaled
                        per example of the packed row (packed_neftune_noise)
    prepare_fast_model  switches the attention, optional fused q/k/v and gate/up projections, float8 matmuls
                        (torchao), Liger kernels and per-layer torch.compile
Examples per optimizer step, sampler order and learning-rate schedule are those of the stock path.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import types

import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from trl import SFTTrainer

from recipes.sft.data import IGNORE_INDEX

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "sft_varlen"


def shared_prefix_length(ids: list[list[int]], labels: list[list[int]], minimum: int = 8) -> int:
    """Tokens that every example starts with and that predict nothing (the system turn, for the recipe's chats):
    the longest common prefix P of `ids`, cut so that no label at positions 0..P is supervised (the last shared
    position's target, token P, is then a prompt token in every example). 0 when that is under `minimum` tokens or
    there is one example."""
    if len(ids) < 2:
        return 0
    p = min(len(x) for x in ids)
    first = ids[0]
    for x in ids[1:]:
        p = min(p, next((i for i, (a, b) in enumerate(zip(first, x)) if a != b), p))
    for y in labels:
        p = min(p, next((i for i, t in enumerate(y) if t != IGNORE_INDEX), len(y)) - 1)
    return p if p >= minimum else 0


class PackedCollator:
    """[{input_ids, labels}] * B -> one packed row; labels may be replaced by completion_mask (1 = answer token).

    share_prefix: the tokens all B examples start with and learn nothing from (the system turn) are placed once at
    the head of the row; each example's own tokens follow with the positions they have in the example, and attend
    to that one copy (`kv_index` lays out each example's keys as prefix + its own tokens). The outputs and gradients
    are those of the plain row; the decoder runs on (B - 1) x P fewer tokens. `chat_tokens` counts the examples'
    tokens either way."""

    def __init__(self, max_length_multiple: int = 64, share_prefix: bool = False):
        self.max_length_multiple = max_length_multiple  # few distinct max_length values: few recompiles
        self.share_prefix = share_prefix

    def __call__(self, features: list[dict]) -> dict:
        xs = [list(f["input_ids"]) for f in features]
        ys = [list(f["labels"]) if "labels" in f else
              [t if m else IGNORE_INDEX for t, m in zip(x, f["completion_mask"])] for x, f in zip(xs, features)]
        p = shared_prefix_length(xs, ys) if self.share_prefix else 0
        ids, positions, labels, shift, cu = list(xs[0][:p]), list(range(p)), list(ys[0][:p]), [IGNORE_INDEX] * p, [0]
        cu_k, kv_index = [0], list(range(p))
        if p:  # the prefix is a sequence of its own (causal within it) ...
            cu.append(p)
            cu_k.append(p)
        for x, y in zip(xs, ys):
            start = len(ids)
            ids += x[p:]
            positions += range(p, len(x))
            labels += y[p:]
            shift += y[p + 1:] + [IGNORE_INDEX]  # the next token of the same example; none after its last token
            cu.append(cu[-1] + len(x) - p)
            if p:  # ... and each example's keys are the prefix's followed by its own
                kv_index += list(range(p)) + list(range(start, start + len(x) - p))
                cu_k.append(cu_k[-1] + len(x))
        shift_labels = torch.tensor(shift)
        m = self.max_length_multiple
        longest = max(b - a for a, b in zip(cu[:-1], cu[1:]))
        batch = {
            "input_ids": torch.tensor(ids)[None],                                  # [1, T]
            "position_ids": torch.tensor(positions)[None],                         # [1, T] 0.. per example
            "labels": torch.tensor(labels)[None],                                  # [1, T] unshifted (for counts)
            "shift_labels": shift_labels[None],                                    # [1, T] target of position t
            "answer_positions": torch.nonzero(shift_labels != IGNORE_INDEX).squeeze(1),  # [N] rows for the head
            "cu_seq_lens": torch.tensor(cu, dtype=torch.int32),                    # [S + 1] query sequences
            "max_length": -(-longest // m) * m,
            "chat_tokens": sum(len(x) for x in xs),
        }
        if p:
            batch.update({"cu_seq_lens_k": torch.tensor(cu_k, dtype=torch.int32),  # [S + 1] key sequences
                          "max_length_k": -(-max(len(x) for x in xs) // m) * m,
                          "kv_index": torch.tensor(kv_index)})                     # [sum of key lengths]
        return batch


def _varlen_kwargs() -> tuple[object | None, dict, bool, bool]:
    """-> (varlen_attn or None, causal kwargs, takes enable_gqa, takes scale); its signature changed across torch
    releases (2.10: is_causal; later: window_size, enable_gqa, scale)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, {}, False, False
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return varlen_attn, causal, "enable_gqa" in params, "scale" in params


_VARLEN_ATTN, _VARLEN_CAUSAL, _VARLEN_GQA, _VARLEN_SCALE = _varlen_kwargs()


def dense_document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seq_lens: torch.Tensor,
                             scale: float, cu_seq_lens_k: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: q [Tq, H, D], k/v [Tk, Hkv, D] -> [Tq, H, D], causal within each sequence: sequence s has the
    queries cu_seq_lens[s]:cu_seq_lens[s + 1] and the keys cu_seq_lens_k[s]:cu_seq_lens_k[s + 1] (default: the
    same), its last query aligned with its last key (a sequence with more keys than queries sees a prefix first)."""
    cu_k = cu_seq_lens if cu_seq_lens_k is None else cu_seq_lens_k
    len_q, len_k = (cu_seq_lens[1:] - cu_seq_lens[:-1]).long(), (cu_k[1:] - cu_k[:-1]).long()
    seqs = torch.arange(len(len_q), device=q.device)
    doc_q = torch.repeat_interleave(seqs, len_q, output_size=q.shape[0])
    doc_k = torch.repeat_interleave(seqs, len_k, output_size=k.shape[0])
    # position of each query / key counted from the end of its sequence
    from_end_q = cu_seq_lens[1:].long()[doc_q] - torch.arange(q.shape[0], device=q.device)
    from_end_k = cu_k[1:].long()[doc_k] - torch.arange(k.shape[0], device=q.device)
    mask = (doc_q[:, None] == doc_k[None, :]) & (from_end_q[:, None] <= from_end_k[None, :])  # [Tq, Tk]
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # GQA: kv head j serves q heads j*rep..
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         attn_mask=mask, scale=scale)
    return out.transpose(0, 1)


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     cu_seq_lens_q=None, max_length_q=None, cu_seq_lens_k=None, max_length_k=None, kv_index=None,
                     **kwargs):
    """transformers attention interface: query [1, H, T, D], key/value [1, Hkv, T, D] -> ([1, T, H, D], None).
    With kv_index (PackedCollator's share_prefix), the keys and values are first laid out as kv_index says, in the
    sequences of cu_seq_lens_k."""
    if cu_seq_lens_q is None:
        raise ValueError(f"attention '{ATTN_IMPLEMENTATION}' needs cu_seq_lens_q (use PackedCollator)")
    if query.shape[0] != 1:
        raise ValueError(f"attention '{ATTN_IMPLEMENTATION}' expects one packed row, got batch {query.shape[0]}")
    if kv_index is None:  # keys are the queries' own tokens
        cu_seq_lens_k, max_length_k = cu_seq_lens_q, max_length_q
    if sliding_window is not None and max_length_k > sliding_window:  # Gemma 3's local layers: the window would cut
        raise ValueError(f"attention '{ATTN_IMPLEMENTATION}' is causal over each whole example; an example of up to "
                         f"{max_length_k} tokens is longer than this layer's sliding window ({sliding_window}): "
                         f"lower max_length or train without the fast path")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    q = query[0].transpose(0, 1).contiguous()                                 # [T, H, D]
    k = key[0].transpose(0, 1).contiguous()                                   # [T, Hkv, D]
    v = value[0].transpose(0, 1).contiguous()
    if kv_index is not None:  # the shared prefix's keys, once per example (their gradients add up in the backward)
        k, v = k.index_select(0, kv_index), v.index_select(0, kv_index)
    if q.is_cuda and _VARLEN_ATTN is not None:
        kw = dict(_VARLEN_CAUSAL)
        if _VARLEN_SCALE:
            kw["scale"] = scale
        elif abs(scale - q.shape[-1] ** -0.5) > 1e-12:
            raise ValueError("this torch release's varlen_attn has no scale argument; the model needs one")
        if k.shape[1] != q.shape[1]:
            if _VARLEN_GQA:
                kw["enable_gqa"] = True
            else:
                rep = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        dtype = q.dtype
        if dtype not in (torch.float16, torch.bfloat16):  # float32 weights under bf16 autocast: the flash kernel
            half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
            q, k, v = q.to(half), k.to(half), v.to(half)  # takes half precision only, as sdpa would under autocast
        out = _VARLEN_ATTN(q, k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, **kw).to(dtype)
    else:
        out = dense_document_attention(q, k, v, cu_seq_lens_q, scale, cu_seq_lens_k)
    return out.unsqueeze(0), None


def register_varlen_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, varlen_attention)


def decoder_layers(model) -> list:
    return list(model.get_decoder().layers)


def _rotary(module):
    """The apply_rotary_pos_emb(q, k, cos, sin) of the module's model family, or None."""
    return getattr(sys.modules.get(type(module).__module__), "apply_rotary_pos_emb", None)


def _concatenated_linear(x: torch.Tensor, projs) -> torch.Tensor:
    """x @ [W_1; W_2; ...].T (+ the biases): one GEMM for several projections of the same input. When the
    projections were converted to float8 (torchao's Float8Linear), the fused GEMM runs in float8 with the same
    scaling recipe, one scale over the concatenated weight."""
    weight = torch.cat([p.weight for p in projs])
    bias = torch.cat([p.bias for p in projs]) if projs[0].bias is not None else None
    if not hasattr(projs[0], "linear_mm_config"):
        return F.linear(x, weight, bias)
    from torchao.float8.float8_linear import matmul_with_hp_or_float8_args

    out = matmul_with_hp_or_float8_args.apply(x, weight.t(), projs[0].linear_mm_config, projs[0].config)
    return out if bias is None else out + bias.to(out.dtype)


def fused_qkv_forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None,
                      **kwargs):
    """The attention forward of Llama / Qwen2-style models with q, k and v as one matmul over the three weights
    concatenated (the parameters stay separate, so checkpoints keep their keys), then the packed varlen attention.
    With a KV cache (generation) the model's own forward runs."""
    if past_key_values is not None:
        return type(self).forward(self, hidden_states, position_embeddings, attention_mask, past_key_values, **kwargs)
    projs = (self.q_proj, self.k_proj, self.v_proj)
    qkv = _concatenated_linear(hidden_states, projs)
    shape = (*hidden_states.shape[:-1], -1, self.head_dim)
    q, k, v = (t.view(shape).transpose(1, 2) for t in qkv.split([p.out_features for p in projs], dim=-1))
    cos, sin = position_embeddings
    q, k = _rotary(self)(q, k, cos, sin)
    out, weights = varlen_attention(self, q, k, v, attention_mask, scaling=self.scaling, **kwargs)
    return self.o_proj(out.reshape(*hidden_states.shape[:-1], -1).contiguous()), weights


def fused_gate_up_forward(self, x):
    """The gated MLP forward with the gate and up projections as one matmul over their concatenated weights."""
    gate, up = _concatenated_linear(x, (self.gate_proj, self.up_proj)).chunk(2, dim=-1)
    return self.down_proj(self.act_fn(gate) * up)


def _fusable_attention(attn) -> bool:
    projs = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    return (all(isinstance(p, torch.nn.Linear) for p in projs) and hasattr(attn, "head_dim")
            and hasattr(attn, "scaling") and not hasattr(attn, "q_norm")  # Qwen3-style q/k norms: not this forward
            and len({p.bias is None for p in projs[:3]}) == 1 and _rotary(attn) is not None)


def _fusable_mlp(mlp) -> bool:
    projs = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    return (all(isinstance(p, torch.nn.Linear) for p in projs) and hasattr(mlp, "act_fn")
            and projs[0].bias is None and projs[1].bias is None and projs[0].out_features == projs[1].out_features)


def fuse_layer_projections(model) -> dict:
    """Each decoder layer's q/k/v and gate/up projections as one matmul each (fewer, larger GEMMs; the parameters
    and the maths are unchanged) -> counts of fused attention and MLP blocks. Needs the varlen attention."""
    done = {"fused_qkv": 0, "fused_gate_up": 0}
    for layer in decoder_layers(model):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if _fusable_attention(attn):
            attn.forward = types.MethodType(fused_qkv_forward, attn)
            done["fused_qkv"] += 1
        if _fusable_mlp(mlp):
            mlp.forward = types.MethodType(fused_gate_up_forward, mlp)
            done["fused_gate_up"] += 1
    return done


def has_fused_projections(model) -> bool:
    """Whether fuse_layer_projections changed any module of `model`."""
    return any(getattr(m.forward, "__func__", None) in (fused_qkv_forward, fused_gate_up_forward)
               for m in model.modules())


def convert_layers_to_float8(model) -> int:
    """The decoder layers' linear layers compute in float8 (torchao's Float8Linear: dynamic tensor-wise scales, e4m3
    forward, e5m2 gradients; weights, gradients and optimizer state keep their dtype, the state dict its keys) ->
    how many were converted. The embeddings and the LM head stay as they are, and so does any layer whose sizes are
    not multiples of 16 (what float8 GEMMs need). Needs torchao and, for speed, float8 tensor cores (H100, H200); at
    the Qwen2.5-1.5B shape on an H200 it was slower than bf16 (docs/performance.md, eighth session)."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise ImportError("fast_path_fp8 needs torchao (requirements-gpu.txt pins it)") from e

    def sized(module, _name) -> bool:
        return isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0

    # a packed row has any number of tokens, the inner dimension of the weight-gradient GEMM: padded to 16 there
    config = Float8LinearConfig(pad_inner_dim=True)
    for layer in decoder_layers(model):
        convert_to_float8_training(layer, module_filter_fn=sized, config=config)
    return sum(hasattr(m, "linear_mm_config") for layer in decoder_layers(model) for m in layer.modules())


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "coordinate-descent")
# compile modes that are Inductor options rather than torch.compile modes: coordinate-descent tunes the block sizes
# of the generated pointwise and reduction kernels (SiLU x up, RMSNorm) and leaves the matmuls to cuBLAS
_COMPILE_OPTIONS = {"coordinate-descent": {"coordinate_descent_tuning": True}}


def prepare_fast_model(model, compile_layers: bool = False, liger: bool = False,
                       fuse_projections: bool = False, fp8: bool = False, compile_mode: str = "default") -> dict:
    """Switch `model` to the packed varlen attention; optional fused projections, float8 matmuls, Liger kernels
    and per-layer compile (`compile_mode`, one of COMPILE_MODES) -> what was done."""
    if compile_mode not in COMPILE_MODES:  # CUDA-graph modes would re-record for every new packed length
        raise ValueError(f"fast_path_compile_mode={compile_mode!r}: expected one of {COMPILE_MODES}")
    register_varlen_attention()
    model.config._attn_implementation = ATTN_IMPLEMENTATION
    done = {"attention": ATTN_IMPLEMENTATION, "varlen_kernel": _VARLEN_ATTN is not None, "liger": False,
            "compiled_layers": 0}
    if fp8:
        done["float8_linears"] = convert_layers_to_float8(model)
    if fuse_projections:
        done.update(fuse_layer_projections(model))
    if liger:
        try:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True,
                                            cross_entropy=False, fused_linear_cross_entropy=False)
            done["liger"] = True
        except Exception as e:  # liger-kernel missing or not matching this transformers release
            logger.warning("fast path: Liger kernels not applied (%s: %s)", type(e).__name__, e)
    if compile_layers:
        import torch._dynamo

        # one compiled graph serves all layers; the lengths change every step (automatic dynamic shapes after one)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        how = ({"options": _COMPILE_OPTIONS[compile_mode]} if compile_mode in _COMPILE_OPTIONS
               else {"mode": compile_mode})
        for layer in decoder_layers(model):
            layer.compile(**how)
        done["compiled_layers"] = len(decoder_layers(model))
        done["compile_mode"] = compile_mode
    logger.info("fast path: %s", done)
    return done


class _HiddenPassthrough(torch.nn.Module):
    """Stands in for the LM head during one forward: the model returns the decoder's hidden states as `logits`."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


@contextlib.contextmanager
def deferred_head(model):
    """Within the block, `model`'s output embedding (LM head) is a passthrough -> yields the real head. The head's
    weight (tied or not) stays a parameter of the model: the caller applies it in the loss."""
    head = model.get_output_embeddings()
    model.set_output_embeddings(_HiddenPassthrough())
    try:
        yield head
    finally:
        model.set_output_embeddings(head)


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_i CE(hidden_i @ weight.T, targets_i): hidden [N, d], weight [V, d], targets [N]. On CUDA one fused kernel
    (Liger's fused linear cross-entropy: chunked, the logits never stored, gradients in float32); elsewhere the
    same sum through full float32 logits."""
    if hidden.is_cuda:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        # The kernel multiplies outside autocast: float32 master weights meet bf16 hidden states here. Cast both to
        # the dtype the head's matmul would run in (the autocast dtype, else the hidden states'); the cast is
        # differentiable, so the float32 weight still gets its gradient.
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else hidden.dtype
        loss = LigerFusedLinearCrossEntropyLoss(reduction="sum", accum_dtype=torch.float32)
        return loss(weight.to(dtype), hidden.to(dtype), targets)
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_i CE(logits_i, targets_i) in float32: logits [N, V] (any dtype), targets [N]."""
    return F.cross_entropy(logits.float(), targets, reduction="sum")


@functools.cache
def compiled_cross_entropy_sum():
    """cross_entropy_sum through torch.compile (dynamic N): the float32 cast, the log-softmax and, in the backward,
    the softmax gradient and its cast back to the logits' dtype run as a few fused kernels instead of five passes
    over the [N, V] logits in float32."""
    return torch.compile(cross_entropy_sum, dynamic=True)


def answer_only_loss(model, batch: dict, num_items_in_batch=None, fused_ce: bool = False,
                     unwrapped=None, compile_loss: bool = False) -> tuple[torch.Tensor, object]:
    """Packed batch (PackedCollator) -> (sum of answer-token cross-entropy / answer tokens, model outputs).

    The LM head runs on the N answer positions only: logits [N, V] instead of [T, V]. The denominator is
    num_items_in_batch when the Trainer counted the answer tokens of the whole accumulated batch, as the stock loss.
    fused_ce: the forward stops at the hidden states of the answer positions (`unwrapped`, the model without its
    DDP/accelerate wrapper, gets a passthrough head for the call) and linear_cross_entropy_sum applies the head;
    outputs.logits then holds those hidden states [1, N, d]. compile_loss: the cross-entropy over the logits runs
    through compiled_cross_entropy_sum (no effect with fused_ce)."""
    positions = batch["answer_positions"]                                      # [N]
    targets = batch["shift_labels"][0, positions]                              # [N]
    cu, longest = batch["cu_seq_lens"], batch["max_length"]
    kwargs = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                  logits_to_keep=positions, cu_seq_lens_q=cu, cu_seq_lens_k=batch.get("cu_seq_lens_k", cu),
                  max_length_q=longest, max_length_k=batch.get("max_length_k", longest))
    if "kv_index" in batch:  # PackedCollator(share_prefix=True)
        kwargs["kv_index"] = batch["kv_index"]
    if fused_ce:
        with deferred_head(unwrapped if unwrapped is not None else model) as head:
            if getattr(head, "bias", None) is not None:
                raise ValueError("fused cross-entropy: LM heads with a bias are not supported")
            outputs = model(**kwargs)                                          # logits = hidden states [1, N, d]
        loss = linear_cross_entropy_sum(outputs.logits[0], head.weight, targets)
    else:
        outputs = model(**kwargs)
        ce = compiled_cross_entropy_sum() if compile_loss else cross_entropy_sum
        loss = ce(outputs.logits[0], targets)                                  # logits [N, V]
    return loss / (num_items_in_batch if num_items_in_batch is not None else max(targets.numel(), 1)), outputs


def packed_neftune_noise(embeds: torch.Tensor, cu_seq_lens: torch.Tensor, alpha: float) -> torch.Tensor:
    """NEFTune on a packed row: embeds [1, T, d] + uniform noise in [-a_i, a_i], a_i = alpha / sqrt(L_i * d) for the
    tokens of sequence i (length L_i, from cu_seq_lens). The Trainer's own NEFTune hook scales by the whole row,
    alpha / sqrt(T * d): on a row of 128 examples about 11x less noise per example than on unpacked rows."""
    lengths = (cu_seq_lens[1:] - cu_seq_lens[:-1]).to(embeds.device)
    scale = alpha / torch.sqrt(lengths.to(torch.float32) * embeds.shape[-1])              # [S]
    per_token = torch.repeat_interleave(scale, lengths, output_size=embeds.shape[1])      # [T]
    noise = torch.empty_like(embeds).uniform_(-1.0, 1.0)
    return embeds + noise * per_token.to(embeds.dtype)[None, :, None]


def fused_adam(optimizer) -> torch.optim.Optimizer | None:
    """The torch Adam / AdamW with fused=True in every group behind `optimizer` (accelerate wraps it), else None."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if isinstance(inner, torch.optim.Adam | torch.optim.AdamW) and all(g.get("fused") for g in inner.param_groups):
        return inner
    return None


def _clear_grad_scale(optimizer, _args, _kwargs) -> None:
    optimizer.grad_scale = None  # one step's clip factor never reaches the next step


def clip_in_optimizer_step(parameters, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Gradient clipping without its own pass over the gradients -> the total L2 norm before clipping.

    torch.nn.utils.clip_grad_norm_ computes the norm, then multiplies every gradient by min(1, max_norm / (norm +
    1e-6)): a read and a write of all gradients (2.1 ms of a 160 ms step at the Qwen2.5-1.5B shape on an H200,
    docs/performance.md). The fused Adam / AdamW kernel already divides each gradient by its `grad_scale` tensor (the
    hook torch.amp.GradScaler uses) as it reads it; setting grad_scale = max(1, (norm + 1e-6) / max_norm) applies
    the same factor there. The moments and the update are the clipped ones; the .grad tensors themselves are left
    unscaled until the step. `optimizer` is a fused torch Adam / AdamW (fused_adam)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, 2.0, foreach=True)
    if not getattr(optimizer, "_clip_hook", False):
        optimizer.register_step_post_hook(_clear_grad_scale)
        optimizer._clip_hook = True
    optimizer.grad_scale = torch.clamp((norm.float() + 1e-6) / max_norm, min=1.0)
    return norm


class FastSFTTrainer(SFTTrainer):
    """SFTTrainer on packed rows: LM head + cross-entropy on the answer positions only, no per-step host sync."""

    def __init__(self, *args, data_collator=None, fused_ce: bool = False, compile_loss: bool = False,
                 fused_clip: bool = False, **kwargs):
        super().__init__(*args, data_collator=data_collator or PackedCollator(), **kwargs)
        self.fused_ce, self.compile_loss, self.fused_clip = fused_ce, compile_loss, fused_clip
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if fused_ce and plugin is not None and plugin.zero_stage == 3:
            raise ValueError("fast_path_fused_ce does not work with DeepSpeed ZeRO-3: the LM head's weight is "
                             "partitioned outside the head's own forward; use ZeRO-2 or DDP, or fast_path_fused_ce: "
                             "false")
        if plugin is not None and plugin.zero_stage == 3 and has_fused_projections(self.model):
            raise ValueError("fast_path_fuse_projections does not work with DeepSpeed ZeRO-3: the fused matmul reads "
                             "the projections' weights outside their own forward, where ZeRO-3 gathers them; use "
                             "ZeRO-2 or DDP, or fast_path_fuse_projections: false")
        # NEFTune per example of the packed row (packed_neftune_noise) instead of the Trainer's hook, which would
        # scale the noise by the whole row's length (args keep the alpha, so the run's record shows it)
        self.packed_neftune_alpha, self._neftune_cu = self.args.neftune_noise_alpha, None
        if self.packed_neftune_alpha:
            self.neftune_noise_alpha = None  # what Trainer.train reads to attach its own hook
            embeddings = self.accelerator.unwrap_model(self.model).get_input_embeddings()
            embeddings.register_forward_hook(self._packed_neftune_hook)
        if self.args.logging_nan_inf_filter:
            # transformers tests every step's loss for NaN/Inf on the host (a device sync each step, which stalls
            # the GPU while the next batch is collated and launched); a non-finite loss still shows in the logs
            logger.info("fast path: logging_nan_inf_filter off (it syncs with the GPU every step)")
            self.args.logging_nan_inf_filter = False

    def create_accelerator_and_postprocess(self):
        # Trainer.__init__ calls this, and the DDP options are fixed here: every parameter gets a gradient each step
        # (the head runs on the answer tokens, but it runs), so DDP's search for unused ones is an extra pass over the
        # autograd graph per step; the Trainer's default turns it on whenever gradient checkpointing is off, as on
        # the fast path. Setting the flag after super().__init__ is too late (a two-H200 run still searched).
        if self.args.ddp_find_unused_parameters is None:
            self.args.ddp_find_unused_parameters = False
        super().create_accelerator_and_postprocess()

    def _clip_grad_norm(self, model):
        """With fused_clip, the clip factor goes into the fused AdamW step (clip_in_optimizer_step). Elsewhere the
        Trainer's own clipping: another optimizer, fp16's loss scaler (it owns grad_scale), DeepSpeed or FSDP."""
        optimizer = fused_adam(self.optimizer) if self.fused_clip else None
        plain = self.accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_GPU)
        if optimizer is None or not plain or self.accelerator.scaler is not None:
            if self.fused_clip and not getattr(self, "_fused_clip_warned", False):
                logger.warning("fast_path_fused_clip: the Trainer's own clipping runs (needs a fused torch AdamW, "
                               "no fp16 loss scaler, one GPU or DDP)")
                self._fused_clip_warned = True
            return super()._clip_grad_norm(model)
        return clip_in_optimizer_step(model.parameters(), optimizer, self.args.max_grad_norm)

    def _packed_neftune_hook(self, module, _inputs, output):
        if not module.training or self._neftune_cu is None:
            return output
        return packed_neftune_noise(output, self._neftune_cu, self.packed_neftune_alpha)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        fused = self.fused_ce and model.training
        self._neftune_cu = inputs["cu_seq_lens"] if self.packed_neftune_alpha else None
        loss, outputs = answer_only_loss(model, inputs, num_items_in_batch, fused_ce=fused,
                                         unwrapped=self.accelerator.unwrap_model(model) if fused else None,
                                         compile_loss=self.compile_loss and model.training)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the token count was global
        if model.training and hasattr(self, "_total_train_tokens"):
            self._total_train_tokens += inputs["input_ids"].numel()  # a shape: no sync
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
