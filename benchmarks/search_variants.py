"""The `modals-pba` entry of the benchmark's reduced regime under three search settings, paired on one machine.

    OMP_NUM_THREADS=1 python benchmarks/search_variants.py [--out benchmarks/search_variants] [--seeds 5]

Each setting is a `fastaug.bench` run of `modals-pba` (and its `none` baseline) in its own directory: PBA's ranking by
hold-out accuracy with 8 trials (the benchmark's setting) and with 16 (the PBA paper's population), and ranking by
hold-out loss with 8 trials. The three share their seeds, data and budget, so their `none` runs must agree to the last
digit (checked: it is what makes the three comparable), and the table pairs every variant with the same baseline.
A finished setting is not redone.
"""
import argparse, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
from fastaug.bench import run_benchmark, read_runs, summarise, compact_table, markdown_table

VARIANTS = {'accuracy-8': dict(population=8, search_metric='accuracy'),
            'accuracy-16': dict(population=16, search_metric='accuracy'),
            'loss-8': dict(population=8, search_metric='valid_loss')}

def variant_runs(out:Path, seeds:int)->list:
    "Run every variant (resuming), check their baselines agree, and return one list of runs with the variants named"
    runs,base = [],None
    for name,kw in VARIANTS.items():
        run_benchmark(out/name, methods=['modals-pba'], regimes=['reduced'], seeds=seeds, progress=True, **kw)
        rs = read_runs(out/name/'runs.jsonl')
        none = {(r['modality'], r['seed']): r['accuracy'] for r in rs if r['method'] == 'none'}
        if base is None: base = none; runs += [r for r in rs if r['method'] == 'none']
        elif none != base: raise RuntimeError(f"{out/name}: its `none` runs differ from {out/next(iter(VARIANTS))}'s: "
                                              "the variants were not run on one machine with one thread count")
        runs += [dict(r, method=f"modals-pba ({name})") for r in rs if r['method'] == 'modals-pba']
    return runs

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='benchmarks/search_variants')
    p.add_argument('--seeds', type=int, default=5)
    a = p.parse_args()
    table = markdown_table(compact_table(summarise(variant_runs(Path(a.out), a.seeds)), 'reduced'))
    (Path(a.out)/'results.md').write_text(table + '\n')
    print(table)
