"""Pipeline results -> ROS messages (and CameraInfo -> intrinsics). No state, no node."""
from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import Image, RegionOfInterest
from visualization_msgs.msg import Marker, MarkerArray

from evf_sam_ros.geometry import Intrinsics
from evf_sam_ros.msg import PromptCommand, Segmentation, SegmentationArray
from evf_sam_ros.ros.image_codec import fill_image_msg
from evf_sam_ros.visualization import label_color

__all__ = ['centroid_msg', 'clear_markers_msg', 'detections_msg', 'intrinsics_from_camera_info',
           'label_info_msg', 'label_mask_msg', 'markers_msg', 'segmentation_array_msg']


def intrinsics_from_camera_info(msg) -> Intrinsics:
    """``sensor_msgs/CameraInfo`` -> Intrinsics; raises GeometryError for an unusable K."""
    return Intrinsics.from_k(msg.k, msg.width, msg.height)


def _segmentation(t) -> Segmentation:
    s = Segmentation()
    s.prompt = t.prompt
    s.label = min(int(t.label), 255)
    s.detected = bool(t.detected)
    s.reason = t.reason
    s.score = float(t.score) if math.isfinite(t.score) else 0.0
    s.has_object_score = t.object_score is not None
    s.object_score = float(t.object_score) if t.object_score is not None else 0.0
    if t.detected:
        x, y, w, h = t.bbox
        s.bbox = RegionOfInterest(x_offset=int(x), y_offset=int(y), width=int(w), height=int(h))
        s.centroid = Point(x=float(t.centroid[0]), y=float(t.centroid[1]), z=0.0)
        s.area = int(t.area)
        s.position_reason = t.position_reason
        if t.has_position:
            c = t.centroid3d
            s.has_position = True
            s.position = Point(x=c.position[0], y=c.position[1], z=c.position[2])
            s.position_covariance = [float(v) for v in np.asarray(c.covariance).ravel()]
            s.depth_valid_ratio = float(c.valid_ratio)
    return s


def segmentation_array_msg(header, targets, command: PromptCommand | None = None) -> SegmentationArray:
    arr = SegmentationArray(header=header, segmentations=[_segmentation(t) for t in targets])
    if command is not None:
        arr.command = command
    return arr


def label_mask_msg(header, label_map: np.ndarray) -> Image:
    return fill_image_msg(Image(header=header), label_map, 'mono8')


def centroid_msg(header, target) -> PointStamped:
    x, y, z = target.centroid3d.position
    return PointStamped(header=header, point=Point(x=x, y=y, z=z))


def markers_msg(header, located, lifetime_s: float) -> MarkerArray:
    """DELETEALL, then a sphere and a caption per target with a 3D position."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    for t in located:
        x, y, z = t.centroid3d.position
        r, g, b = (c / 255.0 for c in label_color(t.label))
        sphere = Marker(header=header, ns='evf_sam/centroid', id=int(t.label), type=Marker.SPHERE,
                        action=Marker.ADD)
        sphere.pose.position = Point(x=x, y=y, z=z)
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.05
        sphere.color.r, sphere.color.g, sphere.color.b, sphere.color.a = r, g, b, 0.9
        text = Marker(header=header, ns='evf_sam/label', id=int(t.label),
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = Point(x=x, y=y - 0.08, z=z)  # optical frame: -y is up
        text.pose.orientation.w = 1.0
        text.scale.z = 0.05
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = f'{t.prompt} ({t.score:.2f})'
        for m in (sphere, text):
            m.lifetime.sec = int(lifetime_s)
            m.lifetime.nanosec = int((lifetime_s - int(lifetime_s)) * 1e9)
        markers += [sphere, text]
    return MarkerArray(markers=markers)


def clear_markers_msg(header=None) -> MarkerArray:
    m = Marker(action=Marker.DELETEALL)
    if header is not None:
        m.header = header
    return MarkerArray(markers=[m])


def detections_msg(header, targets):
    """``vision_msgs/Detection2DArray``: one detection per detected target (bbox, score, the prompt
    as class id, the label as id; the 3D centre and its position
    covariance in the pose when known; orientation is not estimated: identity, zero covariance)."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    out = Detection2DArray(header=header)
    for t in targets:
        if not t.detected:
            continue
        x, y, w, h = t.bbox
        d = Detection2D(header=header, id=str(t.label))
        d.bbox.center.position.x = x + w / 2.0
        d.bbox.center.position.y = y + h / 2.0
        d.bbox.size_x, d.bbox.size_y = float(w), float(h)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = t.prompt
        hyp.hypothesis.score = float(t.score) if math.isfinite(t.score) else 0.0
        if t.has_position:
            px, py, pz = t.centroid3d.position
            hyp.pose.pose.position = Point(x=px, y=py, z=pz)
            hyp.pose.pose.orientation.w = 1.0
            cov = np.zeros((6, 6))
            cov[:3, :3] = np.asarray(t.centroid3d.covariance)
            hyp.pose.covariance = [float(v) for v in cov.ravel()]
        d.results = [hyp]
        out.detections.append(d)
    return out


def label_info_msg(header, prompts, threshold: float):
    """``vision_msgs/LabelInfo``: label value k -> k-th prompt (0 = background)."""
    from vision_msgs.msg import LabelInfo, VisionClass

    info = LabelInfo(header=header, threshold=float(threshold))
    info.class_map = [VisionClass(class_id=0, class_name='background')] + [
        VisionClass(class_id=k, class_name=p) for k, p in enumerate(prompts, start=1)]
    return info
