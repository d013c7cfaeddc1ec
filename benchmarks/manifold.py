"""Manifold Mixup: per-step cost next to plain training and input MixUp, and accuracy next to MixUp and OutputMixup.

    python benchmarks/manifold.py [--part cost|accuracy|all] [--seeds 3] [--epochs 8] [--steps 10] [--rounds 20]

Step cost follows `benchmarks/step_cost.py`: a step is timed from `before_batch` (before any callback touches the batch)
to `after_batch` (after the optimiser step); configurations take turns, `steps` batches each, for `rounds` rounds, and
each median step time is divided by plain training's and by input MixUp's, measured side by side in the same run. The
ratios are what to read; absolute times are noise on a shared CPU.

Accuracy uses `fastaug.bench.train_eval`: every method trains the same small model from the same initial weights on
the same data in the same order for each seed, so per-seed differences (the paired gain) measure the method alone.
Methods: none, mixup (MixUp 0.4), manifold (ManifoldMixup 0.4: the input or the first half of the blocks), output
(OutputMixup 0.4); `--methods` also accepts manifold-all (every block, `depth=1`) and manifold-paper (α = 2, one λ
per batch, as in the paper on CIFAR).
"""
import argparse, warnings
warnings.filterwarnings('ignore')
import torch
from fastai.basics import *
from fastai.callback.all import *
from fastaug.all import *
from fastaug.manifold import *
from _common import time_steps, paired_runs

CONFIGS = {
    'plain': lambda: None,
    'MixUp': lambda: MixUp(0.4),
    'ManifoldMixup': lambda: ManifoldMixup(0.4),
    'ManifoldMixup depth=1': lambda: ManifoldMixup(0.4, depth=1.),
    'OutputMixup': lambda: OutputMixup(0.4),
}

METHODS = {
    'none': lambda: [],
    'mixup': lambda: [MixUp(0.4)],
    'manifold': lambda: [ManifoldMixup(0.4)],
    'manifold-all': lambda: [ManifoldMixup(0.4, depth=1.)],
    'manifold-paper': lambda: [ManifoldMixup(2., mode='batch')],
    'output': lambda: [OutputMixup(0.4)],
}

def step_costs(problem, dls, steps, rounds):
    "Median (step, iteration) time per configuration, and the errors of those that fail"
    def make(mk):
        set_seed(0)
        cb = mk()
        return get_learner(problem, dls=dls, cbs=[cb] if cb else None)
    return time_steps({n: (lambda mk=mk: make(mk)) for n,mk in CONFIGS.items()}, steps, rounds)

def cost_table(steps, rounds):
    data = {'image': get_dls('image', n_train=10_000, bs=128), 'tabular': get_dls('tabular', bs=128)}
    label = {'image': 'image convnet (Fashion-MNIST)', 'tabular': 'tabular MLP (diamonds)'}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {steps*rounds} steps per configuration, "
          "bs 128; each cell: ratio to plain / ratio to MixUp\n", flush=True)
    cols = [n for n in CONFIGS if n != 'plain']
    lines = ['| model | ' + ' | '.join(cols) + ' | plain step (ms) |', '|---|' + '---|'*(len(cols) + 1)]
    for problem,dls in data.items():
        med,err = step_costs(problem, dls, steps, rounds)
        def cell(n):
            if n not in med: return err[n]
            return f"{med[n][0]/med['plain'][0]:.2f}" + (f" / {med[n][0]/med['MixUp'][0]:.2f}" if 'MixUp' in med else '')
        lines.append(f"| {label[problem]} | " + ' | '.join(cell(n) for n in cols) + f" | {med['plain'][0]*1000:.1f} |")
    print('\n'.join(lines), flush=True)

def accuracy_table(seeds, epochs, methods, modalities):
    data = lambda mod: {'n_train': 10_000} if mod == 'image' else {}
    return paired_runs({m: METHODS[m] for m in methods}, modalities, seeds, epochs, data)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--part', choices=['cost', 'accuracy', 'all'], default='all')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--rounds', type=int, default=20)
    p.add_argument('--methods', nargs='+', default=['none', 'mixup', 'manifold', 'output'], choices=list(METHODS))
    p.add_argument('--modalities', nargs='+', default=['image', 'series'], choices=list(MODALITIES))
    a = p.parse_args()
    if a.part in ('cost', 'all'): cost_table(a.steps, a.rounds)
    if a.part in ('accuracy', 'all'): accuracy_table(a.seeds, a.epochs, a.methods, a.modalities)
