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

"""Static checks of launch/, for what our ROS 2 prefix cannot start (Gazebo, ros2_control,
rosbag2): sim.launch.py and record.launch.py, and every file's arguments.

The launch files are imported against a recording stand-in of the ``launch`` and
``launch_ros`` classes they use (constructor keywords as on Humble and Jazzy) and
expanded with their default arguments (OpaqueFunctions run, facebot includes followed).
Then: every facebot executable is in CMakeLists' FACEBOT_NODES and every other package is
an exec_depend; every launch argument is read; every argument passed to an included file
is declared there; the simulator bridge speaks the types facebot's nodes use. A planted
unused argument shows the check catches it. What runs on our prefix (facebot.launch.py,
the nodes' parameters, topic types and QoS) is tested for real in test_ros_graph.py.
"""
import ast
import importlib.util
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch'
LAUNCH_FILES = sorted(LAUNCH.glob('*.launch.py'))
USED: set = set()  # LaunchConfiguration names created while expanding a file


# ------------------------------------------------------------------------------------------
# the launch stand-in


class Recorded:
    """A launch entity that remembers how it was built."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchDescription(Recorded):
    def __init__(self, initial_entities=None, *, deprecated_reason=None):
        super().__init__()
        self.entities = list(initial_entities or [])

    def add_action(self, action):
        self.entities.append(action)


class DeclareLaunchArgument(Recorded):
    def __init__(self, name, *, default_value=None, description=None, choices=None, **kw):
        super().__init__(name, default_value=default_value, description=description)
        self.name, self.default_value = name, default_value


class LaunchConfiguration(Recorded):
    def __init__(self, variable_name, *, default=None):
        super().__init__(variable_name)
        self.name, self.default = variable_name, default
        USED.add(variable_name)

    def perform(self, context):
        value = context.launch_configurations.get(self.name, self.default)
        if value is None:
            raise KeyError(f'launch configuration {self.name!r} is not set')
        return resolve(value, context)


class OpaqueFunction(Recorded):
    def __init__(self, *, function, args=None, kwargs=None):
        super().__init__(function=function)
        self.function = function


def _keyword_only(name, required=()):
    def init(self, **kwargs):
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise TypeError(f'{name}() missing keyword argument(s): {missing}')
        Recorded.__init__(self, **kwargs)
    return type(name, (Recorded,), {'__init__': init})


Node = _keyword_only('Node', ('executable',))
LifecycleNode = _keyword_only('LifecycleNode', ('executable', 'name', 'namespace'))
ExecuteProcess = _keyword_only('ExecuteProcess', ('cmd',))
EmitEvent = _keyword_only('EmitEvent', ('event',))
ChangeState = _keyword_only('ChangeState', ('lifecycle_node_matcher', 'transition_id'))
OnProcessExit = _keyword_only('OnProcessExit', ('target_action', 'on_exit'))
OnStateTransition = _keyword_only('OnStateTransition', ('entities',))
FindExecutable = _keyword_only('FindExecutable', ('name',))


class RegisterEventHandler(Recorded):
    def __init__(self, event_handler, **kwargs):
        super().__init__(event_handler)
        self.handler = event_handler


class IncludeLaunchDescription(Recorded):
    def __init__(self, launch_description_source, *, launch_arguments=None, **kwargs):
        super().__init__(launch_description_source)
        self.source = launch_description_source
        self.launch_arguments = list(launch_arguments or [])


class PythonLaunchDescriptionSource(Recorded):
    def __init__(self, launch_file_path):
        super().__init__(launch_file_path)
        self.path = launch_file_path


class Command(Recorded):
    def __init__(self, command, *, on_stderr='fail'):
        super().__init__(command)


class PythonExpression(Recorded):
    pass


class ParameterValue(Recorded):
    def __init__(self, value, *, value_type=None):
        super().__init__(value, value_type=value_type)


class Transition:
    """lifecycle_msgs/msg/Transition's ids (as in lifecycle_msgs)."""

    TRANSITION_CONFIGURE = 1
    TRANSITION_CLEANUP = 2
    TRANSITION_ACTIVATE = 3
    TRANSITION_DEACTIVATE = 4


