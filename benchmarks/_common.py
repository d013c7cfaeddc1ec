"""What the benchmark scripts share: clocks around a training step, and timing configurations side by side.

A step is timed from `before_batch` (before any callback touches the batch) to `after_batch` (after the optimiser
step); an iteration from one `before_batch` to the next, so it also holds loading the next batch and the loader's batch
transforms (where `ImagePolicy` works). On a GPU each reading waits for the device first.
"""
import statistics, time
import torch
from fastai.basics import Callback, CancelFitException
from fastai.callback.progress import ProgressCallback

def sync():
    "Wait for the GPU, so that a clock reading includes the work queued on it"
    if torch.cuda.is_available() and torch.cuda.is_initialized(): torch.cuda.synchronize()

class StepStart(Callback):
    "Start the clock before any other callback sees the batch; record the time since the previous batch started"
    order = -1000
    def __init__(self, times:list, iters:list|None=None): self.times,self.iters,self.last = times,iters,None
    def before_fit(self): self.last = None
    def before_batch(self):
        sync()
        now = time.perf_counter()
        if self.iters is not None and self.last is not None: self.iters.append(now - self.last)
        self.last = now
        self.times.append(-now)

class StepEnd(Callback):
    "Stop the clock after the optimiser step; stop the fit after `steps` timed batches"
    order = 1000
    def __init__(self, times:list, steps:int): self.times,self.steps,self.n = times,steps,0
    def before_fit(self): self.n = 0
    def after_batch(self):
        sync()
        self.times[-1] += time.perf_counter()
        self.n += 1
        if self.n >= self.steps: raise CancelFitException()

def failure(e:Exception)->str: return f"fails: {type(e).__name__}: {(str(e).splitlines() or [''])[-1][:80]}"

def time_steps(makers:dict, steps:int, rounds:int, fit=lambda learn: learn.fit(1, 1e-3))->tuple:
    """Median step and iteration times (s) of each configuration of `makers` (name -> function building its Learner),
    taking turns for `rounds` rounds of `steps` batches; and the errors of the configurations that fail"""
    learners,clocks,errors = {},{},{}
    for name,make in makers.items():
        try:
            learn,t,it = make(),[],[]
            learn.remove_cb(ProgressCallback)
            learn.add_cbs([StepStart(t, it), StepEnd(t, steps)])
            with learn.no_logging(): fit(learn)  # warm-up, and a check that it runs
            learners[name],clocks[name] = learn,(t, it)
        except Exception as e: errors[name] = failure(e)
    res = {n: ([], []) for n in learners}
    for _ in range(rounds):
        for n,learn in learners.items():
            for c in clocks[n]: c.clear()
            with learn.no_logging(): fit(learn)
            for r,c in zip(res[n], clocks[n]): r += c
    med = lambda v: statistics.median(v) if v else float('nan')
    return {n: (med(s), med(i)) for n,(s,i) in res.items()},errors

def paired_runs(methods:dict, modalities, seeds:int, epochs:int, data=lambda modality: {}, width:int=14)->list:
    """Train each of `methods` (name -> function returning its callbacks) on each modality over paired seeds: for a seed
    every method starts from the same weights and sees the data in the same order (`fastaug.bench.train_eval`), so
    the per-seed differences measure the method alone. Prints each run and the table; returns the runs."""
    from fastaug import bench
    from fastaug.datasets import get_dls
    runs = []
    for mod in modalities:
        dls = get_dls(mod, **data(mod))
        print(f"{mod}: {len(dls.train_ds):,} training and {len(dls.valid_ds):,} validation samples, {epochs} epochs, "
              f"{seeds} seed(s)", flush=True)
        for s in range(seeds):
            for name,cbs in methods.items():
                r = bench.train_eval(mod, name, seed=s, epochs=epochs, dls=dls, cbs=cbs())
                runs.append(r)
                print(f"  {name:>{width}} seed {s}: accuracy {r['accuracy']*100:.2f}%  ({r['seconds']:.0f} s)", flush=True)
    print('\n' + bench.markdown_table(bench.summarise(runs)), flush=True)
    return runs

def ratio_cells(med:dict, errors:dict, names, to:str='plain')->dict:
    "Each configuration's median step time as a ratio to configuration `to`'s, or the error it raised"
    return {n: f"{med[n][0]/med[to][0]:.2f}" if n in med else errors[n] for n in names}
