"""ROS 2 layer of evf_sam_ros: the ``evf_sam`` lifecycle node and its helpers.

Only ``node.py``/``entry_points.py`` need rclpy; ``image_codec.py`` works on any object with the
``sensor_msgs/Image`` fields and is testable without ROS.
"""
