"""Soak benchmark: the node with the embedded model, fed 1280x720 colour + depth at 30 Hz from a
camera in ANOTHER process (default DDS settings), with prompts that change every few seconds, for
N minutes. Prints per window: node RSS, latency (image stamp -> result received) p50/p95/max,
output rate, frames received/dropped by the node, errors; at the end the RSS slope.

    python bench/soak_node.py --minutes 20 [--width 1280 --height 720 --rate 30 --window 60]

Goal: RSS slope within noise, latency flat, zero errors. (A script, not a test: it takes minutes.)
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

PROMPTS = ['the red cube', 'the blue ball; the green cylinder', 'the big yellow block', '',
           'the leftmost object', 'the small purple ring; the orange pyramid; the white cube']


def _rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def camera(width: int, height: int, rate: float) -> None:
    """Publish one synthetic scene again and again with fresh stamps (image, depth, camera_info)."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from evf_sam_ros.ros.synthetic_camera import scene_messages
    from evf_sam_ros.synthetic.scene import SceneConfig, generate_scene

    rclpy.init()
    node = rclpy.create_node('soak_camera')
    pubs = [node.create_publisher(t, n, qos_profile_sensor_data)
            for t, n in ((Image, 'image'), (Image, 'depth'), (CameraInfo, 'camera_info'))]
    scene = generate_scene(3, SceneConfig(width=width, height=height))
    msgs = scene_messages(scene, node.get_clock().now().to_msg(), 'camera_optical')
    period, t_next = 1.0 / rate, time.monotonic()
    try:
        while rclpy.ok():
            stamp = node.get_clock().now().to_msg()
            for pub, m in zip(pubs, msgs):
                m.header.stamp = stamp
                pub.publish(m)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
    except KeyboardInterrupt:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--minutes', type=float, default=20.0)
    ap.add_argument('--width', type=int, default=1280)
    ap.add_argument('--height', type=int, default=720)
    ap.add_argument('--rate', type=float, default=30.0)
    ap.add_argument('--window', type=float, default=60.0, help='report window [s]')
    ap.add_argument('--prompt-period', type=float, default=5.0)
    ap.add_argument('--camera', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.camera:
        camera(args.width, args.height, args.rate)
        return 0

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from std_msgs.msg import String

    from evf_sam_ros.msg import SegmentationArray
    from evf_sam_ros.ros.process import NodeProcess

    domain = 100 + os.getpid() % 100
    exe = [sys.executable, '-X', 'faulthandler', '-m', 'evf_sam_ros.ros.node', '--ros-args', '-p', 'device:=cpu',
           '-p', 'score_threshold:=0.3']
    node_proc = NodeProcess(exe, domain, '/tmp/soak_node.log')
    cam_proc = NodeProcess([sys.executable, __file__, '--camera', '--width', str(args.width), '--height',
                            str(args.height), '--rate', str(args.rate)], domain, '/tmp/soak_camera.log')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node('soak_observer', context=context)
    lock = threading.Lock()
    lat, diag, odd = [], {}, []

    def on_seg(msg):
        now = node.get_clock().now().nanoseconds
        st = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        with lock:
            lat.append((now - st) / 1e6)
            if (now - st) / 1e9 > 60.0:
                odd.append(f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} frame {msg.header.frame_id!r} '
                           f'{len(msg.segmentations)} targets, command {msg.command.raw!r}')

    def on_diag(msg):
        for s in msg.status:
            if 'evf_sam' in s.name:
                with lock:
                    diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(SegmentationArray, 'segmentations', on_seg, QoSProfile(depth=100))
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    prompt = node.create_publisher(String, 'prompt', 10)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    t0 = time.monotonic()
    while 'active:' not in node_proc.output() and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    print(f'node ready after {time.monotonic() - t0:.1f} s; soak {args.minutes} min at {args.width}x'
          f'{args.height} {args.rate} Hz', flush=True)
    print(f"{'t_min':>6} {'rss_mb':>7} {'out_hz':>6} {'lat_p50':>8} {'lat_p95':>8} {'lat_max':>8} "
          f"{'recv':>6} {'dropped':>7} {'errors':>6} {'loss':>5}", flush=True)
    start, rss_t, rss_v, k = time.monotonic(), [], [], 0
    end = start + 60.0 * args.minutes
    next_prompt, next_report = start, start + args.window
    while time.monotonic() < end and node_proc.alive():
        now = time.monotonic()
        if now >= next_prompt:
            prompt.publish(String(data=PROMPTS[k % len(PROMPTS)] or 'the red cube'))
            k += 1
            next_prompt += args.prompt_period
        if now >= next_report:
            with lock:
                window, lat[:] = list(lat), []
                d = dict(diag)
            rss = _rss_mb(node_proc.proc.pid)
            rss_t.append((now - start) / 60.0)
            rss_v.append(rss)
            w = np.array(window) if window else np.array([np.nan])
            errors = int(d.get('inference_errors', 0)) + int(d.get('bad_frames', 0))
            print(f'{(now - start) / 60:6.1f} {rss:7.0f} {len(window) / args.window:6.2f} '
                  f'{np.nanpercentile(w, 50):8.0f} {np.nanpercentile(w, 95):8.0f} {np.nanmax(w):8.0f} '
                  f"{d.get('received', '?'):>6} {d.get('dropped', '?'):>7} {errors:>6} "
                  f"{float(d.get('image_loss', 'nan')):5.2f}", flush=True)
            next_report += args.window
        time.sleep(0.05)
    alive = node_proc.alive()
    if not alive:
        print(f'node exited with code {node_proc.proc.returncode} after {(time.monotonic() - start) / 60:.1f} min',
              flush=True)
    cam_proc.stop()
    node_proc.stop()
    ex.shutdown()
    spinner.join(timeout=5.0)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    if len(rss_t) >= 3:
        half = len(rss_t) // 2   # slope over the second half (after warm-up and allocator growth)
        slope = np.polyfit(rss_t[half:], rss_v[half:], 1)[0] if len(rss_t) - half >= 2 else float('nan')
        print(f'RSS slope (second half): {slope:+.2f} MB/min; first {rss_v[0]:.0f} MB, last {rss_v[-1]:.0f} MB')
    for line in odd[:10]:
        print(f'result stamped more than 60 s ago: {line}')
    print('node alive at the end' if alive else 'NODE DIED: see /tmp/soak_node.log')
    print(f'node log: /tmp/soak_node.log ({node_proc.output().count("[ERROR]")} ERROR lines)')
    return 0 if alive else 1


if __name__ == '__main__':
    sys.exit(main())
