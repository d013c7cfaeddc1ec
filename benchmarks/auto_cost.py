"""What `auto_augment`'s default call costs, as a multiple of one plain run of the final training, side by side.

    OMP_NUM_THREADS=1 python benchmarks/auto_cost.py [--cells image-full tabular-reduced ...] [--out DIR]

The benchmark's `search ×` divides a call's recorded time by the recorded runs without augmentation, which other
benchmark processes may have shared the machine with at other times. This measures both in one process, with
nothing else meant to run beside it: for each cell (a benchmark dataset and regime), an untimed one-epoch warm-up,
one plain run of the final training (seed 0, the whole training set), the default call in a fresh directory, then the
plain run again; the cost is the call's time over the mean of the two plain runs. The call's choice is checked against
the benchmark's record (`benchmarks/results/searches/auto/<cell>/result.json`): the same code on the benchmark's
machine chooses the same; another machine's floating point may not. `results.md` has a table per machine; rows
measured before guard runs validated in their last epoch only (the same choices and scores) say
'every epoch' in its last column.
"""
import argparse, json, tempfile, time, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
import torch
from fastaug.auto import auto_augment
from fastaug.bench import train_eval, regime_data, epochs_of, search_key, machine
from fastaug.datasets import get_dls, get_learner

CELLS = [search_key(k, r) for r in ('full', 'reduced') for k in ('image', 'tabular', 'series', 'text')]
RECORDS = Path(__file__).parent/'results'/'searches'/'auto'

def cell_data(cell:str)->tuple:
    "The modality, the loaders and the epochs of a benchmark cell"
    k,r = cell.split('-')
    full = get_dls(k)
    kw = regime_data(k, r, len(full.train_ds))
    return k,(get_dls(k, **kw) if 'n_train' in kw else full),epochs_of(None, k, r)

def measure(cell:str, lr:float=1e-2)->dict:
    "One plain run, the default call, one plain run, in this process; the call's cost over the plain runs' mean"
    k,dls,epochs = cell_data(cell)
    plain = lambda n=epochs: train_eval(k, 'none', seed=0, epochs=n, lr=lr, dls=dls)['seconds']
    plain(1)  # first-run costs (allocations, caches) out of the timed runs
    before = plain()
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        res = auto_augment(lambda d_, cbs: get_learner(k, dls=d_, cbs=cbs), dls, epochs, lr=lr, path=d, progress=False)
        call = time.perf_counter() - start
    after = plain()
    rec = RECORDS/cell/'result.json'
    recorded = json.loads(rec.read_text())['choice'] if rec.exists() else None
    return dict(cell=cell, plain_before=before, plain_after=after, call=call, cost=call/((before + after)/2),
                own_cost=res.cost, choice=res.choice, recorded_choice=recorded, machine=machine(),
                threads=torch.get_num_threads(), guard_validation='last epoch')

def table(rows:list)->str:
    "The measurements as a Markdown table"
    out = ['| cell | plain run (s), before / after | call (s) | cost × one plain run | chose | the record chose | '
           'guard runs validate |', '|---|---|---|---|---|---|---|']
    for r in rows:
        rec = 'the same' if r['choice'] == r['recorded_choice'] else r['recorded_choice']
        out.append(f"| {r['cell']} | {r['plain_before']:.1f} / {r['plain_after']:.1f} | {r['call']:.0f} | "
                   f"{r['cost']:.1f} | {r['choice']} | {rec} | {r.get('guard_validation', 'every epoch')} |")
    return '\n'.join(out)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cells', nargs='+', default=CELLS, choices=CELLS)
    p.add_argument('--out', default=str(Path(__file__).parent/'auto_cost'))
    a = p.parse_args()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    log = out/'runs.jsonl'
    for cell in a.cells:
        r = measure(cell)
        with open(log, 'a') as f: f.write(json.dumps(r) + '\n')
        print(table([r]).split('\n')[-1], flush=True)
    rows = {}
    for r in map(json.loads, log.read_text().splitlines()): rows.setdefault(r['machine'], {})[r['cell']] = r  # latest
    text = '\n\n'.join(f"Machine `{m}`:\n\n" + table([rs[c] for c in CELLS if c in rs]) for m,rs in rows.items())
    (out/'results.md').write_text(text + '\n')
    print(text)
