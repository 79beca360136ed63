"""Synthetic tabletop scenes (RGB, metric depth, intrinsics, masks, 3D centres) and referring expressions.

    from evf_sam_ros.synthetic import generate_scene, generate_expressions
    scene = generate_scene(42)
    for e in generate_expressions(scene):
        e.text, e.kind, scene.mask(e.target)
"""
from .grammar import KINDS, Expression, generate_expressions, sample_expression
from .scene import COLOURS, SHAPES, Scene, SceneConfig, SceneObject, generate_scene

__all__ = ['KINDS', 'Expression', 'generate_expressions', 'sample_expression', 'COLOURS', 'SHAPES',
           'Scene', 'SceneConfig', 'SceneObject', 'generate_scene']
