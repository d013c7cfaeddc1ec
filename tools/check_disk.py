"""Fail early, with the numbers, where the disk cannot hold the virtual environment `make` is about to install.

    python tools/check_disk.py VENV GIB
"""
import shutil, sys
from pathlib import Path

def free_gib(path:Path)->tuple:
    "The nearest existing folder at or above `path`, and the GiB free on its disk"
    p = path.resolve()
    while not p.exists(): p = p.parent
    return p,shutil.disk_usage(p).free/2**30

def held_gib(path:Path)->float:
    "GiB the files under `path` already take (a half-made environment needs only the rest)"
    if not path.exists(): return 0.
    return sum(f.lstat().st_size for f in path.rglob('*') if f.is_file() and not f.is_symlink())/2**30

if __name__ == '__main__':
    venv = Path(sys.argv[1])
    need = max(0., float(sys.argv[2]) - held_gib(venv))
    where,free = free_gib(venv)
    if free < need: sys.exit(f"make: {venv} needs about {need:.1f} GiB more of free disk (torch's CUDA build takes "
                             f"5.3 GiB), but {where} has {free:.1f} GiB free: free some space, or set VENV= to a "
                             "folder on a larger disk")
