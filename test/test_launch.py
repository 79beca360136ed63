"""launch/segment.launch.py: arguments, remaps, parameters, environment and the RViz condition.

`launch`/`launch_ros` are not installable on this machine kind, so the file is evaluated with
minimal stand-ins (only the API the file uses) swapped into sys.modules and removed afterwards;
where the real modules are installed, the file is also evaluated with them. Each resulting Node action is turned
into the command launch_ros would run (``<prefix>/lib/<pkg>/<exe> <arguments> --ros-args
-r __node:=... -r __ns:=... --params-file ... -r from:=to``), which is started as a subprocess
with a tiny checkpoint; its name, namespace, remapped topics, parameters and lifecycle state are
checked over ROS.
"""
import contextlib
import importlib.util
import os
import sys
import types

import pytest
import rclpy
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from lifecycle_msgs.srv import GetState
from rclpy.executors import SingleThreadedExecutor

from ros_helpers import NodeProcess, spin_until

pytestmark = pytest.mark.ros
PKG = 'evf_sam_ros'


# ---------------------------------------------------------------- minimal launch stand-ins
class _Context:
    def __init__(self, configs):
        self.launch_configurations = dict(configs)
        self.environment = {}


def _text(value, context):
    if hasattr(value, 'perform'):
        return value.perform(context)
    if isinstance(value, (list, tuple)):
        return ''.join(_text(v, context) for v in value)
    return str(value)


def _stand_in_modules():
    launch = types.ModuleType('launch')
    actions = types.ModuleType('launch.actions')
    conditions = types.ModuleType('launch.conditions')
    substitutions = types.ModuleType('launch.substitutions')
    launch_ros = types.ModuleType('launch_ros')
    ros_actions = types.ModuleType('launch_ros.actions')
    ros_subs = types.ModuleType('launch_ros.substitutions')

    class LaunchDescription:
        def __init__(self, entities=()):
            self.entities = list(entities)

    class Action:
        def __init__(self, condition=None):
            self.condition = condition

    class DeclareLaunchArgument(Action):
        def __init__(self, name, default_value=None, description='', **kw):
            super().__init__(kw.get('condition'))
            self.name, self.default_value, self.description = name, default_value, description

    class OpaqueFunction(Action):
        def __init__(self, function, args=None, kwargs=None, **kw):
            super().__init__(kw.get('condition'))
            self.function, self.args, self.kwargs = function, args or [], kwargs or {}

    class SetEnvironmentVariable(Action):
        def __init__(self, name, value, **kw):
            super().__init__(kw.get('condition'))
            self.name, self.value = name, value

    class IfCondition:
        def __init__(self, predicate):
            self.predicate = predicate

        def evaluate(self, context):
            return _text(self.predicate, context).strip().lower() in ('true', '1')

    class LaunchConfiguration:
        def __init__(self, name, default=None):
            self.name, self.default = name, default

        def perform(self, context):
            if self.name in context.launch_configurations:
                return context.launch_configurations[self.name]
            if self.default is None:
                raise KeyError(f'launch configuration {self.name} is not set')
            return _text(self.default, context)

    class Node(Action):
        def __init__(self, *, package, executable, name=None, namespace=None, parameters=(),
                     remappings=(), arguments=(), condition=None, **kw):
            super().__init__(condition)
            self.package, self.executable, self.name = package, executable, name
            self.namespace, self.parameters = namespace, list(parameters)
            self.remappings, self.arguments, self.extra = list(remappings), list(arguments), kw

    class FindPackageShare:
        def __init__(self, package):
            self.package = package

        def perform(self, context):
            return get_package_share_directory(self.package)

    launch.LaunchDescription = LaunchDescription
    actions.DeclareLaunchArgument = DeclareLaunchArgument
    actions.OpaqueFunction = OpaqueFunction
    actions.SetEnvironmentVariable = SetEnvironmentVariable
    conditions.IfCondition = IfCondition
    substitutions.LaunchConfiguration = LaunchConfiguration
    ros_actions.Node = Node
    ros_subs.FindPackageShare = FindPackageShare
    launch.actions, launch.conditions, launch.substitutions = actions, conditions, substitutions
    launch_ros.actions, launch_ros.substitutions = ros_actions, ros_subs
    return {'launch': launch, 'launch.actions': actions, 'launch.conditions': conditions,
            'launch.substitutions': substitutions, 'launch_ros': launch_ros,
            'launch_ros.actions': ros_actions, 'launch_ros.substitutions': ros_subs}


