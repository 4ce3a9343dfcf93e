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

"""facebot's head in Gazebo Sim (Harmonic, ROS 2 Jazzy) with the scripted backend.

    ros2 launch facebot sim.launch.py
    ros2 launch facebot sim.launch.py gz_args:='-r -s empty.sdf' start_audio:=false

Starts Gazebo with an empty world, robot_state_publisher with the head's URDF (the xacro
expanded with sim_mode:=gazebo, which loads gz_ros2_control with
config/head_controllers.yaml), spawns the head from robot_description, then the
joint_state_broadcaster and head_position_controller spawners (each given the controllers
file with --param-file, which Jazzy's controllers need), a ros_gz_bridge for /clock and a
camera, and facebot's nodes (facebot.launch.py) on simulated time. The reference URDF has
no camera sensor: ``gz_camera_topic`` names the Gazebo image topic of a camera you add.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.actions import RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import Command, FindExecutable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    """Gazebo, the head, its controllers, the bridge and facebot's nodes."""
    share = get_package_share_directory('facebot')
    xacro_file = os.path.join(share, 'urdf', 'facebot_head.urdf.xacro')
    controllers = os.path.join(share, 'config', 'head_controllers.yaml')
    gz_camera = LaunchConfiguration('gz_camera_topic')

    robot_description = ParameterValue(
        Command([FindExecutable(name='xacro'), ' ', xacro_file, ' sim_mode:=gazebo',
                 ' controllers_file:=', controllers]),
        value_type=str)

    gazebo = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(
            get_package_share_directory('ros_gz_sim'), 'launch', 'gz_sim.launch.py')),
        launch_arguments={'gz_args': LaunchConfiguration('gz_args')}.items())

    state_publisher = Node(
        package='robot_state_publisher', executable='robot_state_publisher',
        output='screen',
        parameters=[{'robot_description': robot_description, 'use_sim_time': True}])

    spawn = Node(
        package='ros_gz_sim', executable='create', output='screen',
        arguments=['-topic', 'robot_description', '-name', 'facebot_head',
                   '-allow_renaming', 'true'])

    def spawner(controller):
        return Node(package='controller_manager', executable='spawner', output='screen',
                    arguments=[controller, '--controller-manager', '/controller_manager',
                               '--param-file', controllers],
                    parameters=[{'use_sim_time': True}])

    controllers_after_spawn = RegisterEventHandler(OnProcessExit(
        target_action=spawn,
        on_exit=[spawner('joint_state_broadcaster'), spawner('head_position_controller')]))

    bridge = Node(
        package='ros_gz_bridge', executable='parameter_bridge', output='screen',
        arguments=['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
                   [gz_camera, '@sensor_msgs/msg/Image[gz.msgs.Image']],
        remappings=[(gz_camera, 'camera/image_raw')],
        parameters=[{'use_sim_time': True}])

    facebot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'facebot.launch.py')),
        launch_arguments={
            'backend': 'scripted',
            'use_sim_time': 'true',
            'start_audio': LaunchConfiguration('start_audio'),
            'start_display': LaunchConfiguration('start_display'),
        }.items())

    return LaunchDescription([
        DeclareLaunchArgument('gz_args', default_value='-r empty.sdf',
                              description="Gazebo's arguments: -r runs at once; add -s for "
                                          'no GUI; the last one is the world file'),
        DeclareLaunchArgument('gz_camera_topic', default_value='/camera/image',
                              description='Gazebo image topic bridged to camera/image_raw'),
        DeclareLaunchArgument('start_audio', default_value='true',
                              description='start the microphone and speaker nodes'),
        DeclareLaunchArgument('start_display', default_value='true',
                              description='start the face display node'),
        gazebo, state_publisher, spawn, controllers_after_spawn, bridge, facebot,
    ])
