"""Nine RQ-VAE tokenizers at the paper's scale: 1.6M tracks x nine modalities at the paper's dims (random, clustered,
generated on the GPU) -> seconds for 150 epochs at batch 512, fast path vs a plain per-modality DataLoader loop,
plus the k-means baseline, printed as a markdown table.

    python bench/rqvae_scale.py --tracks 1600000 --epochs_measured 2 --plain_steps 200 --out runs/bench/rqvae.json

Model: the repo's RQ-VAE (tokenizer_ext/rqvae.py: MLP 512-256-128-32 with BatchNorm, codebooks 32/64/128, beta 0.25,
AdamW lr 1e-4, k-means codebook init on the first batch). Both paths build every modality's model from RQVAE.
- plain loop: one modality after another, a shuffling torch DataLoader over a host tensor (a --plain_rows sample:
  the time of a step does not depend on the dataset's size), copy to the GPU, step, loss.item() for the log.
- fast path: all data resident on the GPU (text modalities in bf16: 6 x 1.6M x 4096 floats would not fit in
  float32), the modalities of one input width trained together as one grouped model (GroupedRQVAE: the same maths
  with batched matmuls; the small modalities zero-padded to one width, the padding masked out of the loss), the whole
  step of each group (gather batch, forward, backward, fused AdamW) captured as one CUDA graph and replayed on its
  own CUDA stream; no host sync until the end of an epoch. Options: --matmul_dtype bfloat16 (the products on bf16
  operands, float32 parameters/BatchNorm/losses), --steps_per_graph K (K optimizer steps per graph replay);
  --variants times several such settings in the same run, --profile_steps prints each group's kernels.
The 150-epoch times are extrapolations from the measured steps/epochs (stated in the table). The k-means baseline
(3MToken Sec. 3: 1024 clusters per modality) runs Lloyd iterations on the GPU over all 1.6M rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root
from data_gen.registry import MODALITIES  # noqa: E402
from tokenizer_ext.rqvae import RQVAE  # noqa: E402
from tokenizer_ext.rqvae_grouped import GroupTrainer  # noqa: E402 (the fast path under test)


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
        model.quantizer.init_codebooks(model.encoder(init_rows.float()), kmeans_iters, torch.Generator().manual_seed(seed))
    return model


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_trainers(groups_data, args, device, matmul_dtype, steps_per_graph) -> list[GroupTrainer]:
    trainers = []
    for names, dims, data in groups_data:
        models = [build_model(d, args.seed, device, data[i, :args.batch, :d], args.init_kmeans_iters)
                  for i, d in enumerate(dims)]
        trainers.append(GroupTrainer(names, data, models, args.batch, args.lr, args.weight_decay,
                                     use_graph=device.type == "cuda" and not args.no_graph, device=device,
                                     compile_model=args.compile, matmul_dtype=matmul_dtype,
                                     steps_per_graph=steps_per_graph))
    return trainers


def time_steps(trainers: list[GroupTrainer], steps: int, device) -> float:
    """All groups concurrently (each on its stream) for `steps` steps -> seconds per step."""
    for tr in trainers:  # one untimed replay each: lazy allocations, stream set-up
        tr.epoch(tr.k)
    sync(device)
    t = time.perf_counter()
    done = max(tr.epoch(steps) for tr in trainers)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", type=int, default=1_600_000, help="rows per modality (3MToken: 1.6M tracks)")
    ap.add_argument("--batch", type=int, default=512, help="batch size (3MToken App. D)")
    ap.add_argument("--epochs", type=int, default=150, help="epochs the times are extrapolated to (App. D)")
    ap.add_argument("--epochs_measured", type=float, default=2, help="fast path: epochs actually run and timed")
    ap.add_argument("--plain_steps", type=int, default=200, help="plain loop: steps timed per modality")
    ap.add_argument("--plain_rows", type=int, default=65536, help="plain loop: host rows per modality")
    ap.add_argument("--warmup", type=int, default=20, help="plain loop: steps before the clock starts")
    ap.add_argument("--clusters", type=int, default=256, help="clusters the random data is drawn around")
    ap.add_argument("--kmeans_k", type=int, default=1024, help="k-means baseline clusters (3MToken Sec. 3)")
    ap.add_argument("--kmeans_iters", type=int, default=20, help="k-means baseline Lloyd iterations")
    ap.add_argument("--init_kmeans_iters", type=int, default=20, help="codebook init k-means iterations (App. D)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight_decay", type=float, default=0.01)
    ap.add_argument("--small_width", type=int, default=256, help="padded width of the non-text modalities' group")
    ap.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                    help="TF32 matmuls in both paths (torch.set_float32_matmul_precision('high'))")
    ap.add_argument("--no_graph", action="store_true", help="fast path without CUDA graphs (CPU smoke runs)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="fast path: torch.compile the grouped model (inside the CUDA graph)")
    ap.add_argument("--matmul_dtype", default="float32", choices=["float32", "bfloat16"],
                    help="fast path: operand dtype of the matmuls (parameters, BatchNorm and losses stay float32)")
    ap.add_argument("--steps_per_graph", type=int, default=1, help="fast path: optimizer steps per CUDA graph")
    ap.add_argument("--variants", default="", help="also time fast-path variants, e.g. 'float32:1,bfloat16:1,"
                    "bfloat16:8' (matmul dtype:steps per graph), --variant_steps steps each")
    ap.add_argument("--variant_steps", type=int, default=1000)
    ap.add_argument("--profile_steps", type=int, default=0, help="profile this many steps of each group (kernels)")
    ap.add_argument("--skip_plain", action="store_true", help="no plain loop and k-means baseline (variants only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high" if args.tf32 else "highest")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    gen = torch.Generator(device=device).manual_seed(args.seed)
    mods = paper_modalities()
    text = [(n, d) for n, d in mods if d == max(d for _, d in mods)]
    small = [(n, d) for n, d in mods if (n, d) not in text]
    result = {"device": name, "torch": torch.__version__, "tracks": args.tracks, "modalities": dict(mods), **vars(args)}

    t = time.perf_counter()
    groups_data = []
    for members, width, dtype in ((text, text[0][1], torch.bfloat16), (small, args.small_width, torch.float32)):
        data = torch.zeros(len(members), args.tracks, width, dtype=dtype, device=device)
        for i, (_, d) in enumerate(members):
            data[i, :, :d] = clustered(args.tracks, d, args.clusters, dtype, gen, device)
        groups_data.append(([n for n, _ in members], [d for _, d in members], data))
    sync(device)
    result["generate_s"] = time.perf_counter() - t
    print(f"data: {args.tracks:,} tracks x {len(mods)} modalities on {name} in {result['generate_s']:.1f} s; "
          f"{sum(d.numel() * d.element_size() for *_, d in groups_data) / 2**30:.1f} GiB resident", flush=True)

    # k-means baseline: 1024 clusters per modality over all rows
    plain = []
    result["kmeans_s"] = float("nan")
    t = time.perf_counter()
    for names, dims, data in ([] if args.skip_plain else groups_data):
        for i, d in enumerate(dims):
            kmeans_gpu(data[i, :, :d], args.kmeans_k, args.kmeans_iters, gen)
    sync(device)
    if not args.skip_plain:
        result["kmeans_s"] = time.perf_counter() - t
        print(f"k-means baseline ({args.kmeans_k} clusters, {args.kmeans_iters} Lloyd iterations, all 9 modalities): "
              f"{result['kmeans_s']:.1f} s", flush=True)

    # plain per-modality DataLoader loop
    for names, dims, data in ([] if args.skip_plain else groups_data):
        for i, (n, d) in enumerate(zip(names, dims)):
            plain.append(plain_modality(n, data[i, :, :d], args.batch, args.lr, args.weight_decay, args.plain_steps,
                                        args.warmup, args.plain_rows, args.init_kmeans_iters, args.seed, device))
            print(f"plain {n}: {1e3 * plain[-1]['s_per_step']:.2f} ms/step", flush=True)

    # fast-path variants: same data, a short timed run each (ms per step, all groups concurrently)
    result["variants"] = []
    for spec in filter(None, args.variants.split(",")):
        dtype_name, k = spec.split(":")
        t = time.perf_counter()
        trainers = build_trainers(groups_data, args, device, getattr(torch, dtype_name), int(k))
        setup = time.perf_counter() - t
        ms = 1e3 * time_steps(trainers, args.variant_steps, device)
        result["variants"].append({"matmul_dtype": dtype_name, "steps_per_graph": int(k), "ms_per_step": ms,
                                   "setup_s": setup, "graphs": [tr.graph is not None for tr in trainers]})
        print(f"variant {spec}: {ms:.3f} ms per step (all nine models), setup {setup:.1f} s, graphs "
              f"{result['variants'][-1]['graphs']}", flush=True)
        del trainers
        torch.cuda.empty_cache() if device.type == "cuda" else None
    steps_per_epoch = args.tracks // args.batch
    result["plain"] = plain
    result["plain_150_s"] = sum(p["s_per_step"] for p in plain) * steps_per_epoch * args.epochs

    # fast path: data resident, grouped models, one CUDA graph per group step, groups on their own streams
    t = time.perf_counter()
    trainers = build_trainers(groups_data, args, device, getattr(torch, args.matmul_dtype), args.steps_per_graph)
    sync(device)
    result["fast_setup_s"] = time.perf_counter() - t
    whole, frac = int(args.epochs_measured), args.epochs_measured - int(args.epochs_measured)
    t = time.perf_counter()
    steps = 0
    for _ in range(whole):
        steps += max(tr.epoch() for tr in trainers)
    if frac:
        steps += max(tr.epoch(int(frac * steps_per_epoch)) for tr in trainers)
    sync(device)
    fast_s = time.perf_counter() - t
    result["fast_measured_s"], result["fast_measured_steps"] = fast_s, steps
    result["fast_150_s"] = fast_s / steps * steps_per_epoch * args.epochs + result["fast_setup_s"]
    result["fast_graphs"] = [tr.graph is not None for tr in trainers]
    result["fast_compiled"] = [tr.compiled for tr in trainers]
    result["fast_mean_loss"] = {n: float(v) / max(steps, 1) for tr in trainers
                                for n, v in zip(tr.names, tr.loss_sum[:, 0].cpu())}
    result["speedup"] = result["plain_150_s"] / result["fast_150_s"] if plain else float("nan")
    if args.profile_steps and device.type == "cuda":
        result["profile"] = profile_groups(trainers, args.profile_steps, top=20)

    print(f"\n### Nine RQ-VAEs, {args.tracks:,} tracks, batch {args.batch}, {args.epochs} epochs ({name})\n")
    print("| path | measured | seconds for 150 epochs (extrapolated) | minutes |")
    print("|---|---|---|---|")
    plain_ms = ", ".join(f"{p['modality']} {1e3 * p['s_per_step']:.1f}" for p in plain)
    print(f"| plain per-modality DataLoader loop | {args.plain_steps} steps per modality (ms/step: {plain_ms}) | "
          f"{result['plain_150_s']:,.0f} | {result['plain_150_s'] / 60:.1f} |")
    extras = (", compiled" if all(result["fast_compiled"]) else "") + (", CUDA graphs" if all(result["fast_graphs"]) else "")
    extras += f", {args.matmul_dtype} matmuls" + (f", {args.steps_per_graph} steps per graph" if args.steps_per_graph > 1 else "")
    print(f"| fast path (GPU-resident, grouped{extras}) | {args.epochs_measured:g} epochs = {steps:,} steps, "
          f"{fast_s:.1f} s (+ {result['fast_setup_s']:.1f} s setup) | {result['fast_150_s']:,.0f} | "
          f"{result['fast_150_s'] / 60:.1f} |")
    print(f"| k-means baseline ({args.kmeans_k} clusters, {args.kmeans_iters} iterations, measured) | all rows | "
          f"{result['kmeans_s']:.1f} | {result['kmeans_s'] / 60:.2f} |")
    print(f"\nfast path / plain loop speed-up: {result['speedup']:.1f}x")
    if result["variants"]:
        print(f"\nFast-path variants ({args.variant_steps} steps each, all nine models concurrently):\n")
        print("| matmul operands | steps per CUDA graph | ms per step | 150 epochs, minutes (+ setup) |")
        print("|---|---|---|---|")
        for v in result["variants"]:
            print(f"| {v['matmul_dtype']} | {v['steps_per_graph']} | {v['ms_per_step']:.3f} | "
                  f"{v['ms_per_step'] * steps_per_epoch * args.epochs / 6e4:.1f} (+ {v['setup_s'] / 60:.1f}) |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
