"Fail, listing them, on library lines longer than the house's 120 characters (what nbdev writes by itself excepted)"
import sys
from pathlib import Path

LIMIT = 120
SKIP = {'_modidx.py'}  # nbdev's index of symbols, not code anyone writes

def exempt(line:str)->bool:
    "nbdev wraps `__all__` at 120 characters and then puts `__all__ = ` in front of its first line"
    return line.startswith('__all__ = [')

def long_lines(root='fastaug', limit=LIMIT)->list:
    "(file, line number, length) of every line of `root`'s modules longer than `limit`"
    return [(p, i, len(l)) for p in sorted(Path(root).glob('*.py')) if p.name not in SKIP
            for i,l in enumerate(p.read_text().splitlines(), 1) if len(l) > limit and not exempt(l)]

if __name__ == '__main__':
    found = long_lines(*sys.argv[1:2])
    for p,i,n in found: print(f'{p}:{i}: {n} characters (at most {LIMIT}): shorten it in the notebook it comes from')
    if found: sys.exit(f'{len(found)} lines over {LIMIT} characters')
    print(f'no line over {LIMIT} characters in the library')
