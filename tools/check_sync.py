"Fail if `nbdev-clean` or `nbdev-export` changes anything: notebooks must be clean and the library must match them"
import hashlib, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
watched = ('nbs', 'fastaug')

def snapshot()->dict:
    "Hash of every file under the watched folders"
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for d in watched for p in sorted((root/d).rglob('*'))
            if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts}

def changed(before, after): return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

if __name__ == '__main__':
    bin_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.executable).parent
    for cmd,what in (('nbdev-clean', 'not clean'), ('nbdev-export', 'out of sync with the library')):
        before = snapshot()
        subprocess.run([str(bin_dir/cmd)], cwd=root, check=True)
        diff = changed(before, snapshot())
        if diff:
            print(f"`{cmd}` changed {', '.join(diff)}: the notebooks were {what}.\n"
                  f"Make the notebooks the source of the change, run nbdev-clean and nbdev-export, and commit.")
            sys.exit(1)
    print('notebooks clean and in sync with fastaug/')
