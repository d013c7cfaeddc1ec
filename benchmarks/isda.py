"""ISDA: fastaug's layout vs the authors' layout vs plain cross-entropy, a real model's step time, and accuracy.

    python benchmarks/isda.py [--steps 5] [--rounds 5] [--seeds 3] [--epochs 8] [--only micro model accuracy]
    python benchmarks/isda.py --sweep [--json]     # memory and time against the number of classes (the notebook's plot)

micro     One step = estimator update + augmented loss + backward from the features, at (bs 128, C 100, A 640, full Σ)
          and (bs 64, C 1000, A 2048, diagonal Σ), for three implementations:
            plain    cross-entropy on the head's logits, no ISDA;
            fastaug  `CovarianceEstimator.update` + `isda_logits` (per class present, chunked, hand-written backward);
            authors  a re-implementation of the authors' layout from its description: the update expands every feature
                     to batch×C×A, multiplies C×A×batch by C×batch×A and blends whole C×A×A tensors; the loss gathers
                     a batch×A×A covariance tensor and forms a batch×C×C product (batch×C×A for the diagonal).
          Time per step: median over `rounds` rounds of `steps` steps, the implementations taking turns in one process.
          Peak memory: each configuration runs in a fresh subprocess; its extra memory is the rise of the process's peak
          resident set size over the steps, from after the set-up (statistics allocated and written, inputs built,
          libraries warmed up on a tiny problem): Linux's VmHWM in /proc/self/status, reset with /proc/self/clear_refs
          just before the steps (`ru_maxrss` elsewhere; it is inherited from the parent across exec, so it is only a
          fallback). torch's CPU allocations are invisible to tracemalloc, hence RSS. On CUDA,
          `torch.cuda.max_memory_allocated` is used.
model     Step time of the image convnet (Fashion-MNIST, bs 128, 128-d latent, 10 classes) with ISDA (full and
          diagonal Σ) as a ratio to plain training, measured side by side from `before_batch` to `after_batch`.
accuracy  Validation accuracy on the image and tabular offline sets, none vs ISDA(0.5), `--seeds` seeds,
          `--epochs` epochs of one-cycle training (fastaug.bench.train_eval).
Times on a shared CPU are noisy: read the ratios.
"""
import argparse, json, os, resource, statistics, subprocess, sys, time, warnings
warnings.filterwarnings('ignore')
import torch
import torch.nn.functional as F
from fastaug.isda import CovarianceEstimator, isda_logits, ISDA

SIZES = {'C100-full': dict(bs=128, n_classes=100, dim=640, kind='full'),
         'C1000-diag': dict(bs=64, n_classes=1000, dim=2048, kind='diag')}
IMPLS = ('plain', 'fastaug', 'authors')
LAM = 0.5

# ---------------------------------------------------------------- the authors' layout, from its description
def authors_update(state, x, y):
    "The authors' estimator update: features expanded to N×C×A, a C×A×N by C×N×A product, C×A×A blends"
    count,mean,cov = state
    N,(C,A) = x.shape[0],mean.shape
    onehot = torch.zeros(N, C, device=x.device).scatter_(1, y[:, None], 1)
    mask = onehot[:, :, None].expand(N, C, A)
    by_class = x[:, None, :].expand(N, C, A)*mask
    n_ca = mask.sum(0)
    n_ca[n_ca == 0] = 1
    mean_b = by_class.sum(0)/n_ca
    centred = by_class - mean_b[None].expand(N, C, A)*mask
    n_c = onehot.sum(0)
    w_mean = n_c[:, None]/(n_c[:, None] + count[:, None])
    w_mean[w_mean != w_mean] = 0
    d = mean - mean_b
    if cov.ndim == 3:
        cov_b = torch.bmm(centred.permute(1, 2, 0), centred.permute(1, 0, 2))/n_ca[:, :, None].expand(C, A, A)
        nw = n_c[:, None, None].expand(C, A, A)
        w_cov = nw/(nw + count[:, None, None].expand(C, A, A))
        w_cov[w_cov != w_cov] = 0
        extra = w_cov*(1 - w_cov)*torch.bmm(d[:, :, None], d[:, None, :])
    else:
        cov_b = centred.pow(2).sum(0)/n_ca
        w_cov = w_mean.expand(C, A)
        extra = w_cov*(1 - w_cov)*d.pow(2)
    new_cov = (cov*(1 - w_cov) + cov_b*w_cov).detach() + extra.detach()
    return count + n_c,(mean*(1 - w_mean) + mean_b*w_mean).detach(),new_cov

