"""Start the evf_sam segmentation node (and optionally RViz).

    ros2 launch evf_sam_ros segment.launch.py model_path:=YxZhang/evf-sam2 \\
        image_topic:=/camera/camera/color/image_raw \\
        camera_info_topic:=/camera/camera/color/camera_info \\
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw

(the camera topics above are the defaults: realsense2_camera's). Then:
``ros2 topic pub --once /evf_sam/prompt std_msgs/msg/String "{data: 'the red mug'}"``.
Inputs and outputs are relative to ``namespace`` (default ``evf_sam``): ``/evf_sam/prompt``,
``/evf_sam/mask``, ``/evf_sam/segmentations``, ...; the node is ``/evf_sam/evf_sam``
(``namespace:=''`` puts everything at the root).

Launch arguments that are left empty keep the value of the params file (``params_file``,
default ``config/segment.yaml``); non-empty ones override it. ``log_level`` sets the level of the
node's own logger only (rcl/rmw stay at INFO).

Nothing here restricts DDS discovery or transports: the node is visible to other machines as any
ROS node is. ``large_images:=true`` (opt-in, Fast DDS only) gives the node the Fast DDS profile
``config/fastdds_large_images.xml`` (a 64 MiB shared-memory segment plus the usual UDP transport,
so remote subscribers keep working), set for this node only; a ``FASTDDS_DEFAULT_PROFILES_FILE``
already in the environment is kept. The camera driver needs the same profile (config/README.md).

``rviz:=true`` starts RViz with ``config/segment.rviz``, its topics rewritten for ``namespace``.
RViz is optional (not a dependency of this package): without it the launch stops before
starting anything and says how to install it.
"""
import os
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch_ros.actions import Node
from launch.substitutions import LaunchConfiguration

PACKAGE = 'evf_sam_ros'
NODE_NAME = 'evf_sam'
RVIZ_NAMESPACE = '/evf_sam'   # the namespace the topics of config/segment.rviz are written for

# name -> (default, description). '' = keep the params file's value / the node's default.
ARGUMENTS = {
    'namespace': ('evf_sam', 'namespace of the node and its topics (one per camera); "" = root'),
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
    'autostart': ('', 'configure and activate the lifecycle node at start ("" = params file)'),
    'use_sim_time': ('', 'use /clock ("" = params file)'),
    'large_images': ('false', 'Fast DDS only: give the node config/fastdds_large_images.xml '
                     '(shared memory for large images, UDP kept); the camera needs it too'),
    'fastdds_profile': ('', 'Fast DDS XML profile for large_images:=true '
                        '(default: <share>/evf_sam_ros/config/fastdds_large_images.xml)'),
    'rviz': ('false', 'start RViz (optional, not a dependency) with the overlay image + markers'),
    'rviz_config': ('', 'RViz config (default: <share>/evf_sam_ros/config/segment.rviz, '
                    'topics rewritten for namespace)'),
    'log_level': ('', 'level of the node\'s logger: debug | info | warn | error ("" = info)'),
}
TRUE = ('true', '1', 'yes', 'on')
FALSE = ('false', '0', 'no', 'off')


def _flag(name, value):
    v = value.strip().lower()
    if v in TRUE or v in FALSE:
        return v in TRUE
    raise ValueError(f"launch argument {name}:={value!r}: expected true or false")


def normalize_namespace(namespace):
    """'' or '/' -> '/' (root); 'a/b', '/a/b/' -> '/a/b'."""
    parts = [p for p in namespace.strip().split('/') if p]
    return '/' + '/'.join(parts)


def node_logger_name(namespace, name=NODE_NAME):
    """rcl's logger name of a node: 'cam1.evf_sam' for /cam1/evf_sam, 'evf_sam' at the root."""
    return '.'.join([p for p in namespace.split('/') if p] + [name])


def namespaced_rviz_config(text, namespace):
    """The RViz config `text` with its `/evf_sam/...` topics moved to `namespace`."""
    ns = normalize_namespace(namespace)
    if ns == RVIZ_NAMESPACE:
        return text
    prefix = '' if ns == '/' else ns
    return text.replace(f'Value: {RVIZ_NAMESPACE}/', f'Value: {prefix}/')


def _package_installed(name):
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        get_package_prefix(name)
        return True
    except PackageNotFoundError:
        return False


def _launch_setup(context, *args, **kwargs):
    from ament_index_python.packages import get_package_share_directory

    def arg(name):
        return LaunchConfiguration(name).perform(context)

    share = get_package_share_directory(PACKAGE)
    namespace = normalize_namespace(arg('namespace'))
    want_rviz = _flag('rviz', arg('rviz'))
    # Checked before anything starts: a missing RViz must not leave a node running alone.
    if want_rviz and not _package_installed('rviz2'):
        raise RuntimeError(
            "rviz:=true, but RViz 2 (package 'rviz2') is not installed; nothing was started. "
            "Install it (sudo apt install ros-$ROS_DISTRO-rviz2) or launch with rviz:=false "
            "(RViz is optional; it can also run on another machine with config/segment.rviz).")

    params_file = arg('params_file') or os.path.join(share, 'config', 'segment.yaml')
    overrides = {}
    for name in ('autostart', 'use_sim_time'):
        if arg(name):
            overrides[name] = _flag(name, arg(name))
    for name in ('model_path', 'device', 'dtype', 'mode', 'initial_prompts', 'image_transport'):
        if arg(name):
            overrides[name] = arg(name)
    remappings = [('image', arg('image_topic')), ('camera_info', arg('camera_info_topic')),
                  ('depth', arg('depth_topic')), ('prompt', arg('prompt_topic'))]
    # image_transport:=compressed subscribes <resolved image>/compressed, so the image remap
    # covers it too (as image_transport does)
    remappings = [(a, b) for a, b in remappings if b and b != a]
    ros_args = []
    if arg('log_level'):
        ros_args += ['--log-level', f"{node_logger_name(namespace)}:={arg('log_level').lower()}"]

    actions = []
    env = {}
    if _flag('large_images', arg('large_images')):
        profile = arg('fastdds_profile') or os.path.join(share, 'config', 'fastdds_large_images.xml')
        rmw = os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
        user_profile = os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE')
        if not rmw.startswith('rmw_fastrtps'):
            actions.append(LogInfo(msg=f'large_images:=true has no effect with {rmw}: it sets a '
                                   'Fast DDS profile; see config/README.md for Cyclone DDS/Zenoh'))
        elif user_profile:
            actions.append(LogInfo(msg='large_images:=true: keeping your FASTDDS_DEFAULT_PROFILES_FILE='
                                   f'{user_profile} (it needs a large shared-memory segment, '
                                   f'see {profile})'))
        else:
            env['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
            actions.append(LogInfo(msg=f'large_images:=true: Fast DDS profile {profile} for the '
                                   'node (start the camera driver with it too)'))
    actions.append(Node(
        package=PACKAGE,
        executable='segment_node',
        name=NODE_NAME,
        namespace=namespace,
        parameters=[params_file, overrides],
        remappings=remappings,
        ros_arguments=ros_args,
        additional_env=env or None,
        output='screen',
        emulate_tty=True,
    ))
    if want_rviz:
        config = arg('rviz_config') or os.path.join(share, 'config', 'segment.rviz')
        with open(config) as f:
            text = namespaced_rviz_config(f.read(), namespace)
        fd, rviz_config = tempfile.mkstemp(prefix='evf_sam_', suffix='.rviz')
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                            arguments=['-d', rviz_config], output='screen'))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=desc)
                for name, (default, desc) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_setup)])
