"Execute notebooks in place with a Jupyter kernel, keeping rich outputs, and skipping cells nbdev marks `eval: false`"
import re, sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient

_no_eval = re.compile(r'^\s*#\s*\|\s*eval\s*:\s*false\s*$', re.M)

class NbdevClient(NotebookClient):
    "A `NotebookClient` that leaves cells marked `#| eval: false` unexecuted, as `nbdev-test` does"
    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type == 'code' and _no_eval.search(cell.source):
            cell.outputs,cell.execution_count = [],None
            return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

def run(path, timeout=1800):
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    NbdevClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    nbformat.write(nb, path)

if __name__ == '__main__':
    for p in sys.argv[1:]: print('executing', p, flush=True); run(p)