def matches_action(action):
    return ('matches_action', action)


def get_package_share_directory(package):
    return str(ROOT) if package == 'facebot' else f'/opt/ros/share/{package}'


def resolve(value, context):
    if isinstance(value, str):
        return value
    if isinstance(value, LaunchConfiguration):
        return value.perform(context)
    if isinstance(value, (list, tuple)):
        return ''.join(resolve(v, context) for v in value)
    return value


def _install_launch_standin(monkeypatch):
    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    mod('launch', LaunchDescription=LaunchDescription)
    mod('launch.actions', DeclareLaunchArgument=DeclareLaunchArgument,
        OpaqueFunction=OpaqueFunction, IncludeLaunchDescription=IncludeLaunchDescription,
        RegisterEventHandler=RegisterEventHandler, EmitEvent=EmitEvent,
        ExecuteProcess=ExecuteProcess)
    mod('launch.substitutions', LaunchConfiguration=LaunchConfiguration, Command=Command,
        FindExecutable=FindExecutable, PythonExpression=PythonExpression)
    mod('launch.events', matches_action=matches_action)
    mod('launch.event_handlers', OnProcessExit=OnProcessExit)
    mod('launch.launch_description_sources',
        PythonLaunchDescriptionSource=PythonLaunchDescriptionSource)
    mod('launch_ros')
    mod('launch_ros.actions', Node=Node, LifecycleNode=LifecycleNode)
    mod('launch_ros.event_handlers', OnStateTransition=OnStateTransition)
    mod('launch_ros.events')
    mod('launch_ros.events.lifecycle', ChangeState=ChangeState)
    mod('launch_ros.parameter_descriptions', ParameterValue=ParameterValue)
    mod('ament_index_python')
    mod('ament_index_python.packages', get_package_share_directory=get_package_share_directory)
    mod('lifecycle_msgs')
    mod('lifecycle_msgs.msg', Transition=Transition)


class Expanded:
    """What one launch file starts, expanded with its default arguments."""

    def __init__(self):
        self.declared: dict[str, dict] = {}  # file -> {argument: default}
        self.used: dict[str, set] = {}
        self.nodes: list[tuple[str, Recorded]] = []  # (file, Node / LifecycleNode)
        self.processes: list[Recorded] = []
        self.includes: list[tuple[str, str, list]] = []  # (file, included path, arg names)


