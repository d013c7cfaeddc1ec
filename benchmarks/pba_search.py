"""Wall time of a PBA search: the local engine against the Ray engine, on the same problem.

    python benchmarks/pba_search.py [--population 8] [--epochs 6] [--interval 2] [--num-cpus 2] [--engines local,ray]

The problem: PBA's fifteen image operations (`fastaug.image_ops`) searched for a small convnet on scikit-learn's 8x8
digits (1,258 train / 539 valid images), trained with `fit_one_cycle`. The local engine trains the trials one after
the other in this process, with torch using `--num-cpus` threads; the Ray engine runs `--num-cpus` trials at a time
on a local Ray instance, one CPU (one torch thread) each. Ray's start-up (`ray.init`) is timed separately from the
search. Both searches write their state under a temporary directory that is removed afterwards.

Timings on a shared machine are noisy: run it when the machine is otherwise idle, and compare engines within one run.
"""
import argparse, tempfile, time, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
import numpy as np, torch
from fastai.basics import Learner, accuracy
from fastaug.datasets import image_dls, image_cnn, fixed_split
from fastaug.image_ops import ImagePolicy, IMAGE_OPS
from fastaug.search import pba_search

def digits_dls(bs=64):
    from sklearn.datasets import load_digits
    d = load_digits()
    x,y = (d.images*16).clip(0, 255).astype(np.uint8),d.target
    tr,va = fixed_split(len(y), 0.3)
    return image_dls(x[tr], y[tr], x[va], y[va], [str(i) for i in range(10)], bs=bs)

DLS = digits_dls()

def make_learner():
    "A new Learner on the digits with an image policy callback"
    return Learner(DLS, image_cnn(10, widths=(16, 32)), metrics=accuracy, cbs=ImagePolicy())

def run(engine, args, path):
    "Wall time of the search (and of Ray's start-up), and its best score"
    kw = dict(population=args.population, epochs=args.epochs, interval=args.interval, lr=1e-2, progress=False)
    startup = 0.
    if engine == 'ray':
        import ray
        t = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={'env_vars': {'OMP_NUM_THREADS': '1'}})
        startup = time.perf_counter() - t
    try:
        t = time.perf_counter()
        res = pba_search(make_learner, IMAGE_OPS, path=path/engine, engine=engine, **kw)
        wall = time.perf_counter() - t
    finally:
        if engine == 'ray': ray.shutdown()
    return wall,startup,res

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--population', type=int, default=8)
    p.add_argument('--epochs', type=int, default=6)
    p.add_argument('--interval', type=int, default=2)
    p.add_argument('--num-cpus', type=int, default=2)
    p.add_argument('--engines', default='local,ray')
    args = p.parse_args()
    torch.set_num_threads(args.num_cpus)
    trial_epochs = args.population*args.epochs
    print(f"PBA search: {args.population} trials x {args.epochs} epochs (perturb every {args.interval}), "
          f"{len(IMAGE_OPS)} image operations, digits 8x8, {args.num_cpus} CPUs\n")
    print(f"| engine | search wall time (s) | Ray start-up (s) | s per trial-epoch | copies | best accuracy |")
    print(f"|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for engine in args.engines.split(','):
            wall,startup,res = run(engine, args, Path(d))
            print(f"| {engine} | {wall:.1f} | {startup:.1f} | {wall/trial_epochs:.3f} | {len(res.exploits)} | "
                  f"{res.best_score:.4f} |", flush=True)
