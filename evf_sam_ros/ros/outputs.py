"""The node's output topics: created at configure, published by the worker, destroyed at cleanup.

All names are relative (``<namespace>/mask``, ...). Everything of one frame is stamped with the
input image's header.
"""
from __future__ import annotations

import time

import numpy as np

from geometry_msgs.msg import PointStamped
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from evf_sam_ros.msg import PromptCommand, SegmentationArray
from evf_sam_ros.pipeline import overlay_bgr
from evf_sam_ros.ros import messages as M
from evf_sam_ros.ros.image_codec import fill_image_msg

__all__ = ['Outputs']

RELIABLE = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


class Outputs:
    def __init__(self, node) -> None:
        pub = node.create_lifecycle_publisher
        self._node = node
        self.mask = pub(Image, 'mask', RELIABLE)
        self.segmentations = pub(SegmentationArray, 'segmentations', RELIABLE)
        self.centroid = pub(PointStamped, 'centroid', RELIABLE)
        self.overlay = pub(Image, 'overlay', QoSProfile(depth=1))
        self.markers = pub(MarkerArray, 'markers', RELIABLE)
        self.command = pub(PromptCommand, 'command', LATCHED)
        self._all = [self.mask, self.segmentations, self.centroid, self.overlay, self.markers, self.command]
        self.detections = self.label_info = None
        try:   # a declared dependency (rosdep installs it); without it the node still segments
            from vision_msgs.msg import Detection2DArray, LabelInfo
        except ImportError:
            node.log.warn('vision_msgs is not installed: ~/detections and ~/label_info are not published '
                          '(install ros-$ROS_DISTRO-vision-msgs, or run rosdep install for this package)',
                          'vision_msgs', 0.0)
        else:
            self.detections = pub(Detection2DArray, 'detections', RELIABLE)
            self.label_info = pub(LabelInfo, 'label_info', LATCHED)
            self._all += [self.detections, self.label_info]
        self._markers_shown = False
        self._last_overlay = 0.0

    def destroy(self) -> None:
        for p in self._all:
            self._node.destroy_lifecycle_publisher(p)
        self._all = []

    def frame(self, header, rgb, result, command, p: dict) -> None:
        """Publish one frame's result (``p``: the node's parameter values)."""
        targets = result.targets
        if p['publish_mask']:
            self.mask.publish(M.label_mask_msg(header, result.label_map()))
        self.segmentations.publish(M.segmentation_array_msg(header, targets, command))
        if self.detections is not None:
            self.detections.publish(M.detections_msg(header, targets))
        located = [t for t in targets if t.detected and t.has_position]
        if p['publish_centroid'] and located:
            self.centroid.publish(M.centroid_msg(header, located[0]))
        if p['publish_markers']:
            if located:
                self.markers.publish(M.markers_msg(header, located, float(p['marker_lifetime'])))
                self._markers_shown = True
            elif self._markers_shown:
                self.clear_markers(header)
        if p['publish_overlay'] and self.overlay.get_subscription_count() > 0:
            now = time.monotonic()
            if now - self._last_overlay >= 1.0 / p['overlay_max_rate_hz']:
                self._last_overlay = now
                self.overlay.publish(fill_image_msg(Image(header=header), overlay_bgr(rgb, targets),
                                                    'bgr8'))

    def clear_markers(self, header=None) -> None:
        self.markers.publish(M.clear_markers_msg(header))
        self._markers_shown = False

    def cleared(self, command: PromptCommand, shape) -> None:
        """A clear command's answer: an empty result (no target, no detection), an empty label mask of
        the last frame's size (so the last one shown is not the old target's), markers removed."""
        header = command.header
        self.segmentations.publish(SegmentationArray(header=header, command=command))
        if self.detections is not None:
            self.detections.publish(M.detections_msg(header, []))
        if shape is not None:
            self.mask.publish(M.label_mask_msg(header, np.zeros(shape, np.uint8)))
        self.clear_markers(header)

    def prompt_set(self, command: PromptCommand, threshold: float) -> None:
        """The command as understood, and the label map's meaning (both latched)."""
        self.command.publish(command)
        if self.label_info is not None:
            self.label_info.publish(M.label_info_msg(command.header, list(command.targets), threshold))