def expand(path: Path, monkeypatch, arguments=None, out=None) -> Expanded:
    _install_launch_standin(monkeypatch)
    out = out or Expanded()
    USED.clear()
    spec = importlib.util.spec_from_file_location(f'launch_{path.stem.replace(".", "_")}',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    context = types.SimpleNamespace(launch_configurations={})
    declared = out.declared.setdefault(path.name, {})
    pending_includes = []

    def walk(entities):
        for e in entities:
            if isinstance(e, DeclareLaunchArgument):
                declared[e.name] = e.default_value
                value = (arguments or {}).get(e.name, e.default_value)
                context.launch_configurations.setdefault(e.name, value)
            elif isinstance(e, OpaqueFunction):
                walk(e.function(context) or [])
            elif isinstance(e, RegisterEventHandler):
                h = e.handler
                walk(h.kwargs.get('on_exit') or h.kwargs.get('entities') or [])
            elif isinstance(e, IncludeLaunchDescription):
                args = {k: resolve(v, context) for k, v in e.launch_arguments}
                out.includes.append((path.name, e.source.path, sorted(args)))
                pending_includes.append((e.source.path, args))
            elif isinstance(e, (Node, LifecycleNode)):
                out.nodes.append((path.name, e))
            elif isinstance(e, ExecuteProcess):
                out.processes.append(e)

    walk(ld.entities)
    out.used[path.name] = set(USED)
    for inc_path, args in pending_includes:
        if Path(inc_path).parent == LAUNCH:
            expand(Path(inc_path), monkeypatch, args, out)
    return out


@pytest.fixture
def expanded(monkeypatch):
    return {p.name: expand(p, monkeypatch) for p in LAUNCH_FILES}


# ------------------------------------------------------------------------------------------
# the checks (functions, so that each is also shown to catch a planted mistake)


def facebot_nodes_in_cmake() -> set:
    text = (ROOT / 'CMakeLists.txt').read_text()
    m = re.search(r'set\(\s*FACEBOT_NODES\b([^)]*)\)', text)
    return set(m.group(1).split())


def exec_depends() -> set:
    root = ET.parse(ROOT / 'package.xml').getroot()
    return {e.text for tag in ('exec_depend', 'depend') for e in root.iter(tag)}


def unused_arguments(exp: Expanded) -> dict:
    return {f: sorted(set(d) - exp.used.get(f, set())) for f, d in exp.declared.items()
            if set(d) - exp.used.get(f, set())}


def _bridge_endpoints(exp: Expanded, context) -> list[tuple]:
    out = []
    for _, node in exp.nodes:
        if node.kwargs.get('executable') != 'parameter_bridge':
            continue
        remap = {resolve(a, context): resolve(b, context)
                 for a, b in node.kwargs.get('remappings') or []}
        for arg in node.kwargs.get('arguments') or []:
            spec = resolve(arg, context)
            m = re.match(r'^([^@]+)@([^\[\]@]+)([\[\]@])(.+)$', spec)
            assert m, f'bridge argument {spec!r} is not topic@ros_type[gz_type'
            topic, ros_type, direction = m.group(1), m.group(2), m.group(3)
            topic = '/' + remap.get(topic, topic).lstrip('/')
            kind = 'pub' if direction in '[@' else 'sub'
            out.append((topic, ros_type, kind, 'RELIABLE', 'gz_bridge'))
    return out


# ------------------------------------------------------------------------------------------
# tests


def test_launch_files_expand_and_name_existing_executables(expanded):
    assert {'facebot.launch.py', 'sim.launch.py', 'record.launch.py'} <= set(expanded)
    ours = facebot_nodes_in_cmake()
    deps = exec_depends()
    started = set()
    for exp in expanded.values():
        for _, node in exp.nodes:
            pkg, exe = node.kwargs.get('package'), node.kwargs['executable']
            if pkg == 'facebot':
                assert exe in ours, f'{exe} is not in FACEBOT_NODES'
                started.add(exe)
            else:
                assert pkg in deps, f'{pkg} (launched) is not an exec_depend in package.xml'
        for _, inc, _args in exp.includes:
            pkg = 'facebot' if Path(inc).parent == LAUNCH else Path(inc).parts[-3]
            assert pkg == 'facebot' or pkg in deps, f'{pkg} (included) is not an exec_depend'
            if pkg == 'facebot':
                assert Path(inc).is_file(), inc
    assert started == ours  # facebot.launch.py starts every node with its defaults
    cmds = [p.kwargs['cmd'] for p in expanded['record.launch.py'].processes]
    assert cmds and cmds[0][:3] == ['ros2', 'bag', 'record'] and '/face/flame' in cmds[0]


def test_every_launch_argument_is_read(expanded):
    for exp in expanded.values():
        assert unused_arguments(exp) == {}


def test_arguments_given_to_included_launch_files_are_declared_there(expanded):
    for exp in expanded.values():
        for _, inc, args in exp.includes:
            if Path(inc).parent == LAUNCH:
                declared = set(exp.declared[Path(inc).name])
                assert set(args) <= declared, (inc, set(args) - declared)


# the topic types facebot's nodes use (checked on the real graph by test_ros_graph.py)
FACEBOT_TOPIC_TYPES = {'/clock': 'rosgraph_msgs/msg/Clock',
                       '/camera/image_raw': 'sensor_msgs/msg/Image'}


def test_simulator_bridge_speaks_the_nodes_types(expanded):
    sim = expanded['sim.launch.py']
    sim_ctx = types.SimpleNamespace(launch_configurations=dict(sim.declared['sim.launch.py']))
    bridge = {(b[0], b[1]) for b in _bridge_endpoints(sim, sim_ctx)}
    assert bridge == set(FACEBOT_TOPIC_TYPES.items())


def test_sim_launch_uses_the_documented_ros_gz_and_ros2_control_interfaces(expanded):
    sim = expanded['sim.launch.py']
    by_exe = {n.kwargs['executable']: n for _, n in sim.nodes}
    create = by_exe['create'].kwargs['arguments']
    assert create[create.index('-topic') + 1] == 'robot_description'
    spawners = [n for _, n in sim.nodes if n.kwargs['executable'] == 'spawner']
    assert {s.kwargs['arguments'][0] for s in spawners} == {'joint_state_broadcaster',
                                                            'head_position_controller'}
    for s in spawners:  # Jazzy: controllers read their parameters from --param-file
        args = s.kwargs['arguments']
        assert args[args.index('--param-file') + 1].endswith('config/head_controllers.yaml')
        assert Path(args[args.index('--param-file') + 1]).is_file()
    rsp = by_exe['robot_state_publisher'].kwargs['parameters'][0]
    desc = rsp['robot_description']
    assert isinstance(desc, ParameterValue) and desc.kwargs['value_type'] is str
    cmd = desc.args[0].args[0]
    assert ' sim_mode:=gazebo' in cmd and any(str(c).endswith('.urdf.xacro') for c in cmd)
    assert rsp['use_sim_time'] is True
    includes = [inc for _, inc, _ in sim.includes]
    assert any(i.endswith('ros_gz_sim/launch/gz_sim.launch.py') for i in includes)
    dialogue = next(n for f, n in sim.nodes if f == 'facebot.launch.py'
                    and n.kwargs['executable'] == 'dialogue')
    params = {k: v for p in dialogue.kwargs['parameters'] for k, v in p.items()}
    assert params['backend'] == 'scripted' and params['use_sim_time'] is True


def test_launch_arguments_reach_the_dialogue_node(monkeypatch):
    exp = expand(LAUNCH / 'facebot.launch.py', monkeypatch, {
        'backend': 'model', 'weights': '/w.safetensors', 'engine': '/w/graphs',
        'runtime': 'tensorrt', 'precision': 'fp16', 'force_engine_update': 'true',
        'namespace': 'robot1', 'start_audio': 'false'})
    nodes = {n.kwargs['executable']: n for _, n in exp.nodes}
    assert 'audio_capture' not in nodes and 'audio_player' not in nodes
    d = nodes['dialogue']
    params = {k: v for p in d.kwargs['parameters'] for k, v in p.items()}
    assert (params['backend'], params['weights_path'], params['engine_path']) == (
        'model', '/w.safetensors', '/w/graphs')
    assert (params['runtime'], params['precision'], params['force_engine_update']) == (
        'tensorrt', 'fp16', True)
    assert d.kwargs['namespace'] == 'robot1' and isinstance(d, LifecycleNode)


# -- the checks catch planted mistakes ---------------------------------------------------


def test_planted_unused_launch_argument_is_caught(monkeypatch, tmp_path):
    text = (LAUNCH / 'facebot.launch.py').read_text().replace(
        "    ('log_level', 'info', 'log level of every node'),\n",
        "    ('log_level', 'info', 'log level of every node'),\n"
        "    ('start_camera', 'true', 'start a camera driver'),\n")
    assert 'start_camera' in text
    bad = tmp_path / 'facebot.launch.py'
    bad.write_text(text)
    exp = expand(bad, monkeypatch)
    assert unused_arguments(exp) == {'facebot.launch.py': ['start_camera']}


def test_launch_files_parse_as_python():
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert 'generate_launch_description' in names, path
