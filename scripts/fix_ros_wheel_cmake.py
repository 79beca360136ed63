"""Rewrite the wheel-build machine's Python/numpy include dirs in the ROS wheels' CMake files.

The PyPI ROS 2 wheels export CMake files that name /opt/python/cp311-cp311/include/python3.11 and
that machine's numpy include dir; CMake then fails with "includes non-existent path".
Idempotent: run it after every pip install into the venv.
"""
import pathlib
import re
import sys
import sysconfig

import numpy


def main(venv: str) -> int:
    py_include = sysconfig.get_paths()['include']
    np_include = numpy.get_include()
    patterns = [
        (re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+'), py_include),
        (re.compile(r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include'), np_include),
        (re.compile(r'/opt/[^";]*?/site-packages/numpy/_core/include'), np_include),
    ]
    fixed = 0
    for path in pathlib.Path(venv, 'share').glob('*/cmake/*.cmake'):
        text = path.read_text()
        new = text
        for pattern, repl in patterns:
            new = pattern.sub(repl, new)
        if new != text:
            path.write_text(new)
            fixed += 1
    print(f'setup: fixed include paths in {fixed} ROS wheel CMake file(s)')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
