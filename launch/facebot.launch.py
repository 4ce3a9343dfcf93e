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

"""facebot's nodes: microphone, speaker, dialogue (lifecycle), head driver, face display,
face perception (camera -> the user's FLAME and position for the dialogue).

    ros2 launch facebot facebot.launch.py
    ros2 launch facebot facebot.launch.py backend:=scripted namespace:=robot1 start_audio:=false
    ros2 launch facebot facebot.launch.py weights:=/models/facebot.safetensors \
        engine:=/models/facebot.plan head_config:=/robots/my_head.yaml

Each node gets its section of ``params_file`` (config/facebot_nodes.yaml by default) as
parameters, so the file works under any namespace; launch arguments that are not empty
override it. The dialogue node is configured and activated automatically unless
``autostart:=false`` (then: ``ros2 lifecycle set <ns>/dialogue configure``, ``activate``).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction
from launch.actions import RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition
import yaml

NODES = ('audio_capture', 'audio_player', 'dialogue', 'head_driver', 'face_display',
         'face_perception')
ARGUMENTS = (
    ('backend', '', 'speech backend (dialogue backend parameter); empty = params_file'),
    ('weights', '', 'model weights file (dialogue weights_path); empty = params_file'),
    ('engine', '', 'exported graphs / engines folder (dialogue engine_path); empty = params_file'),
    ('runtime', '', 'model runtime: torch, onnxruntime or tensorrt; empty = params_file'),
    ('precision', '', 'exported graphs precision: fp32, fp16 or int8; empty = params_file'),
    ('force_engine_update', '', 'true: re-export graphs and rebuild engines; empty = params_file'),
    ('model_config', '', 'model configuration (dialogue model_config); empty = params_file'),
    ('head_config', '', 'head YAML for head_driver; empty = params_file / reference head'),
    ('display_config', '', 'face display YAML; empty = params_file / package default'),
    ('params_file', '', 'node parameter file; empty = the package facebot_nodes.yaml'),
    ('namespace', '', 'namespace of every node and topic'),
    ('use_sim_time', 'false', 'use the /clock topic (simulation)'),
    ('camera_topic', 'camera/image_raw',
     'camera image topic the dialogue and face_perception nodes watch'),
    ('autostart', 'true', 'configure and activate the dialogue node at start'),
    ('start_audio', 'true', 'start audio_capture (microphone) and audio_player (speaker)'),
    ('start_dialogue', 'true', 'start the dialogue node'),
    ('start_head', 'true', 'start head_driver'),
    ('start_display', 'true', 'start face_display'),
    ('start_perception', 'true', 'start face_perception (the user\'s face from the camera)'),
    ('log_level', 'info', 'log level of every node'),
)


def _flag(context, name):
    return LaunchConfiguration(name).perform(context).strip().lower() in ('true', '1', 'yes')


def _node_params(context):
    path = LaunchConfiguration('params_file').perform(context) or os.path.join(
        get_package_share_directory('facebot'), 'config', 'facebot_nodes.yaml')
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    out = {}
    for name in NODES:
        section = data.get(name) or data.get('/**/' + name) or {}
        out[name] = dict(section.get('ros__parameters') or {})
    return out


def _launch_nodes(context):
    params = _node_params(context)
    namespace = LaunchConfiguration('namespace').perform(context)
    common = {'use_sim_time': _flag(context, 'use_sim_time')}
    overrides = {
        'dialogue': {'backend': 'backend', 'weights_path': 'weights', 'engine_path': 'engine',
                     'model_config': 'model_config', 'runtime': 'runtime',
                     'precision': 'precision'},
        'head_driver': {'head_config': 'head_config'},
        'face_display': {'display_config': 'display_config'},
    }
    for node, mapping in overrides.items():
        for param, arg in mapping.items():
            value = LaunchConfiguration(arg).perform(context)
            if value:
                params[node][param] = value
    if LaunchConfiguration('force_engine_update').perform(context):
        params['dialogue']['force_engine_update'] = _flag(context, 'force_engine_update')
    ros_args = ['--ros-args', '--log-level', LaunchConfiguration('log_level').perform(context)]
    wanted = {
        'audio_capture': _flag(context, 'start_audio'),
        'audio_player': _flag(context, 'start_audio'),
        'dialogue': _flag(context, 'start_dialogue'),
        'head_driver': _flag(context, 'start_head'),
        'face_display': _flag(context, 'start_display'),
        'face_perception': _flag(context, 'start_perception'),
    }
    camera = LaunchConfiguration('camera_topic').perform(context)
    remap = {'face_perception': [('camera/image_raw', camera),
                                 ('camera/image_raw/compressed', camera + '/compressed')]}
    actions = []
    for name in NODES:
        if not wanted[name] or name == 'dialogue':
            continue
        actions.append(Node(package='facebot', executable=name, name=name,
                            namespace=namespace, output='screen', arguments=ros_args,
                            parameters=[params[name], common],
                            remappings=remap.get(name, [])))
    if wanted['dialogue']:
        dialogue = LifecycleNode(package='facebot', executable='dialogue', name='dialogue',
                                 namespace=namespace, output='screen', arguments=ros_args,
                                 parameters=[params['dialogue'], common],
                                 remappings=[('camera/image_raw', camera)])
        actions.append(dialogue)
        if _flag(context, 'autostart'):
            actions.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=dialogue, start_state='configuring',
                goal_state='inactive',
                entities=[EmitEvent(event=ChangeState(
                    lifecycle_node_matcher=matches_action(dialogue),
                    transition_id=Transition.TRANSITION_ACTIVATE))])))
            actions.append(EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(dialogue),
                transition_id=Transition.TRANSITION_CONFIGURE)))
    return actions


def generate_launch_description():
    """All of facebot's nodes, each optional."""
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_launch_nodes)])
