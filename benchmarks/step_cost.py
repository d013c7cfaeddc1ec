"""Per-training-step cost of the mixing callbacks, as ratios to plain training measured side by side in one run.

    python benchmarks/step_cost.py [--steps 10] [--rounds 20]

A step is timed from `before_batch` (before any callback touches the batch) to `after_batch` (after the optimiser
step): data loading is excluded, the callback's own work is included. Configurations take turns, `steps` batches
each, for `rounds` rounds, and each configuration's median step time is divided by plain training's: the ratios are
what to read, the absolute times are noise on a shared CPU.
"""
import argparse, statistics, time, warnings
warnings.filterwarnings('ignore')
import torch
from fastai.basics import *
from fastai.callback.all import *
from fastai.callback.mixup import MixUp as FastaiMixUp, CutMix as FastaiCutMix
from fastaug.all import *

class StepStart(Callback):
    "Start the clock before any other callback sees the batch"
    order = -1000
    def __init__(self, times): self.times = times
    def before_batch(self): self.times.append(-time.perf_counter())

class StepEnd(Callback):
    "Stop the clock after the optimiser step; stop the fit after `steps` timed batches"
    order = 1000
    def __init__(self, times, steps): self.times,self.steps,self.n = times,steps,0
    def before_fit(self): self.n = 0
    def after_batch(self):
        self.times[-1] += time.perf_counter()
        self.n += 1
        if self.n >= self.steps: raise CancelFitException()

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
    "Median step time per configuration, or the error it raised"
    learners,times,errors = {},{},{}
    for name,mk in CONFIGS.items():
        learn = make_learner(problem, mk())
        learn.remove_cb(ProgressCallback)
        t = []
        learn.add_cbs([StepStart(t), StepEnd(t, steps)])
        try:
            with learn.no_logging(): learn.fit(1, 1e-3)  # warm-up, and a check that it runs
            learners[name],times[name] = learn,t
        except Exception as e: errors[name] = f"fails: {type(e).__name__}: {str(e).splitlines()[-1][:80]}"
    for _ in range(rounds):
        for name,learn in learners.items():
            times[name].clear()
            with learn.no_logging(): learn.fit(1, 1e-3)
            learn.step_times = getattr(learn, 'step_times', []) + list(times[name])
    return {n: statistics.median(l.step_times) for n,l in learners.items()},errors

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
        rows[problem] = {n: f"{med[n]/med['plain']:.2f}" if n in med else err[n] for n in CONFIGS}
        rows[problem]['plain step (ms)'] = f"{med['plain']*1000:.1f}"
    names = list(CONFIGS) + ['plain step (ms)']
    print('| model | ' + ' | '.join(names) + ' |')
    print('|---|' + '---|'*len(names))
    label = {'image': 'image convnet (Fashion-MNIST)', 'tabular': 'tabular MLP (diamonds)'}
    for problem,r in rows.items(): print(f"| {label[problem]} | " + ' | '.join(r[n] for n in names) + ' |')
