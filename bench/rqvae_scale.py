"""Nine RQ-VAE tokenizers at the paper's scale: 1.6M tracks x nine modalities at the paper's dims (random, clustered,
generated on the GPU) -> seconds for 150 epochs at batch 512, fast path vs a plain per-modality DataLoader loop,
plus the k-means baseline, printed as a markdown table.

    python bench/rqvae_scale.py --tracks 1600000 --epochs_measured 2 --plain_steps 200 --out runs/bench/rqvae.json

Model: the repo's RQ-VAE (tokenizer_ext/quantizers/rqvae_model.py: MLP 512-256-128-32 with BatchNorm, codebooks
32/64/128, beta 0.25, AdamW lr 1e-4, k-means codebook init on the first batch). Both paths build every modality's
model from RQVAE.
- plain loop: one modality after another, a shuffling torch DataLoader over a host tensor (a --plain_rows sample:
  the time of a step does not depend on the dataset's size), copy to the GPU, step, loss.item() for the log.
- fast path: all data resident on the GPU (text modalities in bf16: 6 x 1.6M x 4096 floats would not fit in
  float32), the modalities of one input width trained together as one grouped model (GroupedRQVAE: the same maths
  with batched matmuls; the small modalities zero-padded to one width, the padding masked out of the loss), the whole
  step of each group (gather batch, forward, backward, fused AdamW) captured as one CUDA graph and replayed on its
  own CUDA stream, the groups' replays queued in turn (--queue sequential: one group's epoch after the other's, the
  order before 2026-11-29's fifth session); no host sync until the end of an epoch. Options: --matmul_dtype
  bfloat16 (the products on bf16 operands, float32 parameters/BatchNorm/losses), --steps_per_graph K (K optimizer
  steps per graph replay); --variants times several such settings in the same run, --profile_steps prints each
  group's kernels.
The 150-epoch times are extrapolations from the measured steps/epochs (stated in the table). The k-means baseline
(3MToken Sec. 3: 1024 clusters per modality) runs Lloyd iterations on the GPU over all 1.6M rows.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from common.config import parse_config
from common.registry import MODALITIES
from eval.common import write_json
from tokenizer_ext.quantizers.rqvae_grouped import GroupTrainer, run_epoch  # the fast path under test
from tokenizer_ext.quantizers.rqvae_model import RQVAE


def paper_modalities() -> list[tuple[str, int]]:
    return [(m.name, m.paper_dim) for m in MODALITIES]


def clustered(n: int, d: int, clusters: int, dtype: torch.dtype, gen: torch.Generator, device) -> torch.Tensor:
    """[n, d] rows around `clusters` random centres (std 1 centres, 0.3 noise), generated in chunks on `device`."""
    centres = torch.randn(clusters, d, generator=gen, device=device)
    out = torch.empty(n, d, dtype=dtype, device=device)
    for s in range(0, n, 262144):
        m = min(262144, n - s)
        a = torch.randint(clusters, (m,), generator=gen, device=device)
        out[s:s + m] = (centres[a] + 0.3 * torch.randn(m, d, generator=gen, device=device)).to(dtype)
    return out


def build_model(d_in: int, seed: int, device, init_rows: torch.Tensor, kmeans_iters: int) -> RQVAE:
    """As RQVAEQuantizer._build + the App. D init: seeded weights, codebooks by k-means on the first batch."""
    torch.manual_seed(seed)
    model = RQVAE(d_in).to(device)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        model.quantizer.init_codebooks(model.encoder(init_rows.float()), kmeans_iters, generator)
    return model


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def split_groups(groups_data, max_models: int) -> list:
    """(names, dims, data [G, n, d]) groups -> runs of at most max_models models (views of the same data; 0: as is):
    smaller groups, each on its own CUDA stream (measured slower on an H200; the recipe keeps one group per width)."""
    if max_models <= 0:
        return groups_data
    return [(names[i:i + max_models], dims[i:i + max_models], data[i:i + max_models])
            for names, dims, data in groups_data for i in range(0, len(names), max_models)]


def build_trainers(groups_data, cfg, device, matmul_dtype, steps_per_graph, max_models=0) -> list[GroupTrainer]:
    trainers = []
    for names, dims, data in split_groups(groups_data, max_models):
        models = [build_model(d, cfg.seed, device, data[i, :cfg.batch, :d], cfg.init_kmeans_iters)
                  for i, d in enumerate(dims)]
        trainers.append(GroupTrainer(names, data, models, cfg.batch, cfg.lr, cfg.weight_decay,
                                     use_graph=device.type == "cuda" and not cfg.no_graph, device=device,
                                     compile_model=cfg.compile, matmul_dtype=matmul_dtype,
                                     steps_per_graph=steps_per_graph))
    return trainers


def queued_epoch(trainers: list[GroupTrainer], steps: int | None, queue: str) -> int:
    """One epoch (or `steps` steps) of every group -> steps. queue "interleaved": the groups' replays in turn (the
    training default, run_epoch); "sequential": each group's whole epoch queued after the other's (the old order)."""
    if queue == "interleaved":
        return run_epoch(trainers, steps)
    return max(tr.epoch(steps) for tr in trainers)


def time_steps(trainers: list[GroupTrainer], steps: int, device, queue: str = "interleaved") -> float:
    """All groups concurrently (each on its stream) for `steps` steps -> seconds per step."""
    for tr in trainers:  # one untimed replay each: lazy allocations, stream set-up
        tr.epoch(tr.k)
    sync(device)
    t = time.perf_counter()
    done = queued_epoch(trainers, steps, queue)
    sync(device)
    return (time.perf_counter() - t) / done


def profile_groups(trainers: list[GroupTrainer], steps: int, top: int) -> dict:
    """torch.profiler over `steps` steps of each group alone: GPU time per step, kernels per step, top kernels."""
    out = {}
    for tr in trainers:
        sync(tr.device)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            done = tr.epoch(steps)
            sync(tr.device)
        events = prof.key_averages()
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.self_device_time_total for e in kernels) / done
        launches = sum(e.count for e in kernels) / done
        table = events.table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=60)
        out["+".join(tr.names)] = {"gpu_us_per_step": busy, "kernels_per_step": launches, "table": table}
        print(f"profile {'+'.join(tr.names)}: {busy:.0f} us of kernels and {launches:.0f} kernels per step\n{table}",
              flush=True)
    return out


def profile_ops(trainers: list[GroupTrainer], steps: int, top: int) -> dict:
    """torch.profiler (CPU + CUDA, input shapes) over `steps` eager steps of each group: which operator and tensor
    shape each kernel belongs to, which a CUDA graph replay does not show. Run it last: the eager steps give the
    parameters new gradient tensors, so the groups' captured graphs are not replayed afterwards."""
    cuda = trainers[0].device.type == "cuda"
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    out = {}
    for tr in trainers:
        tr.graph = None  # eager steps from here on
        tr.epoch(2)      # warm-up outside the profile
        sync(tr.device)
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
            tr.epoch(steps)
            sync(tr.device)
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=top,
            max_name_column_width=40, max_shapes_column_width=70)
        out["+".join(tr.names)] = {"table": table, "steps": steps}
        print(f"operators of {'+'.join(tr.names)} over {steps} eager steps (self {'device' if cuda else 'CPU'} time, "
              f"input shapes)\n{table}", flush=True)
    return out


