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

"""Record a facebot session with ros2 bag (MCAP), for replay and offline evaluation.

    ros2 launch facebot record.launch.py                 # -> facebot_bag_<time>/
    ros2 launch facebot record.launch.py bag:=/data/session1 namespace:=robot1

Replay on a machine with facebot's interfaces built (inputs only, to re-run the dialogue):

    ros2 bag info /data/session1
    ros2 bag play /data/session1 --topics /audio/in /camera/image_raw
    # or everything, e.g. to drive the head and display from a recorded conversation:
    ros2 bag play /data/session1

``facebot bag`` (the standalone CLI) also reads such a bag without ROS 2.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

TOPICS = ('audio/in', 'audio/out', 'audio/played', 'camera/image_raw', 'face/flame',
          'face/image', 'dialogue/state', 'dialogue/text', 'head/joint_commands',
          'head_position_controller/commands', 'head_trajectory_controller/joint_trajectory')
GLOBAL_TOPICS = ('/joint_states', '/diagnostics', '/clock', '/tf', '/tf_static')


def _record(context):
    ns = LaunchConfiguration('namespace').perform(context).strip('/')
    prefix = f'/{ns}/' if ns else '/'
    topics = [prefix + t for t in TOPICS] + list(GLOBAL_TOPICS)
    if LaunchConfiguration('with_images').perform(context).lower() != 'true':
        topics = [t for t in topics if not t.endswith(('image_raw', 'face/image'))]
    cmd = ['ros2', 'bag', 'record', '--storage', LaunchConfiguration('storage').perform(context)]
    bag = LaunchConfiguration('bag').perform(context)
    if bag:
        cmd += ['--output', bag]
    return [ExecuteProcess(cmd=cmd + topics, output='screen')]


def generate_launch_description():
    """``ros2 bag record`` of facebot's topics."""
    return LaunchDescription([
        DeclareLaunchArgument('bag', default_value='',
                              description='output folder; empty = rosbag2_<time>'),
        DeclareLaunchArgument('namespace', default_value='',
                              description="namespace of facebot's topics"),
        DeclareLaunchArgument('storage', default_value='mcap',
                              description='rosbag2 storage plugin (mcap; sqlite3 on Humble '
                                          'without rosbag2_storage_mcap)'),
        DeclareLaunchArgument('with_images', default_value='false',
                              description='also record camera and face images (large)'),
        OpaqueFunction(function=_record),
    ])
