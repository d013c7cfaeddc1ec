"The package version, read from its one source: `version` in settings.ini"
from configparser import ConfigParser
from pathlib import Path

def _read_version()->str:
    "settings.ini's version in a source checkout, else the installed distribution's (built from settings.ini)"
    ini = Path(__file__).resolve().parent.parent/'settings.ini'
    if ini.exists():
        cfg = ConfigParser(delimiters=['='])
        cfg.read(ini, encoding='utf-8')
        if cfg['DEFAULT'].get('lib_name') == 'fastaug' and 'version' in cfg['DEFAULT']: return cfg['DEFAULT']['version']
    from importlib.metadata import version, PackageNotFoundError
    try: return version('fastaug')
    except PackageNotFoundError: return '0+unknown'

__version__ = _read_version()