def plain_modality(name, x_gpu, batch, lr, weight_decay, steps, warmup, rows, kmeans_iters, seed, device) -> dict:
    """The plain loop for one modality: DataLoader over host rows -> seconds per step (after warm-up steps)."""
    from torch.utils.data import DataLoader, TensorDataset

    host = x_gpu[:rows].float().cpu()
    loader = DataLoader(TensorDataset(host), batch_size=batch, shuffle=True, drop_last=True)
    model = build_model(host.shape[1], seed, device, host[:batch].to(device), kmeans_iters).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")
    done, t0, losses = 0, None, []
    while done < steps + warmup:
        for (xb,) in loader:
            if done == warmup:
                sync(device)
                t0 = time.perf_counter()
            xb = xb.to(device)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            out.loss.backward()
            opt.step()
            losses.append(out.loss.item())  # the per-step log of a plain loop: one host sync per step
            done += 1
            if done == steps + warmup:
                break
    sync(device)
    return {"modality": name, "s_per_step": (time.perf_counter() - t0) / steps, "loss_first": losses[0],
            "loss_last": losses[-1]}


def kmeans_gpu(x: torch.Tensor, k: int, iters: int, gen: torch.Generator, chunk: int = 131072) -> torch.Tensor:
    """Lloyd k-means over all rows of x [n, d] (any float dtype, fp32 maths) -> int64 [n] assignments."""
    n = x.shape[0]
    c = x[torch.randperm(n, generator=gen, device=x.device)[:k]].float()  # [k, d]
    assign = torch.empty(n, dtype=torch.long, device=x.device)
    for _ in range(iters + 1):
        sums, counts = torch.zeros_like(c), torch.zeros(k, device=x.device)
        c2 = c.pow(2).sum(1)
        for s in range(0, n, chunk):
            xc = x[s:s + chunk].float()
            a = (c2 - 2 * xc @ c.T).argmin(1)  # ||x||^2 is the same for every centre
            assign[s:s + chunk] = a
            sums.index_add_(0, a, xc)
            counts += torch.bincount(a, minlength=k)
        c = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), c)
    return assign


