"""The GPU benchmarks of `tools/gpu_check.sh`: one table of ratios, each measured side by side on one machine.

    python benchmarks/gpu.py [--out benchmarks/results/gpu.md] [--tests "summary line of tests/test_cuda.py"]
    python benchmarks/gpu.py --device cpu --quick      # the same code on the CPU, small: a check of the script

policy  fastaug's batched image policy on the device (uint8 and float32) vs the same plan applied per image in PIL on
        the CPU, as the PBA authors do: bs 128 at 32 and 224 px, a PBA-like policy of all 15 operations (target on a
        GPU: ≥ 10× PIL). `benchmarks/image_ops.py` holds both sides.
isda    one step (estimator update + augmented loss + backward from the features) of fastaug's ISDA and of the authors'
        layout, as a ratio to plain cross-entropy, at (bs 128, C 100, A 640, full Σ) and (bs 64, C 1000, A 2048,
        diagonal Σ), with the extra peak memory of each. `benchmarks/isda.py` holds the implementations.
steps   each callback's training step as a ratio to plain training: a torchvision ResNet-18 (11.7 M parameters),
        random 3×224×224 uint8 images, bs 128, mixed precision (`to_fp16`). The step runs from `before_batch` to
        `after_batch`; the iteration also holds loading the batch and the loader's transforms (where `ImagePolicy`
        works). Medians of `--rounds` rounds of `--steps` steps, the configurations taking turns.
"""
import argparse, platform, sys, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np, torch
from fastai.basics import *
from fastai.callback.all import *
from fastaug.all import *
from _common import sync, time_steps
import image_ops as image_bench
import isda as isda_bench

def median_ms(fn, reps:int)->float: return image_bench.median_ms(lambda: (fn(), sync()), reps)

def policy_rows(device, sizes, bs:int, reps:int)->list:
    "(part, what, ms, ratio, meaning) of the batched policy on `device` and on the CPU against per-image PIL"
    policy,rows = image_bench.pba_like_policy(),[]
    for size in sizes:
        x8 = image_bench.photo_batch(size, bs)
        arrays = [np.ascontiguousarray(a) for a in x8.permute(0, 2, 3, 1).numpy()]
        torch.manual_seed(0)
        plan = policy.plan(bs)
        pil = median_ms(lambda: image_bench.pil_policy(arrays, policy, plan), reps)
        rows.append((f'image policy {size} px', 'PIL, per image (CPU)', pil, 1., '× PIL'))
        x8d,pland = x8.to(device),plan.to(device)
        for name,x in (('batched uint8', x8d), ('batched float32', x8d.float()/255)):
            ms = median_ms(lambda: apply_policy(policy, x, pland, fill=0.5), reps)
            rows.append((f'image policy {size} px', f'{name} ({device})', ms, pil/ms, '× PIL'))
        if device.type != 'cpu':
            ms = median_ms(lambda: apply_policy(policy, x8, plan, fill=0.5), reps)
            rows.append((f'image policy {size} px', 'batched uint8 (CPU)', ms, pil/ms, '× PIL'))
    return rows

def isda_rows(device, steps:int, rounds:int, sizes:dict)->list:
    "(part, what, ms, ratio, meaning) of fastaug's and the authors' ISDA step against plain cross-entropy at `sizes`"
    rows = []
    for name,size in sizes.items():
        t = isda_bench.time_side_by_side(size, steps, rounds, str(device))
        mem = {i: isda_bench.measure_memory(i, size, steps, str(device)) for i in isda_bench.IMPLS}
        err = isda_bench.check_same_logits(size, str(device))
        for i in isda_bench.IMPLS:
            extra = f"{mem[i]['peak_mb']:.0f} MB extra peak" if 'peak_mb' in mem[i] else mem[i].get('error', '')
            note = f'; logits agree to {err:.0e}' if i == 'fastaug' else ''
            rows.append((f"ISDA {name} (bs {size['bs']})", f'{i} ({extra}{note})', t[i]*1000, t[i]/t['plain'], '× plain'))
    return rows

def resnet_dls(device, bs:int, size:int, n_batches:int):
    "Random uint8 RGB images in fastai `DataLoaders` on `device`: enough training batches for one timed fit"
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, (bs*n_batches, 3, size, size)).astype(np.uint8)
    y = rng.randint(0, 10, len(x))
    return image_dls(x, y, x[:bs], y[:bs], [str(i) for i in range(10)], bs=bs, device=device)