@contextlib.contextmanager
def _stand_in_launch_api():
    """Swap the stand-ins in for `launch`/`launch_ros` (real or absent) and restore afterwards."""
    mods = _stand_in_modules()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _check_with_real_launch_api():
    """Where launch/launch_ros are installed (a ROS install): the file also evaluates with them."""
    import launch
    import launch_ros.actions

    ld = _load_launch_file().generate_launch_description()
    context = launch.LaunchContext()
    for entity in ld.entities:
        if isinstance(entity, launch.actions.DeclareLaunchArgument):
            entity.execute(context)
    actions = [a for e in ld.entities if isinstance(e, launch.actions.OpaqueFunction)
               for a in (e.execute(context) or [])]
    assert any(isinstance(a, launch_ros.actions.Node) for a in actions)


def _load_launch_file():
    path = os.path.join(get_package_share_directory(PKG), 'launch', 'segment.launch.py')
    spec = importlib.util.spec_from_file_location('evf_sam_segment_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluate(launch_args):
    """-> (declared argument names, environment, [node actions]), evaluated with the stand-in API."""
    with _stand_in_launch_api():
        ld = _load_launch_file().generate_launch_description()
        declared = {e.name: e for e in ld.entities if type(e).__name__ == 'DeclareLaunchArgument'}
        unknown = set(launch_args) - set(declared)
        assert not unknown, f'not declared: {unknown}'
        ctx = _Context({n: _text(e.default_value, None) for n, e in declared.items()})
        ctx.launch_configurations.update(launch_args)
        env, nodes = {}, []
        pending = [e for e in ld.entities if type(e).__name__ != 'DeclareLaunchArgument']
        while pending:
            e = pending.pop(0)
            if e.condition is not None and not e.condition.evaluate(ctx):
                continue
            kind = type(e).__name__
            if kind == 'OpaqueFunction':
                pending = list(e.function(ctx, *e.args, **e.kwargs) or []) + pending
            elif kind == 'SetEnvironmentVariable':
                env[_text(e.name, ctx)] = _text(e.value, ctx)
            elif kind == 'Node':
                nodes.append((e, ctx))
        return set(declared), env, nodes


def _command(node, ctx, tmpdir):
    """The command launch_ros runs for a Node action."""
    exe = os.path.join(get_package_prefix(node.package), 'lib', node.package, node.executable)
    cmd = [exe] + [_text(a, ctx) for a in node.arguments] + ['--ros-args']
    if node.name:
        cmd += ['-r', f'__node:={_text(node.name, ctx)}']
    ns = _text(node.namespace, ctx) if node.namespace is not None else ''
    if ns:
        cmd += ['-r', f"__ns:={ns if ns.startswith('/') else '/' + ns}"]
    for i, p in enumerate(node.parameters):
        if isinstance(p, dict):
            path = os.path.join(tmpdir, f'params_{i}.yaml')
            with open(path, 'w') as f:
                f.write('/**:\n  ros__parameters:\n')
                for k, v in p.items():
                    val = ('true' if v else 'false') if isinstance(v, bool) else repr(v) \
                        if isinstance(v, str) else v
                    f.write(f'    {k}: {val}\n')
            cmd += ['--params-file', path]
        else:
            cmd += ['--params-file', _text(p, ctx)]
    for a, b in node.remappings:
        cmd += ['-r', f'{_text(a, ctx)}:={_text(b, ctx)}']
    return cmd


def test_launch_arguments_and_rviz_condition():
    declared, env, nodes = _evaluate({})
    for name in ('model_path', 'device', 'dtype', 'params_file', 'image_topic',
                 'camera_info_topic', 'depth_topic', 'prompt_topic', 'namespace', 'rviz',
                 'log_level', 'use_shm'):
        assert name in declared
    assert [n.executable for n, _ in nodes] == ['segment_node']   # rviz off by default
    share = get_package_share_directory(PKG)
    assert env['FASTDDS_DEFAULT_PROFILES_FILE'] == os.path.join(share, 'config', 'fastdds_shm.xml')
    node, ctx = nodes[0]
    # empty model/device/dtype arguments keep the params file values
    assert node.parameters[0].endswith('config/segment.yaml')
    assert set(node.parameters[1]) == {'autostart', 'use_sim_time'}
    _, env, nodes = _evaluate({'rviz': 'true', 'use_shm': 'false'})
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' not in env
    rviz = [n for n, _ in nodes if n.executable == 'rviz2']
    assert rviz and rviz[0].arguments[1].endswith('config/segment.rviz')
    for f in ('segment.yaml', 'segment.rviz', 'fastdds_shm.xml'):
        assert os.path.isfile(os.path.join(share, 'config', f))
    if importlib.util.find_spec('launch') and importlib.util.find_spec('launch_ros'):
        _check_with_real_launch_api()
    else:  # the stand-ins are gone again
        assert 'launch_ros' not in sys.modules and 'launch' not in sys.modules


def _wait(pred, timeout, executor):
    return spin_until(executor, pred, timeout=timeout, step=0.1)


def test_launch_starts_the_node_with_args_remaps_and_params(ros_context, ros_domain_id,
                                                            tiny_checkpoint_sam1, tmp_path):
    args = {'namespace': 'cam1', 'model_path': str(tiny_checkpoint_sam1), 'device': 'cpu',
            'dtype': 'fp32', 'image_topic': '/cam1/color/image_raw',
            'camera_info_topic': '/cam1/color/camera_info', 'depth_topic': '/cam1/depth/aligned',
            'prompt_topic': '/speech/text', 'log_level': 'info', 'mode': 'once'}
    _, env, nodes = _evaluate(args)
    assert len(nodes) == 1
    cmd = _command(*nodes[0], str(tmp_path))
    assert os.access(cmd[0], os.X_OK)
    proc = NodeProcess(cmd, ros_domain_id, log_path=str(tmp_path / 'node.log'), **env)
    tester = rclpy.create_node('launch_tester', context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(tester)
    try:
        expected = [('/cam1/color/image_raw', 'sensor_msgs/msg/Image'),
                    ('/cam1/color/camera_info', 'sensor_msgs/msg/CameraInfo'),
                    ('/cam1/depth/aligned', 'sensor_msgs/msg/Image'),
                    ('/speech/text', 'std_msgs/msg/String'),
                    ('/cam1/segmentations', 'evf_sam_ros/msg/SegmentationArray'),
                    ('/cam1/mask', 'sensor_msgs/msg/Image'),
                    ('/cam1/centroid', 'geometry_msgs/msg/PointStamped'),
                    ('/cam1/markers', 'visualization_msgs/msg/MarkerArray'),
                    ('/diagnostics', 'diagnostic_msgs/msg/DiagnosticArray')]

        def ready():  # endpoints are discovered one by one: wait for all of them
            names = tester.get_node_names_and_namespaces()
            topics = dict(tester.get_topic_names_and_types())
            return ('evf_sam', '/cam1') in names and all(
                t in topics and typ in topics[t] for t, typ in expected)
        _wait(ready, 90, ex)
        topics = dict(tester.get_topic_names_and_types())
        for t, typ in expected:
            assert t in topics and typ in topics[t], (t, topics.get(t), proc.output()[-2000:])
        subs = tester.get_subscriber_names_and_types_by_node('evf_sam', '/cam1')
        assert '/cam1/color/image_raw' in dict(subs)
        # lifecycle: autostart -> active
        cli = tester.create_client(GetState, '/cam1/evf_sam/get_state')
        assert cli.wait_for_service(timeout_sec=20)
        fut = cli.call_async(GetState.Request())
        assert _wait(fut.done, 20, ex)
        assert fut.result().current_state.label == 'active'
        # parameters: launch arguments override, the params file gives the rest
        from rclpy.parameter_client import AsyncParameterClient
        pc = AsyncParameterClient(tester, '/cam1/evf_sam')
        assert pc.wait_for_services(timeout_sec=20)
        names = ['model_path', 'device', 'dtype', 'mode', 'score_threshold', 'max_prompts',
                 'autostart', 'image_qos']
        fut = pc.get_parameters(names)
        assert _wait(fut.done, 20, ex)
        values = dict(zip(names, [rclpy.parameter.parameter_value_to_python(v)
                                  for v in fut.result().values]))
        assert values == {'model_path': str(tiny_checkpoint_sam1), 'device': 'cpu',
                          'dtype': 'fp32', 'mode': 'once', 'score_threshold': 0.5,
                          'max_prompts': 8, 'autostart': True, 'image_qos': 'sensor_data'}
        assert proc.alive()
    finally:
        ex.shutdown()
        tester.destroy_node()
        rc = proc.stop()
    out = proc.output()
    assert 'Traceback' not in out, out[-3000:]
    assert rc in (0, -2, 130), (rc, out[-2000:])