def authors_logits(logits, y, weight, cov, lam):
    "The authors' augmented logits: Σ gathered per sample (N×A×A) and an N×C×C product (N×C×A for the diagonal)"
    N,(C,A) = len(y),weight.shape
    w_ij = weight[None].expand(N, C, A)
    w_kj = torch.gather(w_ij, 1, y[:, None, None].expand(N, C, A))
    D = w_ij - w_kj
    if cov.ndim == 3:
        s2 = lam*torch.bmm(torch.bmm(D, cov[y]), D.permute(0, 2, 1))
        s2 = (s2*torch.eye(C, device=D.device).expand(N, C, C)).sum(2)
    else: s2 = lam*(D.pow(2)*cov[y][:, None, :].expand(N, C, A)).sum(2)
    return logits + 0.5*s2

# ---------------------------------------------------------------- one step of each implementation
class Problem:
    "Features, labels, a head and the statistics of one implementation at one size"
    def __init__(self, impl, bs, n_classes, dim, kind, device='cpu', seed=0):
        g = torch.Generator().manual_seed(seed)
        self.impl,self.device = impl,device
        self.x = (torch.randn(bs, dim, generator=g)*2 + 1).to(device).requires_grad_()
        self.y = torch.randint(0, n_classes, (bs,), generator=g).to(device)
        self.w = (torch.randn(n_classes, dim, generator=g)/dim**0.5).to(device).requires_grad_()
        self.b = torch.zeros(n_classes, device=device, requires_grad=True)
        # statistics that already hold 10 samples per class, written in place (resident before measuring, no copies)
        if impl == 'fastaug':
            self.est = CovarianceEstimator(n_classes, dim, kind, device=device)
            count,mean,cov = self.est.count,self.est.mean,self.est.cov
        elif impl == 'authors':
            count,mean = torch.zeros(n_classes, device=device),torch.zeros(n_classes, dim, device=device)
            cov = torch.zeros((n_classes, dim, dim) if kind == 'full' else (n_classes, dim), device=device)
            self.state = (count,mean,cov)
        if impl != 'plain':
            count.fill_(10); mean.normal_(generator=g) if device == 'cpu' else mean.normal_()
            cov.fill_(0.)
            (cov.diagonal(dim1=1, dim2=2) if kind == 'full' else cov).fill_(0.1)

    def step(self):
        logits = F.linear(self.x, self.w, self.b)
        if self.impl == 'fastaug':
            self.est.update(self.x.detach(), self.y)
            logits = isda_logits(logits, self.y, self.w, self.est.cov, LAM)
        elif self.impl == 'authors':
            self.state = authors_update(self.state, self.x.detach(), self.y)
            logits = authors_logits(logits, self.y, self.w, self.state[2].detach(), LAM)
        loss = F.cross_entropy(logits, self.y)
        loss.backward()
        self.x.grad = self.w.grad = self.b.grad = None
        if self.device != 'cpu': torch.cuda.synchronize()

def _status_kb(field):
    "A memory field of /proc/self/status (kB), or None where there is no /proc"
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'): return int(line.split()[1])
    except OSError: return None

def reset_peak_rss():
    "Reset the process's peak RSS to its current RSS (Linux: /proc/self/clear_refs); return the current RSS in kB"
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return _status_kb('VmRSS')
    except OSError: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def peak_rss():
    "The process's peak RSS in kB since the last reset (VmHWM), else since it started (ru_maxrss, which a child inherits)"
    return _status_kb('VmHWM') or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def child(impl, bs, n_classes, dim, kind, steps, device):
    "Run in a fresh process: set up, warm the libraries up on a tiny problem, then measure the peak over `steps` steps"
    Problem(impl, 4, 3, 8, kind, device).step()
    p = Problem(impl, bs, n_classes, dim, kind, device)
    if device != 'cpu': torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    before = reset_peak_rss()
    times = []
    for _ in range(steps):
        t = time.perf_counter(); p.step(); times.append(time.perf_counter() - t)
    extra = (torch.cuda.max_memory_allocated() - base)/2**20 if device != 'cpu' else (peak_rss() - before)/1024
    print(json.dumps(dict(peak_mb=extra, ms=1000*statistics.median(times))))

def measure_memory(impl, size, steps, device):
    "Extra peak memory (MB) and median step time (ms) of `impl` at `size`, in a fresh process"
    args = [sys.executable, __file__, '--child', impl, *(str(size[k]) for k in ('bs', 'n_classes', 'dim', 'kind')), str(steps), device]
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    if out.returncode: return dict(error=(out.stderr.strip().splitlines() or ['?'])[-1][:100])
    return json.loads(out.stdout.strip().splitlines()[-1])

def time_side_by_side(size, steps, rounds, device):
    "Median step time (s) of every implementation, taking turns in this process"
    probs = {i: Problem(i, **size, device=device) for i in IMPLS}
    times = {i: [] for i in IMPLS}
    for p in probs.values(): p.step()  # warm-up
    for _ in range(rounds):
        for i,p in probs.items():
            for _ in range(steps):
                t = time.perf_counter(); p.step(); times[i].append(time.perf_counter() - t)
    return {i: statistics.median(t) for i,t in times.items()}

