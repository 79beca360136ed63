"""evf_sam_ros: text-prompted segmentation (EVF-SAM) for ROS 2.

The ``evf_sam_ros.model`` subpackage is ROS-free; ``evf_sam_ros.msg``/``srv`` are generated
by the colcon build and merged into this package (hence ``extend_path``).
"""
__path__ = __import__('pkgutil').extend_path(__path__, __name__)
__version__ = '0.1.0'
