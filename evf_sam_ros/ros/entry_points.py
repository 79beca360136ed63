"""Console entry points installed as ``lib/evf_sam_ros/<name>`` (see CMakeLists.txt), and the
spin-until-shutdown loop they share."""
from __future__ import annotations

import sys


def spin_once(executor, timeout_sec: float) -> None:
    """``executor.spin_once`` that survives rclpy's destroy race (ros2/rclpy#1284, #1206): a lifecycle
    transition that destroys a subscription in another executor thread while this one builds its wait
    set raises ``InvalidHandle`` from an event handler's ``add_to_wait_set``. The next wait no longer
    includes the entity, so that one is ignored; an ``InvalidHandle`` from a callback is raised."""
    from rclpy.exceptions import InvalidHandle
    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except InvalidHandle as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_name != 'add_to_wait_set':
            tb = tb.tb_next
        if tb is None:
            raise


def run_node(make_node, args=None, executor_factory=None) -> int:
    """``rclpy.init``, spin ``make_node()`` until Ctrl-C or shutdown, then tear down in the order
    rclpy needs (executor shut down before the node is destroyed, or the process aborts)."""
    import signal
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    # Our own Ctrl-C / SIGTERM handling (rclpy's would shut the context down under a transition or a
    # publishing worker), so the teardown below runs in order while the context is still valid. While the
    # node is being made (the model loads) it is a KeyboardInterrupt; once spinning, only a flag that the
    # loop checks every 0.25 s: an exception raised at an arbitrary point of rclpy's executor could leave
    # one of its locks held and hang the teardown.
    stop = threading.Event()

    def interrupt(signum, frame):
        if not spinning:
            raise KeyboardInterrupt
        stop.set()
    spinning = False
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - rclpy raises RCLError for unparsable --ros-args
        print(f'error: the command-line arguments were not accepted: {exc}\n'
              "Quote parameter values that YAML would misread, e.g. -p \"model_path:='fake:'\" or "
              "-p \"model_path:=''\"", file=sys.stderr)
        return 2
    executor = (executor_factory or SingleThreadedExecutor)()
    node = None
    try:
        node = make_node()
        executor.add_node(node)
        finished = getattr(node, 'finished', None) or threading.Event()   # set after a shutdown transition
        spinning = True
        # short waits: a signal or the end of the node is handled within 0.25 s even with no traffic
        while rclpy.ok() and not stop.is_set() and not finished.is_set():
            spin_once(executor, 0.25)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not cut the teardown
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None and hasattr(node, 'close'):
            node.close()
        executor.shutdown(timeout_sec=5.0)   # bounded: a callback stuck in a driver must not hang the exit
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def segment_node(args=None) -> int:
    """The ``evf_sam`` lifecycle segmentation node (``segment_node --ros-args ...``)."""
    from evf_sam_ros.ros.node import main
    return main(sys.argv if args is None else args)


def synthetic_camera(args=None) -> int:
    """The synthetic tabletop camera (generated scenes as image, depth and camera_info)."""
    from evf_sam_ros.ros.synthetic_camera import main
    rc = main(sys.argv if args is None else args)
    return 0 if rc is None else int(rc)
