"""Training, fine-tuning and evaluation of EVF-SAM models (any size), ROS-free.

* ``python -m evf_sam_ros.training.train``    train / fine-tune (synthetic, user folder, RefCOCO data)
* ``python -m evf_sam_ros.training.evaluate`` cIoU / gIoU as the EVF-SAM paper defines them
* ``python -m evf_sam_ros.training.ship``     install a run as the embedded default model (+ model card)
"""
