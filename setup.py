"Build fastaug from the metadata in settings.ini (no pkg_resources: works with current setuptools)"
from configparser import ConfigParser
from pathlib import Path
import shlex, setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=['='])
cfg.read(here/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

def reqs(key): return shlex.split(cfg.get(key, ''))
extras = {k: reqs(f'{k}_requirements') for k in ('data', 'dev', 'ray', 'distributed')}
extras['dev'] += extras['data'] + extras['ray'] + extras['distributed']  # CI runs the Ray and distributed tests
extras['all'] = sorted({r for v in extras.values() for r in v})
licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
lic = licenses[cfg['license']]
readme = here/'README.md'

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else cfg['description'],
    long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], url=cfg['git_url'], license=lic[0],
    keywords=cfg['keywords'].split(), python_requires=f">={cfg['min_python']}",
    classifiers=['Programming Language :: Python :: 3', f'License :: {lic[1]}', 'Framework :: Jupyter'],
    packages=setuptools.find_packages(include=['fastaug', 'fastaug.*']),
    include_package_data=True, zip_safe=False,
    install_requires=reqs('requirements'), extras_require=extras,
    entry_points={'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
