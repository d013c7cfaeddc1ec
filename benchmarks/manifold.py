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
import argparse, statistics, warnings
warnings.filterwarnings('ignore')
import torch
from fastai.basics import *
from fastai.callback.all import *
from fastaug.all import *
from fastaug.manifold import *
from fastaug import bench
from step_cost import StepStart, StepEnd

CONFIGS = {
    'plain': lambda: None,
    'MixUp': lambda: MixUp(0.4),
    'ManifoldMixup': lambda: ManifoldMixup(0.4),
    'ManifoldMixup depth=1': lambda: ManifoldMixup(0.4, depth=1.),
    'OutputMixup': lambda: OutputMixup(0.4),
}

bench.METHODS.update({
    'manifold': lambda: [ManifoldMixup(0.4)],
    'manifold-all': lambda: [ManifoldMixup(0.4, depth=1.)],
    'manifold-paper': lambda: [ManifoldMixup(2., mode='batch')],
    'output': lambda: [OutputMixup(0.4)],
})

def step_costs(problem, dls, steps, rounds):
    "Median step time per configuration, or the error it raised"
    learners,times,errors = {},{},{}
    for name,mk in CONFIGS.items():
        set_seed(0)
        cb = mk()
        learn = get_learner(problem, dls=dls, cbs=[cb] if cb else None)
        learn.remove_cb(ProgressCallback)
        t = []
        learn.add_cbs([StepStart(t), StepEnd(t, steps)])
        try:
            with learn.no_logging(): learn.fit(1, 1e-3)  # warm-up, and a check that it runs
            learners[name],times[name] = learn,t
        except Exception as e: errors[name] = f"fails: {type(e).__name__}: {str(e).splitlines()[-1][:80]}"
    all_times = {n: [] for n in learners}
    for _ in range(rounds):
        for name,learn in learners.items():
            times[name].clear()
            with learn.no_logging(): learn.fit(1, 1e-3)
            all_times[name] += times[name]
    return {n: statistics.median(v) for n,v in all_times.items()},errors

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
            return f"{med[n]/med['plain']:.2f}" + (f" / {med[n]/med['MixUp']:.2f}" if 'MixUp' in med else '')
        lines.append(f"| {label[problem]} | " + ' | '.join(cell(n) for n in cols) + f" | {med['plain']*1000:.1f} |")
    print('\n'.join(lines), flush=True)

def accuracy_table(seeds, epochs, methods, modalities):
    runs = []
    for modality in modalities:
        dls = get_dls(modality, **({'n_train': 10_000} if modality == 'image' else {}))
        print(f"{modality}: {len(dls.train_ds):,} training and {len(dls.valid_ds):,} validation samples, {epochs} epochs, "
              f"{seeds} seed(s)", flush=True)
        for s in range(seeds):
            for m in methods:
                r = bench.train_eval(modality, m, seed=s, epochs=epochs, dls=dls)
                runs.append(r)
                print(f"  {m:>14} seed {s}: accuracy {r['accuracy']*100:.2f}%  ({r['seconds']:.0f} s)", flush=True)
    print('\n' + bench.markdown_table(bench.summarise(runs)), flush=True)
    return runs

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--part', choices=['cost', 'accuracy', 'all'], default='all')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--rounds', type=int, default=20)
    p.add_argument('--methods', nargs='+', default=['none', 'mixup', 'manifold', 'output'], choices=list(bench.METHODS))
    p.add_argument('--modalities', nargs='+', default=['image', 'series'], choices=list(MODALITIES))
    a = p.parse_args()
    if a.part in ('cost', 'all'): cost_table(a.steps, a.rounds)
    if a.part in ('accuracy', 'all'): accuracy_table(a.seeds, a.epochs, a.methods, a.modalities)
