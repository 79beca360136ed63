#!/usr/bin/env python3
"""Delivery of camera frames across processes: a publisher process sends WxH bgr8 images at R Hz
(best effort, depth 1: sensor_data QoS, as camera drivers do), a subscriber process with the
node's image QoS counts what arrives. Run with the default transports and with the documented
set-up (config/fastdds_large_images.xml in BOTH processes); prints received/expected.

    python bench/bench_delivery.py                          # 1280x720 @ 30 Hz, 8 s each
    python bench/bench_delivery.py --size 1920x1080 --duration 5
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'


def _publish(w, h, rate, duration):
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('bench_camera')
    pub = node.create_publisher(Image, '/camera/camera/color/image_raw', qos_profile_sensor_data)
    msg = Image(height=h, width=w, encoding='bgr8', step=w * 3)
    msg.data = np.random.default_rng(0).integers(0, 255, h * w * 3, dtype=np.uint8).tobytes()
    while pub.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < duration:
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        sent += 1
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    print(f'SENT {sent}', flush=True)
    time.sleep(1.0)
    rclpy.shutdown()


def _subscribe(duration):
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('bench_segment_input')
    got = []
    node.create_subscription(Image, '/camera/camera/color/image_raw',
                             lambda m: got.append(time.monotonic()), qos_profile_sensor_data)
    end = time.monotonic() + duration + 15
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(f'RECEIVED {len(got)}', flush=True)
    rclpy.shutdown()


def _run(args, profile):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(args.domain_id), PYTHONUNBUFFERED='1')
    env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    if profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    me = [sys.executable, __file__]
    sub = subprocess.Popen(me + ['--role', 'sub', '--duration', str(args.duration)], env=env,
                           stdout=subprocess.PIPE, text=True)
    pub = subprocess.run(me + ['--role', 'pub', '--size', args.size, '--rate', str(args.rate),
                               '--duration', str(args.duration)], env=env, capture_output=True,
                         text=True, timeout=args.duration + 60)
    sent = int(pub.stdout.split('SENT')[1])
    out, _ = sub.communicate(timeout=args.duration + 60)
    received = int(out.split('RECEIVED')[1])
    return sent, received


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--role', choices=['pub', 'sub', 'bench'], default='bench')
    p.add_argument('--size', default='1280x720')
    p.add_argument('--rate', type=float, default=30.0)
    p.add_argument('--duration', type=float, default=8.0)
    p.add_argument('--domain-id', type=int, default=187)
    args = p.parse_args(argv)
    if args.role == 'pub':
        w, h = map(int, args.size.split('x'))
        return _publish(w, h, args.rate, args.duration)
    if args.role == 'sub':
        return _subscribe(args.duration)
    print(f'| set-up ({args.size} bgr8 @ {args.rate:g} Hz, best effort, 2 processes) '
          '| sent | received | received/expected | received rate [Hz] |')
    print('|---|---|---|---|---|')
    for name, profile in (('default transports', None),
                          ('fastdds_large_images.xml in both processes', PROFILE)):
        sent, received = _run(args, profile)
        print(f'| {name} | {sent} | {received} | {100.0 * received / max(sent, 1):.0f} % '
              f'| {received / args.duration:.1f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