STEP_CONFIGS = {
    'plain': lambda: [],
    'MixUp(0.4)': lambda: [MixUp(0.4)],
    'CutMix(1.0)': lambda: [CutMix(1.)],
    'ManifoldMixup(0.4)': lambda: [ManifoldMixup(0.4)],
    'OutputMixup(0.4)': lambda: [OutputMixup(0.4)],
    'MODALS()': lambda: [MODALS()],
    'ISDA(0.5)': lambda: [ISDA(0.5)],
    'ISDA(0.5, diag)': lambda: [ISDA(0.5, cov='diag')],
    'ImagePolicy(PBA-like)': lambda: [ImagePolicy(image_bench.pba_like_policy())],
}

def step_rows(device, bs:int, size:int, steps:int, rounds:int)->list:
    "(part, what, ms, ratio, meaning) of each callback's step and iteration on a ResNet-18 against plain training"
    from torchvision.models import resnet18
    dls = resnet_dls(device, bs, size, steps)
    def maker(cbs):
        def make():
            set_seed(0)
            learn = Learner(dls, resnet18(num_classes=10), loss_func=CrossEntropyLossFlat(), cbs=cbs())
            return learn.to_fp16() if device.type == 'cuda' else learn
        return make
    def fit(learn):  # ISDA's λ ramps from 0 over the fit: time it half way, where its term is on
        if getattr(learn, 'isda', None) is not None: learn.isda.n_epochs,learn.isda.epochs_done = 2,1
        learn.fit(1, 1e-3)
    med,errors = time_steps({n: maker(c) for n,c in STEP_CONFIGS.items()}, steps, rounds, fit)
    (s0,i0),part,rows = med['plain'],f'ResNet-18 step, bs {bs}, {size} px',[]
    for n in STEP_CONFIGS:
        if n in errors: rows.append((part, f'{n}: {errors[n]}', float('nan'), float('nan'), ''))
        else:
            s,i = med[n]
            rows.append((part, f'{n} (iteration {i*1000:.1f} ms: {i/i0:.2f}×)', s*1000, s/s0, '× plain step'))
    return rows

def table(rows:list)->str:
    lines = ['| part | what | ms | ratio | |', '|---|---|---|---|---|']
    return '\n'.join(lines + [f'| {p} | {w} | {ms:.2f} | {r:.2f} | {m} |' for p,w,ms,r,m in rows])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--parts', nargs='+', default=['policy', 'isda', 'steps'], choices=['policy', 'isda', 'steps'])
    ap.add_argument('--quick', action='store_true', help='small sizes and few repetitions: a check that the script runs')
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--rounds', type=int, default=10)
    ap.add_argument('--out', default=None, help='also write the table, with the machine, to this markdown file')
    ap.add_argument('--tests', default='', help="the summary line of tests/test_cuda.py, to print with the table")
    a = ap.parse_args()
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or platform.machine()
    steps,rounds,reps = (2, 2, 2) if a.quick else (a.steps, a.rounds, 10)
    start,rows = time.perf_counter(),[]
    if 'policy' in a.parts: rows += policy_rows(dev, [32] if a.quick else [32, 224], 16 if a.quick else 128, reps)
    sizes = isda_bench.SIZES
    if a.quick: sizes = {k: dict(v, bs=8, n_classes=10, dim=32) for k,v in sizes.items()}
    if 'isda' in a.parts: rows += isda_rows(dev, steps, rounds, sizes)
    if 'steps' in a.parts: rows += step_rows(dev, 8 if a.quick else 128, 32 if a.quick else 224, steps, rounds)
    head = (f"# GPU check: {name}\n\n{time.strftime('%Y-%m-%d')}; torch {torch.__version__}; {a.device}; "
            f"{time.perf_counter() - start:.0f} s{'; quick sizes' if a.quick else ''}"
            + (f"\n\ntests/test_cuda.py: {a.tests}" if a.tests else '') + '\n\n')
    out = head + table(rows) + '\n'
    print(out)
    if a.out: Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(out)

if __name__ == '__main__': main()
