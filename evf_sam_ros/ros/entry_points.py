"""Console entry points installed as ``lib/evf_sam_ros/<name>`` (see CMakeLists.txt)."""
from __future__ import annotations

import sys


def segment_node(args=None) -> int:
    """The ``evf_sam`` lifecycle segmentation node (``segment_node --ros-args ...``)."""
    from evf_sam_ros.ros.node import main
    return main(sys.argv if args is None else args)


def synthetic_camera(args=None) -> int:
    """The synthetic tabletop camera (written by the data engineer)."""
    from evf_sam_ros.ros.synthetic_camera import main
    rc = main(sys.argv if args is None else args)
    return 0 if rc is None else int(rc)
