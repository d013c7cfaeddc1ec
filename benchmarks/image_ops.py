"""Images per second of fastaug's batched image policy vs the same policy applied per image in PIL (as the PBA authors do).

    python benchmarks/image_ops.py                      # bs 128 at 32×32 and 224×224, a PBA-like policy of all 15 operations
    python benchmarks/image_ops.py --per-op             # also each operation alone, on 8 images (a typical call of a policy)
    python benchmarks/image_ops.py --sizes 32 --reps 20 --threads 1

Both sides get the same images and the same plan (which operations each image gets, in which order):
- batched: `apply_policy` on the uint8 batch (n, c, h, w) — what `ImagePolicy` does before `IntToFloatTensor` —
  and, for reference, on the same batch as float32 in [0, 1] (the path for float images, and for accelerators);
- PIL: for each image (an HWC uint8 array, as a dataset holds it) `Image.fromarray`, the planned operations with
  `pil_image_op`, `np.asarray`. Collating the results into a batch is not counted (the batched path starts from a
  collated batch, so each side is timed without its collation).
Timings are the median of `--reps` runs after two warm-up runs, on this machine's CPU (torch uses `--threads` threads;
PIL runs on one).
"""
import argparse, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, torch
from PIL import Image
from fastaug.policy import Policy
from fastaug.image_ops import IMAGE_OPS, apply_policy, get_op
from fastaug.testing import pil_image_op

def photo_batch(size:int, bs:int, seed:int=0)->torch.Tensor:
    "`bs` random size×size RGB crops of scikit-learn's two sample photographs (downscaled for small sizes), uint8 NCHW"
    from sklearn.datasets import load_sample_image
    rng = np.random.RandomState(seed)
    scale = 1 if size > 96 else 3
    ims = [np.asarray(Image.fromarray(load_sample_image(f)).resize((640//scale, 427//scale))) for f in ('china.jpg', 'flower.jpg')]
    crops = []
    for i in range(bs):
        im = ims[i % 2]
        r,c = rng.randint(0, im.shape[0]-size+1),rng.randint(0, im.shape[1]-size+1)
        crops.append(im[r:r+size, c:c+size])
    return torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy())

def pba_like_policy(seed:int=0)->Policy:
    "Two settings of each of the 15 operations with random probability (0-10) and magnitude (0-9) levels; PBA's 0/1/2-op weights"
    rng = np.random.RandomState(seed)
    return Policy([(o, int(rng.randint(0, 11)), int(rng.randint(0, 10))) for o in IMAGE_OPS for _ in range(2)])

def pil_policy(arrays:list, policy:Policy, plan:torch.Tensor, fill=0.5)->list:
    "The planned operations applied to each HWC uint8 array with PIL, one image at a time"
    signs = np.random.randint(0, 2, plan.shape)*2 - 1
    out = []
    for i,a in enumerate(arrays):
        img = Image.fromarray(a)
        for j,k in enumerate(plan[:, i].tolist()):
            if k < 0: continue
            s = policy.settings[k]
            img = pil_image_op(img, s.op, s.m, sign=int(signs[j, i]), fill=fill)
        out.append(np.asarray(img))
    return out

def median_ms(fn, reps:int)->float:
    for _ in range(2): fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))*1000

def bench_policy(size:int, bs:int, reps:int, policy:Policy)->list:
    x8 = photo_batch(size, bs)
    xf = x8.float()/255
    arrays = [np.ascontiguousarray(a) for a in x8.permute(0, 2, 3, 1).numpy()]
    torch.manual_seed(0)
    plan = policy.plan(bs)
    n_ops = int((plan >= 0).sum())
    pil = median_ms(lambda: pil_policy(arrays, policy, plan), reps)
    rows = [('PIL, per image', pil)]
    rows.append(('batched, uint8', median_ms(lambda: apply_policy(policy, x8, plan, fill=0.5), reps)))
    rows.append(('batched, float32', median_ms(lambda: apply_policy(policy, xf, plan, fill=0.5), reps)))
    return [(size, name, ms, bs/ms*1000, pil/ms, n_ops) for name,ms in rows]

def bench_ops(size:int, bs:int, reps:int, m:float=0.5)->list:
    "Each operation alone at magnitude `m` on `bs` images: batched uint8 vs PIL"
    x8 = photo_batch(size, bs)
    arrays = [np.ascontiguousarray(a) for a in x8.permute(0, 2, 3, 1).numpy()]
    res = []
    for name in IMAGE_OPS:
        fn = get_op(name).fn
        b = median_ms(lambda: fn(x8, m, fill=0.5), reps)
        p = median_ms(lambda: [np.asarray(pil_image_op(Image.fromarray(a), name, m, sign=1, fill=0.5)) for a in arrays], reps)
        res.append((size, name, b, p, p/b))
    return res

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[32, 224])
    ap.add_argument('--bs', type=int, default=128)
    ap.add_argument('--reps', type=int, default=10)
    ap.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch\'s choice)')
    ap.add_argument('--per-op', action='store_true', help='also time each operation alone')
    ap.add_argument('--op-bs', type=int, default=8, help='images per operation call for --per-op (in the policy, a call sees ~bs·1.3/30)')
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    policy = pba_like_policy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; bs {args.bs}; policy of {len(policy)} settings, "
          f"0/1/2 operations per image with weights {policy.n_ops_weights}\n")
    print('| size | path | ms / batch | images / s | × PIL | operations applied |')
    print('|---|---|---|---|---|---|')
    for size in args.sizes:
        for s,name,ms,ips,x,n in bench_policy(size, args.bs, args.reps, policy):
            print(f'| {s}×{s} | {name} | {ms:.1f} | {ips:,.0f} | {x:.2f} | {n} |')
    if args.per_op:
        print(f'\n{args.op_bs} images per call\n\n| size | operation | batched uint8 ms | PIL ms | × PIL |')
        print('|---|---|---|---|---|')
        for size in args.sizes:
            for s,name,b,p,x in bench_ops(size, args.op_bs, args.reps):
                print(f'| {s}×{s} | {name} | {b:.2f} | {p:.2f} | {x:.2f} |')

if __name__ == '__main__': main()