@dataclass
class RQVAEScaleConfig:
    """Nine RQ-VAE tokenizers at the paper's scale: the fast path vs a plain per-modality loop, and k-means."""

    tracks: int = field(default=1_600_000, metadata={"help": "rows per modality (3MToken: 1.6M tracks)"})
    batch: int = field(default=512, metadata={"help": "batch size (3MToken App. D)"})
    epochs: int = field(default=150, metadata={"help": "epochs the times are extrapolated to (App. D)"})
    epochs_measured: float = field(default=2, metadata={"help": "fast path: epochs actually run and timed"})
    plain_steps: int = field(default=200, metadata={"help": "plain loop: steps timed per modality"})
    plain_rows: int = field(default=65536, metadata={"help": "plain loop: host rows per modality"})
    warmup: int = field(default=20, metadata={"help": "plain loop: steps before the clock starts"})
    clusters: int = field(default=256, metadata={"help": "clusters the random data is drawn around"})
    kmeans_k: int = field(default=1024, metadata={"help": "k-means baseline clusters (3MToken Sec. 3)"})
    kmeans_iters: int = field(default=20, metadata={"help": "k-means baseline Lloyd iterations"})
    init_kmeans_iters: int = field(default=20, metadata={"help": "codebook init k-means iterations (App. D)"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (App. D)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    small_width: int = field(default=256, metadata={"help": "padded width of the non-text modalities' group"})
    tf32: bool = field(default=True, metadata={
        "help": "TF32 matmuls in both paths (torch.set_float32_matmul_precision('high'))"})
    no_graph: bool = field(default=False, metadata={"help": "fast path without CUDA graphs (CPU smoke runs)"})
    compile: bool = field(default=True, metadata={
        "help": "fast path: torch.compile the grouped model (inside the CUDA graph)"})
    matmul_dtype: str = field(default="bfloat16", metadata={
        "help": "fast path: operand dtype of the matmuls (parameters, BatchNorm and losses stay float32); bfloat16 "
                "is the recipe's grouped default on CUDA",
        "choices": ["float32", "bfloat16"]})
    steps_per_graph: int = field(default=1, metadata={"help": "fast path: optimizer steps per CUDA graph"})
    max_models: int = field(default=0, metadata={
        "help": "fast path: at most this many models per group, each group on its own stream (0: one group per "
                "input width, as the recipe)"})
    variants: str = field(default="", metadata={
        "help": "also time fast-path variants, e.g. 'float32:1,bfloat16:1,bfloat16:1:0:sequential' (matmul "
                "dtype:steps per graph[:max models per group (0: all)[:queue]]), --variant_steps steps each"})
    queue: str = field(default="interleaved", metadata={
        "help": "how the groups' steps are queued: in turn (interleaved, the training default) or one group's "
                "epoch after the other's (sequential: the groups then barely overlap)",
        "choices": ["interleaved", "sequential"]})
    variant_steps: int = field(default=1000, metadata={"help": "timed steps per fast-path variant"})
    profile_steps: int = field(default=0, metadata={"help": "profile this many steps of each group (kernels)"})
    profile_ops: int = field(default=0, metadata={
        "help": "after everything else, profile this many eager steps of each group by operator and input shape "
                "(where each kernel comes from)"})
    skip_plain: bool = field(default=False, metadata={
        "help": "no plain loop and k-means baseline (variants only)"})
    seed: int = field(default=0, metadata={"help": "seed of the data, the weights and the codebook init"})
    out: str | None = field(default=None, metadata={"help": "JSON with every figure of the table"})


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(RQVAEScaleConfig, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    mods = paper_modalities()
    text = [(n, d) for n, d in mods if d == max(d for _, d in mods)]
    small = [(n, d) for n, d in mods if (n, d) not in text]
    result = {"device": name, "torch": torch.__version__, "tracks": cfg.tracks, "modalities": dict(mods),
              **dataclasses.asdict(cfg)}

    t = time.perf_counter()
    groups_data = []
    for members, width, dtype in ((text, text[0][1], torch.bfloat16), (small, cfg.small_width, torch.float32)):
        data = torch.zeros(len(members), cfg.tracks, width, dtype=dtype, device=device)
        for i, (_, d) in enumerate(members):
            data[i, :, :d] = clustered(cfg.tracks, d, cfg.clusters, dtype, gen, device)
        groups_data.append(([n for n, _ in members], [d for _, d in members], data))
    sync(device)
    result["generate_s"] = time.perf_counter() - t
    print(f"data: {cfg.tracks:,} tracks x {len(mods)} modalities on {name} in {result['generate_s']:.1f} s; "
          f"{sum(d.numel() * d.element_size() for *_, d in groups_data) / 2**30:.1f} GiB resident", flush=True)

    # k-means baseline: 1024 clusters per modality over all rows
    plain = []
    result["kmeans_s"] = float("nan")
    t = time.perf_counter()
    for _names, dims, data in ([] if cfg.skip_plain else groups_data):
        for i, d in enumerate(dims):
            kmeans_gpu(data[i, :, :d], cfg.kmeans_k, cfg.kmeans_iters, gen)
    sync(device)
    if not cfg.skip_plain:
        result["kmeans_s"] = time.perf_counter() - t
        print(f"k-means baseline ({cfg.kmeans_k} clusters, {cfg.kmeans_iters} Lloyd iterations, all 9 modalities): "
              f"{result['kmeans_s']:.1f} s", flush=True)

    # plain per-modality DataLoader loop
    for names, dims, data in ([] if cfg.skip_plain else groups_data):
        for i, (n, d) in enumerate(zip(names, dims)):
            plain.append(plain_modality(n, data[i, :, :d], cfg.batch, cfg.lr, cfg.weight_decay, cfg.plain_steps,
                                        cfg.warmup, cfg.plain_rows, cfg.init_kmeans_iters, cfg.seed, device))
            print(f"plain {n}: {1e3 * plain[-1]['s_per_step']:.2f} ms/step", flush=True)

    # fast-path variants: same data, a short timed run each (ms per step, all groups concurrently)
    result["variants"] = []
    for spec in filter(None, cfg.variants.split(",")):
        dtype_name, k, *rest = spec.split(":")
        max_models = int(rest[0]) if rest else 0
        queue = rest[1] if len(rest) > 1 else cfg.queue
        t = time.perf_counter()
        trainers = build_trainers(groups_data, cfg, device, getattr(torch, dtype_name), int(k), max_models)
        setup = time.perf_counter() - t
        ms = 1e3 * time_steps(trainers, cfg.variant_steps, device, queue)
        result["variants"].append({"matmul_dtype": dtype_name, "steps_per_graph": int(k), "max_models": max_models,
                                   "queue": queue,
                                   "groups": len(trainers), "ms_per_step": ms,
                                   "setup_s": setup, "graphs": [tr.graph is not None for tr in trainers]})
        print(f"variant {spec}: {ms:.3f} ms per step (all nine models), setup {setup:.1f} s, graphs "
              f"{result['variants'][-1]['graphs']}", flush=True)
        del trainers
        torch.cuda.empty_cache() if device.type == "cuda" else None
    steps_per_epoch = cfg.tracks // cfg.batch
    result["plain"] = plain
    result["plain_150_s"] = sum(p["s_per_step"] for p in plain) * steps_per_epoch * cfg.epochs

    # fast path: data resident, grouped models, one CUDA graph per group step, groups on their own streams
    t = time.perf_counter()
    trainers = build_trainers(groups_data, cfg, device, getattr(torch, cfg.matmul_dtype), cfg.steps_per_graph,
                              cfg.max_models)
    sync(device)
    result["fast_setup_s"] = time.perf_counter() - t
    whole, frac = int(cfg.epochs_measured), cfg.epochs_measured - int(cfg.epochs_measured)
    t = time.perf_counter()
    steps = 0
    for _ in range(whole):
        steps += queued_epoch(trainers, None, cfg.queue)
    if frac:
        steps += queued_epoch(trainers, int(frac * steps_per_epoch), cfg.queue)
    sync(device)
    fast_s = time.perf_counter() - t
    result["fast_measured_s"], result["fast_measured_steps"] = fast_s, steps
    result["fast_150_s"] = fast_s / steps * steps_per_epoch * cfg.epochs + result["fast_setup_s"]
    result["fast_graphs"] = [tr.graph is not None for tr in trainers]
    result["fast_compiled"] = [tr.compiled for tr in trainers]
    result["fast_mean_loss"] = {n: float(v) / max(steps, 1) for tr in trainers
                                for n, v in zip(tr.names, tr.loss_sum[:, 0].cpu())}
    result["speedup"] = result["plain_150_s"] / result["fast_150_s"] if plain else float("nan")
    if cfg.profile_steps and device.type == "cuda":
        result["profile"] = profile_groups(trainers, cfg.profile_steps, top=20)
    if cfg.profile_ops:
        result["profile_ops"] = profile_ops(trainers, cfg.profile_ops, top=25)

    print(f"\n### Nine RQ-VAEs, {cfg.tracks:,} tracks, batch {cfg.batch}, {cfg.epochs} epochs ({name})\n")
    print("| path | measured | seconds for 150 epochs (extrapolated) | minutes |")
    print("|---|---|---|---|")
    plain_ms = ", ".join(f"{p['modality']} {1e3 * p['s_per_step']:.1f}" for p in plain)
    print(f"| plain per-modality DataLoader loop | {cfg.plain_steps} steps per modality (ms/step: {plain_ms}) | "
          f"{result['plain_150_s']:,.0f} | {result['plain_150_s'] / 60:.1f} |")
    extras = (", compiled" if all(result["fast_compiled"]) else "") + \
        (", CUDA graphs" if all(result["fast_graphs"]) else "")
    extras += f", {cfg.matmul_dtype} matmuls" + \
        (f", {cfg.steps_per_graph} steps per graph" if cfg.steps_per_graph > 1 else "") + \
        (f", {len(trainers)} groups of at most {cfg.max_models} models" if cfg.max_models > 0 else "") + \
        f", steps queued {cfg.queue}"
    print(f"| fast path (GPU-resident, grouped{extras}) | {cfg.epochs_measured:g} epochs = {steps:,} steps, "
          f"{fast_s:.1f} s (+ {result['fast_setup_s']:.1f} s setup) | {result['fast_150_s']:,.0f} | "
          f"{result['fast_150_s'] / 60:.1f} |")
    print(f"| k-means baseline ({cfg.kmeans_k} clusters, {cfg.kmeans_iters} iterations, measured) | all rows | "
          f"{result['kmeans_s']:.1f} | {result['kmeans_s'] / 60:.2f} |")
    print(f"\nfast path / plain loop speed-up: {result['speedup']:.1f}x")
    if result["variants"]:
        print(f"\nFast-path variants ({cfg.variant_steps} steps each, all nine models concurrently):\n")
        print("| matmul operands | steps per CUDA graph | groups (streams) | queue | ms per step | "
              "150 epochs, minutes (+ setup) |")
        print("|---|---|---|---|---|---|")
        for v in result["variants"]:
            print(f"| {v['matmul_dtype']} | {v['steps_per_graph']} | {v['groups']} | {v['queue']} | "
                  f"{v['ms_per_step']:.3f} | "
                  f"{v['ms_per_step'] * steps_per_epoch * cfg.epochs / 6e4:.1f} (+ {v['setup_s'] / 60:.1f}) |")
    if cfg.out:
        write_json(cfg.out, result)


if __name__ == "__main__":
    main()
