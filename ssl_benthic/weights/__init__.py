"""Backbone weights into and out of the export format: timm backbones, strict loading, foreign
checkpoints (solo-learn, DINO, MoCo, timm, torchvision), architecture detection, presets, export and import.
"""
