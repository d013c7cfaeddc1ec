"""Per-training-step cost of the mixing callbacks, as ratios to plain training measured side by side in one run.

    python benchmarks/step_cost.py [--steps 10] [--rounds 20]

A step is timed from `before_batch` (before any callback touches the batch) to `after_batch` (after the optimiser
step): data loading is excluded, the callback's own work is included. Configurations take turns, `steps` batches
each, for `rounds` rounds, and each configuration's median step time is divided by plain training's: the ratios are
what to read, the absolute times are noise on a shared CPU.
"""
import argparse, warnings
warnings.filterwarnings('ignore')
import torch
from fastai.basics import *
from fastai.callback.all import *
from fastai.callback.mixup import MixUp as FastaiMixUp, CutMix as FastaiCutMix
from fastaug.all import *
from _common import time_steps, ratio_cells

def make_learner(problem, cb, seed=0):
    set_seed(seed)
    dls = DATA[problem]
    return get_learner(problem, dls=dls, cbs=[cb] if cb else None)

CONFIGS = {
    'plain': lambda: None,
    'fastaug MixUp': lambda: MixUp(0.4),
    'fastaug CutMix': lambda: CutMix(1.),
    'fastai MixUp': lambda: FastaiMixUp(0.4),
    'fastai CutMix': lambda: FastaiCutMix(1.),
}

def bench(problem, steps, rounds):
    "Median (step, iteration) time per configuration, and the errors of those that fail"
    return time_steps({n: (lambda mk=mk: make_learner(problem, mk())) for n,mk in CONFIGS.items()}, steps, rounds)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--rounds', type=int, default=20)
    a = p.parse_args()
    DATA = {'image': get_dls('image', n_train=10_000, bs=128), 'tabular': get_dls('tabular', bs=128)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {a.steps*a.rounds} steps per configuration, bs 128\n")
    rows = {}
    for problem in DATA:
        med,err = bench(problem, a.steps, a.rounds)
        rows[problem] = ratio_cells(med, err, CONFIGS)
        rows[problem]['plain step (ms)'] = f"{med['plain'][0]*1000:.1f}"
    names = list(CONFIGS) + ['plain step (ms)']
    print('| model | ' + ' | '.join(names) + ' |')
    print('|---|' + '---|'*len(names))
    label = {'image': 'image convnet (Fashion-MNIST)', 'tabular': 'tabular MLP (diamonds)'}
    for problem,r in rows.items(): print(f"| {label[problem]} | " + ' | '.join(r[n] for n in names) + ' |')