def check_same_logits(size, device):
    "fastaug's and the authors' statistics and logits agree (on a small version of `size`)"
    small = dict(size, bs=32, n_classes=min(size['n_classes'], 20), dim=min(size['dim'], 64))
    a,b = Problem('fastaug', **small, device=device),Problem('authors', **small, device=device)
    a.est.update(a.x.detach(), a.y); b.state = authors_update(b.state, b.x.detach(), b.y)
    la = isda_logits(F.linear(a.x, a.w, a.b), a.y, a.w, a.est.cov, LAM)
    lb = authors_logits(F.linear(b.x, b.w, b.b), b.y, b.w, b.state[2], LAM)
    return float((la - lb).abs().max()/lb.abs().max())

def micro(a, device):
    print(f"## Step cost: update + loss + backward from the features ({device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| size | implementation | time per step (ms) | × plain | extra peak memory (MB) |")
    print("|---|---|---|---|---|")
    for name,size in SIZES.items():
        t = time_side_by_side(size, a.steps, a.rounds, device)
        mem = {i: measure_memory(i, size, a.steps, device) for i in IMPLS}
        for i in IMPLS:
            m = mem[i]
            print(f"| {name} (bs {size['bs']}) | {i} | {t[i]*1000:.1f} | {t[i]/t['plain']:.2f} | "
                  f"{m['peak_mb']:.0f} |" if 'peak_mb' in m else f"| {name} | {i} | {t[i]*1000:.1f} | | {m['error']} |")
        mf,ma = mem['fastaug'].get('peak_mb'),mem['authors'].get('peak_mb')
        print(f"| {name} | authors ÷ fastaug | {t['authors']/t['fastaug']:.1f}× time | | "
              f"{ma/max(mf, 1e-9):.1f}× memory |" if mf is not None and ma is not None else '')
        print(f"| {name} | max relative difference of the logits (small version) | {check_same_logits(size, device):.1e} | | |")

def sweep(a, device):
    rows = []
    for C in (10, 25, 50, 100):
        size = dict(bs=128, n_classes=C, dim=640, kind='full')
        for impl in ('fastaug', 'authors'):
            m = measure_memory(impl, size, a.steps, device)
            rows.append(dict(impl=impl, n_classes=C, **m))
    if a.json: print(json.dumps(rows))
    else:
        for r in rows: print(r)

# ---------------------------------------------------------------- a real model, and accuracy
def model_ratio(a):
    from fastai.basics import set_seed
    from fastaug.datasets import get_dls, get_learner
    from _common import time_steps
    dls = get_dls('image', n_train=10_000, bs=128)
    configs = {'plain': lambda: [], 'ISDA full': lambda: [ISDA(0.5)], 'ISDA diag': lambda: [ISDA(0.5, cov='diag')]}
    def make(mk):
        set_seed(0)
        return get_learner('image', dls=dls, cbs=mk())
    def fit(learn):  # time with λ = λ₀/2 > 0: half way through a two-epoch training
        if getattr(learn, 'isda', None) is not None: learn.isda.n_epochs,learn.isda.epochs_done = 2,1
        learn.fit(1, 1e-3)
    med,_ = time_steps({n: (lambda mk=mk: make(mk)) for n,mk in configs.items()}, a.steps, a.rounds, fit)
    m = {n: v[0] for n,v in med.items()}
    print("\n## A real model: image convnet, Fashion-MNIST, bs 128 (step = before_batch → after_batch)\n")
    print("| configuration | step (ms) | × plain |\n|---|---|---|")
    for n in configs: print(f"| {n} | {m[n]*1000:.1f} | {m[n]/m['plain']:.2f} |")

def accuracy(a):
    from _common import paired_runs
    data = lambda mod: {'n_train': 10_000} if mod == 'image' else {}
    print(f"## Accuracy: {a.epochs} epochs of one-cycle training, {a.seeds} seed(s), ISDA λ₀ = 0.5 (full Σ)\n")
    paired_runs({'none': lambda: [], 'isda': lambda: [ISDA(0.5)]}, ('image', 'tabular'), a.seeds, a.epochs, data)

if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        impl,bs,C,A,kind,steps,device = sys.argv[2:9]
        child(impl, int(bs), int(C), int(A), kind, int(steps), device)
        sys.exit()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=5, help='steps per round (and per memory measurement)')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--only', nargs='+', choices=['micro', 'model', 'accuracy'], default=['micro', 'model', 'accuracy'])
    p.add_argument('--sweep', action='store_true', help='memory and time against the number of classes only')
    p.add_argument('--json', action='store_true', help='with --sweep: print the rows as JSON')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    a = p.parse_args()
    if a.sweep: sweep(a, a.device); sys.exit()
    if 'micro' in a.only: micro(a, a.device)
    if 'model' in a.only: model_ratio(a)
    if 'accuracy' in a.only: accuracy(a)
