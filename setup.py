# pip install of the ROS-free part (model, CLI, training tools): `pip install .`
# colcon builds this repository as an ament_cmake package (package.xml) and ignores this file.
# Exact, tested versions are pinned in requirements/core.txt; the ranges here only keep pip
# from picking versions known not to work.
from setuptools import find_packages, setup

setup(
    name='evf_sam_ros',
    version='0.1.0',
    description='EVF-SAM / EVF-SAM2 text-prompted segmentation (ROS-free core of evf_sam_ros)',
    license='Apache-2.0',
    python_requires='>=3.10,<3.13',
    packages=find_packages(include=['evf_sam_ros', 'evf_sam_ros.*']),
    package_data={'evf_sam_ros.model': ['default_model/*'], 'evf_sam_ros.training': ['configs/*.json']},
    install_requires=[
        'torch>=2.4',
        'transformers>=5.0,<6',
        'safetensors>=0.4',
        'sentencepiece>=0.2',
        'protobuf>=4',
        'huggingface-hub>=1.0',
        'numpy>=1.26',
        'pillow>=10',
        'opencv-python-headless>=4.8',
    ],
    extras_require={'test': ['pytest>=8', 'pytest-timeout>=2']},
    entry_points={'console_scripts': [
        'evf-sam = evf_sam_ros.cli:main',
    ]},
)
