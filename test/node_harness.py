"""In-process harness for the evf_sam node tests: the node (with an injected predictor) and a
tester node that publishes camera/prompt topics and records every output, both spun by one
MultiThreadedExecutor in a background thread. Waits poll conditions (never fixed long sleeps).
"""
import contextlib
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from evf_sam_ros.msg import SegmentationArray
from evf_sam_ros.ros.fake_predictor import FakePredictor
from evf_sam_ros.ros.image_codec import fill_image_msg
from evf_sam_ros.ros.node import SegmentNode

FX = FY = 500.0


def wait_for(pred, timeout=10.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def make_image(h, w, value=0, encoding='rgb8', stamp=(1, 0), frame_id='camera_optical'):
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    ch = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}.get(encoding, 3)
    arr = np.zeros((h, w, ch) if ch > 1 else (h, w), np.uint8)
    arr[...] = 60
    # the frame index, readable by the fake predictor at pixel (0, 0): R = low byte, G = high
    if ch > 1:
        arr[0, 0, 0], arr[0, 0, 1] = value & 0xFF, (value >> 8) & 0xFF
        if encoding in ('bgr8', 'bgra8'):
            arr[0, 0, 2], arr[0, 0, 1] = value & 0xFF, (value >> 8) & 0xFF
    fill_image_msg(msg, arr, encoding)
    return msg


def camera_info(h, w, fx=FX, fy=FY, frame_id='camera_optical'):
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.height, info.width = h, w
    info.k = [fx, 0.0, (w - 1) / 2.0, 0.0, fy, (h - 1) / 2.0, 0.0, 0.0, 1.0]
    return info


def depth_image(depth_m, encoding='32FC1', stamp=(1, 0), frame_id='camera_optical'):
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    if encoding == '16UC1':
        arr = np.nan_to_num(depth_m * 1000.0, nan=0.0).round().astype(np.uint16)
    else:
        arr = depth_m.astype(np.float32)
    msg.height, msg.width = arr.shape
    msg.encoding = encoding
    msg.is_bigendian = False
    msg.step = arr.strides[0]
    import array
    msg.data = array.array('B', arr.tobytes())
    return msg


class Harness:
    """``Harness(ctx, predictor=..., params={...})``; call ``close()`` (or use as a context)."""

    OUTPUTS = {'mask': Image, 'segmentations': SegmentationArray, 'centroid': PointStamped,
               'markers': MarkerArray}

    def __init__(self, context, predictor=None, params=None, factory=None, namespace='',
                 overlay=False, compressed=False, string_prompts=True):
        self.context = context
        self.predictor = predictor if predictor is not None else FakePredictor()
        self.factory_calls = 0

        def default_factory(path, device, dtype):
            self.factory_calls += 1
            return self.predictor

        # raw prompts by default: these tests drive the fake's special prompts ('absent ...', '' clears);
        # the spoken-command interpreter has its own node tests
        params = {'prompt_mode': 'raw', **(params or {})}
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        self.node = SegmentNode(context=context, namespace=namespace,
                                predictor_factory=factory or default_factory,
                                parameter_overrides=overrides)
        self.tester = rclpy.create_node('tester', context=context)
        self.lock = threading.Lock()
        self.received = {k: [] for k in list(self.OUTPUTS) + ['overlay', 'diagnostics']}
        self.recv_times = {k: [] for k in self.received}
        base = f'{namespace}/' if namespace else '/'
        for name, typ in self.OUTPUTS.items():
            self.tester.create_subscription(typ, base + name, self._cb(name), QoSProfile(depth=50))
        if overlay:
            self.tester.create_subscription(Image, base + 'overlay', self._cb('overlay'), 10)
        self.tester.create_subscription(DiagnosticArray, '/diagnostics', self._cb('diagnostics'), 10)
        itype, itopic = (CompressedImage, base + 'image/compressed') if compressed else \
            (Image, base + 'image')
        self.image_pub = self.tester.create_publisher(itype, itopic, qos_profile_sensor_data)
        self.depth_pub = self.tester.create_publisher(Image, base + 'depth', qos_profile_sensor_data)
        self.info_pub = self.tester.create_publisher(CameraInfo, base + 'camera_info',
                                                     qos_profile_sensor_data)
        # (a node configured for another transcript type owns that topic with its type)
        self.prompt_pub = self.tester.create_publisher(String, base + 'prompt', 10) if string_prompts else None
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException, ShutdownException

        from evf_sam_ros.ros.entry_points import spin_once   # the loop segment_node runs
        self.spin_error = None
        try:
            while self.context.ok() and not self._closing.is_set():
                spin_once(self.executor, 0.25)
        except (ShutdownException, ExternalShutdownException):
            pass
        except Exception as exc:  # noqa: BLE001 - context shut down; kept for tests that check it
            import traceback
            self.spin_error = ''.join(traceback.format_exception(exc))

    def _cb(self, name):
        def cb(msg):
            with self.lock:
                self.received[name].append(msg)
                self.recv_times[name].append(time.monotonic())
        return cb

    def count(self, name):
        with self.lock:
            return len(self.received[name])

    def last(self, name):
        with self.lock:
            return self.received[name][-1] if self.received[name] else None

    def clear(self):
        with self.lock:
            for v in self.received.values():
                v.clear()
            for v in self.recv_times.values():
                v.clear()

    def wait_connected(self, timeout=10.0):
        """Until the node's subscriptions see our publishers (when it is configured)."""
        return wait_for(lambda: self.image_pub.get_subscription_count() > 0 and
                        (self.prompt_pub is None or self.prompt_pub.get_subscription_count() > 0), timeout)

    def prompt(self, text):
        self.prompt_pub.publish(String(data=text))

    def wait_prompts(self, n, timeout=5.0):
        return wait_for(lambda: len(self.node.scheduler.prompts) == n, timeout)

    def set_prompt(self, text, n):
        """Publish a raw prompt command and wait until exactly its ``n`` prompts are active (not merely
        ``n`` prompts: the previous set may have as many)."""
        expected = [p.strip() for p in text.split(';') if p.strip()]
        assert len(expected) == n
        self.prompt(text)
        assert wait_for(lambda: self.node.scheduler.prompts == expected, 5.0), \
            f'prompt {text!r} not applied: {self.node.scheduler.prompts}'

    def publish_frames(self, h, w, n, first_stamp, period=0.02):
        """Publish ``n`` h x w frames with stamps first_stamp, first_stamp+1, ... s."""
        for i in range(n):
            self.image_pub.publish(make_image(h, w, stamp=(first_stamp + i, 0)))
            time.sleep(period)

    @contextlib.contextmanager
    def streaming(self, h, w, first_stamp=1, rate_hz=30.0):
        """Publish h x w frames at ``rate_hz`` (stamps first_stamp+1, +2, ... s) while the block runs."""
        stop = threading.Event()

        def camera():
            i = 0
            while not stop.is_set():
                i += 1
                self.image_pub.publish(make_image(h, w, stamp=(first_stamp + i, 0)))
                time.sleep(1 / rate_hz)
        thread = threading.Thread(target=camera, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def call(self, client, request, timeout=10.0):
        assert client.wait_for_service(timeout_sec=timeout)
        fut = client.call_async(request)
        assert wait_for(fut.done, timeout), 'service call timed out'
        return fut.result()

    def close(self):
        self.node.close()
        self._closing.set()   # the spin loop leaves within one 0.25 s wait
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        self.tester.destroy_node()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
