"Render README.md from nbs/index.ipynb with nbconvert (nbdev-readme needs Quarto, which is not available here)"
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parent.parent
_directive = re.compile(r'^\s*#\s*\|\s*(\S+)')

def _directives(src): return [m.group(1) for l in src.splitlines() if (m := _directive.match(l))]

_style = re.compile(r'<style>.*?</style>', re.S)

def _without_style(o):
    "An output without fastprogress's <style> block (GitHub shows it as text); None if nothing else is left"
    html = o.get('data', {}).get('text/html')
    if html is None: return o
    html = _style.sub('', html if isinstance(html, str) else ''.join(html)).strip()
    if not html: return None
    o['data']['text/html'] = html
    return o

def readme_nb(path=root/'nbs'/'index.ipynb'):
    "The index notebook without hidden or exported cells and without nbdev directive lines"
    nb = nbformat.read(path, as_version=4)
    keep = []
    for c in nb.cells:
        ds = _directives(c.source)
        if {'hide', 'export', 'exporti', 'default_exp'} & set(ds): continue
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in c.source.splitlines() if not _directive.match(l))
            c.outputs = [o for o in map(_without_style, c.get('outputs', [])) if o is not None]
        keep.append(c)
    nb.cells = keep
    nb.metadata['language_info'] = {'name': 'python'}
    return nb

def render(path=root/'nbs'/'index.ipynb')->str:
    body,_ = MarkdownExporter().from_notebook_node(readme_nb(path))
    note = '<!-- Generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file -->\n\n'
    return note + re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'

if __name__ == '__main__':
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root/'README.md'
    out.write_text(render(), encoding='utf-8')
