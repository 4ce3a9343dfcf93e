# Copyright 2025 facebot maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The usual ROS 2 lint checks (ament_flake8, ament_pep257, ament_copyright, ament_xmllint),
run as plain tests on the ROS layer: facebot/nodes, launch/ and the ROS test helpers.

flake8 comes from pip (the test extras); xmllint from Debian's libxml2-utils. A missing
tool skips its test with the reason printed.
"""
import ast
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 99  # ament_flake8's limit
ROS_PY = sorted([*ROOT.glob('facebot/nodes/*.py'), *ROOT.glob('launch/*.py'),
                 ROOT / 'test' / 'ros_graph.py', ROOT / 'test' / 'ros_probe.py',
                 ROOT / 'test' / 'test_ros_graph.py',
                 ROOT / 'test' / 'test_launch_static.py', ROOT / 'test' / 'test_ros_lint.py'])
SHIPPED_PY = [p for p in ROS_PY if p.parent.name in ('nodes', 'launch')]
XML_FILES = [ROOT / 'package.xml', ROOT / 'urdf' / 'facebot_head.urdf',
             ROOT / 'urdf' / 'facebot_head.urdf.xacro']


def _skip(reason):
    print(f'SKIP: {reason}')
    pytest.skip(reason)


def test_flake8():
    try:
        import flake8  # noqa: F401
    except ImportError:
        _skip('flake8 is not installed (pip install flake8)')
    res = subprocess.run([sys.executable, '-m', 'flake8', f'--max-line-length={MAX_LINE}',
                          *map(str, ROS_PY)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_docstrings():
    """pep257-ish: in shipped code, every module, public class and public top-level
    function has one."""
    missing = []
    for path in SHIPPED_PY:
        tree = ast.parse(path.read_text())
        if ast.get_docstring(tree) is None:
            missing.append(f'{path.name}: module')
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and \
                    not node.name.startswith('_') and not node.name.startswith('test_') \
                    and ast.get_docstring(node) is None:
                missing.append(f'{path.name}: {node.name}')
    assert missing == []


def test_copyright_headers():
    for path in ROS_PY:
        head = path.read_text().splitlines()[:3]
        assert head and head[0].startswith('# Copyright '), path
        assert any('Apache License, Version 2.0' in line for line in head), path


def test_xml_is_well_formed():
    for path in XML_FILES:
        ET.parse(path)


def test_xmllint():
    xmllint = shutil.which('xmllint')
    if xmllint is None:
        _skip('xmllint not found (Debian package libxml2-utils)')
    res = subprocess.run([xmllint, '--noout', *map(str, XML_FILES)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
