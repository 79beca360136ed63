"""Start the evf_sam segmentation node (and optionally RViz).

    ros2 launch evf_sam_ros segment.launch.py image_topic:=/camera/color/image_raw \\
        depth_topic:=/camera/aligned_depth_to_color/image_raw model_path:=YxZhang/evf-sam2

Then: ``ros2 topic pub --once /evf_sam/prompt std_msgs/String "{data: 'the red mug'}"``
(the prompt topic is ``<namespace>/prompt`` unless ``prompt_topic`` is given).

Launch arguments that are left empty keep the value of the params file (``params_file``,
default ``config/segment.yaml``); non-empty ones override it. ``use_shm:=true`` (default) sets
``FASTDDS_DEFAULT_PROFILES_FILE`` to ``config/fastdds_shm.xml`` for the processes started here,
so that large best-effort images cross processes (start the camera driver with the same variable
or from this launch file, see the comment in that file).
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'evf_sam_ros'

# name -> (default, description). '' = keep the params file's value / the node's default.
ARGUMENTS = {
    'namespace': ('evf_sam', 'namespace of the node (one per camera); outputs are ~/<name>'),
    'params_file': ('', 'parameters YAML (default: <share>/evf_sam_ros/config/segment.yaml)'),
    'model_path': ('', 'checkpoint directory or cached Hugging Face id ("" = params file)'),
    'device': ('', 'auto | cpu | cuda | cuda:N ("" = params file)'),
    'dtype': ('', 'auto | fp32 | fp16 | bf16 ("" = params file)'),
    'mode': ('', 'continuous | once ("" = params file)'),
    'initial_prompts': ('', 'prompts active at start, ";"-separated ("" = params file)'),
    'image_topic': ('/camera/camera/color/image_raw', 'colour image (sensor_msgs/Image)'),
    'camera_info_topic': ('/camera/camera/color/camera_info', 'camera_info of the colour image'),
    'depth_topic': ('/camera/camera/aligned_depth_to_color/image_raw',
                    'depth aligned to the colour image (16UC1 mm or 32FC1 m)'),
    'prompt_topic': ('prompt', 'std_msgs/String text commands (relative = in the namespace)'),
    'image_transport': ('', 'raw | compressed ("" = params file)'),
    'autostart': ('true', 'configure and activate the lifecycle node at start'),
    'use_shm': ('true', 'use the shared-memory Fast DDS profile (large images between processes)'),
    'shm_profile': ('', 'Fast DDS XML profile (default: <share>/evf_sam_ros/config/fastdds_shm.xml)'),
    'rviz': ('false', 'start RViz with config/segment.rviz (overlay image + markers)'),
    'rviz_config': ('', 'RViz config (default: <share>/evf_sam_ros/config/segment.rviz)'),
    'log_level': ('info', 'debug | info | warn | error'),
    'use_sim_time': ('false', 'use /clock'),
}


def _share(context):
    return FindPackageShare(PACKAGE).perform(context)


def _launch_setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    share = _share(context)
    params_file = arg('params_file') or os.path.join(share, 'config', 'segment.yaml')
    overrides = {'autostart': arg('autostart').lower() in ('true', '1', 'yes'),
                 'use_sim_time': arg('use_sim_time').lower() in ('true', '1', 'yes')}
    for name in ('model_path', 'device', 'dtype', 'mode', 'initial_prompts', 'image_transport'):
        if arg(name):
            overrides[name] = arg(name)
    remappings = [('image', arg('image_topic')), ('camera_info', arg('camera_info_topic')),
                  ('depth', arg('depth_topic')), ('prompt', arg('prompt_topic'))]
    remappings = [(a, b) for a, b in remappings if b and b != a]
    # image_transport:=compressed subscribes <resolved image>/compressed, so the image remap
    # covers it too (as image_transport does)
    actions = []
    if arg('use_shm').lower() in ('true', '1', 'yes'):
        profile = arg('shm_profile') or os.path.join(share, 'config', 'fastdds_shm.xml')
        actions.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', profile))
    actions.append(Node(
        package=PACKAGE,
        executable='segment_node',
        name='evf_sam',
        namespace=arg('namespace'),
        parameters=[params_file, overrides],
        remappings=remappings,
        arguments=['--ros-args', '--log-level', arg('log_level')],
        output='screen',
        emulate_tty=True,
    ))
    rviz_config = arg('rviz_config') or os.path.join(share, 'config', 'segment.rviz')
    actions.append(Node(
        package='rviz2',
        executable='rviz2',
        name='rviz2',
        arguments=['-d', rviz_config],
        condition=IfCondition(LaunchConfiguration('rviz')),
        output='screen',
    ))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=desc)
                for name, (default, desc) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_setup)])
